package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// twoTenants returns a recorder on the application-role pool and two fresh tenant ids. The
// audit log has no foreign key to tenants, so ids are all a chain needs.
func twoTenants(t testing.TB) (*Recorder, string, string) {
	t.Helper()
	return NewRecorder(dbtest.Pool(t), &Config{BatchSize: 7}), uuid.NewString(), uuid.NewString()
}

func record(t testing.TB, r *Recorder, tenantID string, n int, action string) []*Event {
	t.Helper()
	ctx := WithRequestMeta(WithActor(context.Background(), Actor{Kind: "api_key", ID: "key:k1", Name: "ci"}),
		RequestMeta{ClientIP: "192.0.2.7", UserAgent: "curl/8", RequestID: "req-1"})
	out := make([]*Event, n)
	for i := range n {
		ev, err := r.Record(ctx, nil, Entry{
			TenantID: tenantID, Action: action, Target: Target{Type: "thing", ID: fmt.Sprint(i)},
			Details: map[string]any{"i": i, "note": "ünïcode ✓", "f": 1.5},
		})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ev
	}
	return out
}

func TestRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("ChainsPerTenant", func(t *testing.T) {
		t.Parallel()
		r, a, b := twoTenants(t)
		evA := record(t, r, a, 5, ActionMemberAdd)
		evB := record(t, r, b, 3, ActionMemberAdd)
		for i, ev := range evA {
			if ev.Seq != int64(i+1) {
				t.Fatalf("seq %d at position %d", ev.Seq, i)
			}
			if i > 0 && !bytes.Equal(ev.PrevHash, evA[i-1].RowHash) {
				t.Fatalf("event %d does not chain to its predecessor", ev.Seq)
			}
			if ev.Actor.ID != "key:k1" || ev.ClientIP != "192.0.2.7" || ev.UserAgent != "curl/8" || ev.RequestID != "req-1" {
				t.Fatalf("event lacks context metadata: %+v", ev)
			}
		}
		if !bytes.Equal(evA[0].PrevHash, make([]byte, 32)) || evB[0].Seq != 1 {
			t.Fatal("chains do not start at seq 1 with a zero prev_hash")
		}
		for _, tenant := range []string{a, b} {
			res, err := r.Verify(ctx, tenant, nil, nil)
			if err != nil || !res.OK {
				t.Fatalf("verify %s = %+v, %v", tenant, res, err)
			}
		}
		page, err := r.List(ctx, a, Filter{}, PageParams{})
		if err != nil || len(page.Items) != 5 || page.Items[4].ID != evA[4].ID || !bytes.Equal(page.Items[4].RowHash, evA[4].RowHash) {
			t.Fatalf("list a = %+v, %v", page, err)
		}
	})
	t.Run("InCallerTransactionCommitsOrRollsBackWithIt", func(t *testing.T) {
		t.Parallel()
		r, a, b := twoTenants(t)
		boom := errors.New("boom")
		err := db.WithTenantTx(ctx, dbtest.Pool(t), a, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := r.Record(ctx, tx, Entry{TenantID: a, Action: "x.rolled_back"}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		err = db.WithTenantTx(ctx, dbtest.Pool(t), a, func(ctx context.Context, tx pgx.Tx) error {
			_, err := r.Record(ctx, tx, Entry{TenantID: a, Action: "x.kept"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		page, _ := r.List(ctx, a, Filter{}, PageParams{})
		if len(page.Items) != 1 || page.Items[0].Action != "x.kept" || page.Items[0].Seq != 1 {
			t.Fatalf("events = %+v", page.Items)
		}
		// A tenant transaction cannot record for another tenant: RLS refuses the row.
		err = db.WithTenantTx(ctx, dbtest.Pool(t), a, func(ctx context.Context, tx pgx.Tx) error {
			_, err := r.Record(ctx, tx, Entry{TenantID: b, Action: "x.smuggled"})
			return err
		})
		if err == nil {
			t.Fatal("recorded into tenant b from tenant a's transaction")
		}
		if page, _ := r.List(ctx, b, Filter{}, PageParams{}); len(page.Items) != 0 {
			t.Fatalf("tenant b has %d events", len(page.Items))
		}
	})
	t.Run("ConcurrentAppendsKeepOneChain", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { record(t, r, a, 25, "x.concurrent") })
		}
		wg.Wait()
		res, err := r.Verify(ctx, a, nil, nil)
		if err != nil || !res.OK || res.Checked != 100 || res.LastSeq != 100 {
			t.Fatalf("verify = %+v, %v", res, err)
		}
	})
	t.Run("InvalidEntriesAreRefused", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		for name, e := range map[string]Entry{
			"NoTenant":  {Action: "x"},
			"NoAction":  {TenantID: a},
			"BadDetail": {TenantID: a, Action: "x", Details: []string{"not an object"}},
		} {
			if _, err := r.Record(ctx, nil, e); !errors.Is(err, ErrInvalidEntry) {
				t.Errorf("%s: err = %v, want ErrInvalidEntry", name, err)
			}
		}
	})
	t.Run("DefaultsToSystemActor", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		ev, err := r.Record(ctx, nil, Entry{TenantID: a, Action: "x"})
		if err != nil || ev.Actor.Kind != "system" {
			t.Fatalf("event = %+v, %v", ev, err)
		}
	})
}

func TestAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, a, _ := twoTenants(t)
	record(t, r, a, 2, "x.y")
	// The application role has no UPDATE or DELETE grant at all.
	err := db.WithTenantTx(ctx, dbtest.Pool(t), a, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "update audit_events set action = 'z' where tenant_id = $1", a)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("app update = %v, want permission denied", err)
	}
	if _, err := dbtest.Pool(t).Exec(ctx, "delete from audit_events"); err == nil {
		t.Fatal("app delete succeeded")
	}
	// The owner is stopped by the trigger.
	owner := dbtest.OwnerPool(t)
	for _, sql := range []string{
		"update audit_events set action = 'z' where tenant_id = '" + a + "'",
		"delete from audit_events where tenant_id = '" + a + "'",
		"truncate audit_events",
	} {
		if _, err := owner.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("owner %q = %v, want append-only refusal", sql, err)
		}
	}
	if res, err := r.Verify(ctx, a, nil, nil); err != nil || !res.OK || res.Checked != 2 {
		t.Fatalf("verify after refused tampering = %+v, %v", res, err)
	}
}

// tamper runs sql as a superuser with triggers off, the way an attacker with database access
// would edit the log.
func tamper(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	err := db.WithTx(ctx, dbtest.OwnerPool(t), func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "set local session_replication_role = replica"); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err == nil && tag.RowsAffected() != 1 {
			return fmt.Errorf("tampering touched %d rows", tag.RowsAffected())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyNamesTamperedEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("EditedContent", func(t *testing.T) {
		t.Parallel()
		r, a, b := twoTenants(t)
		evs := record(t, r, a, 20, "x.y")
		record(t, r, b, 3, "x.y")
		tamper(t, `update audit_events set details = '{"i": 999}' where tenant_id = $1 and seq = 12`, a)
		res, err := r.Verify(ctx, a, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK || res.FirstBadID != evs[11].ID || res.FirstBadSeq != 12 || res.Checked != 12 || !strings.Contains(res.Reason, "row_hash") {
			t.Fatalf("verify = %+v, want event 12 (%s) named", res, evs[11].ID)
		}
		if other, err := r.Verify(ctx, b, nil, nil); err != nil || !other.OK {
			t.Fatalf("tenant b's chain = %+v, %v", other, err)
		}
	})
	t.Run("EditedAndRehashed", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		evs := record(t, r, a, 10, "x.y")
		forged := *evs[4]
		forged.Action = "x.innocent"
		sum, err := forged.computeHash()
		if err != nil {
			t.Fatal(err)
		}
		tamper(t, `update audit_events set action = $3, row_hash = $4 where tenant_id = $1 and seq = $2`, a, forged.Seq, forged.Action, sum)
		res, _ := r.Verify(ctx, a, nil, nil)
		if res.OK || res.FirstBadID != evs[5].ID || !strings.Contains(res.Reason, "prev_hash") {
			t.Fatalf("verify = %+v, want event 6 named (its prev_hash no longer matches)", res)
		}
	})
	t.Run("Deleted", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		evs := record(t, r, a, 10, "x.y")
		tamper(t, `delete from audit_events where tenant_id = $1 and seq = 4`, a)
		res, _ := r.Verify(ctx, a, nil, nil)
		if res.OK || res.FirstBadID != evs[4].ID || res.FirstBadSeq != 5 || !strings.Contains(res.Reason, "missing") {
			t.Fatalf("verify = %+v, want event 5 named after the deleted 4", res)
		}
		// A range that starts right after the hole still notices it.
		from := evs[4].At
		if res, _ := r.Verify(ctx, a, &from, nil); res.OK {
			t.Fatalf("range verify after the hole = %+v", res)
		}
		// A range before it is intact.
		to := evs[3].At
		if res, _ := r.Verify(ctx, a, nil, &to); !res.OK || res.Checked == 0 {
			t.Fatalf("range verify before the hole = %+v", res)
		}
	})
}

func TestListFiltersAndPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, a, b := twoTenants(t)
	record(t, r, a, 3, "member.add")
	record(t, r, a, 2, "api_key.create")
	mid := time.Now()
	record(t, r, a, 4, "member.remove")
	record(t, r, b, 2, "member.add")
	count := func(f Filter) int {
		t.Helper()
		n := 0
		if err := r.Each(ctx, a, f, func(*Event) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for name, tc := range map[string]struct {
		f    Filter
		want int
	}{
		"All":        {Filter{}, 9},
		"Action":     {Filter{Action: "member.add"}, 3},
		"Prefix":     {Filter{Action: "member.*"}, 7},
		"Actor":      {Filter{Actor: "key:k1"}, 9},
		"OtherActor": {Filter{Actor: "key:nope"}, 0},
		"From":       {Filter{From: &mid}, 4},
		"To":         {Filter{To: &mid}, 5},
	} {
		if got := count(tc.f); got != tc.want {
			t.Errorf("%s: %d events, want %d", name, got, tc.want)
		}
	}
	var seqs []int64
	cur := ""
	for {
		page, err := r.List(ctx, a, Filter{Action: "member.*"}, PageParams{Limit: 3, Cursor: cur, Descending: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Items {
			seqs = append(seqs, ev.Seq)
		}
		if cur = page.NextCursor; cur == "" {
			break
		}
	}
	if fmt.Sprint(seqs) != "[9 8 7 6 3 2 1]" {
		t.Fatalf("descending member.* pages = %v", seqs)
	}
	var ve *ValidationError
	if _, err := r.List(ctx, a, Filter{}, PageParams{Cursor: "garbage"}); !errors.As(err, &ve) || ve.Field != "cursor" {
		t.Fatalf("bad cursor = %v", err)
	}
	if _, err := r.List(ctx, a, Filter{From: &mid, To: &mid}, PageParams{}); !errors.As(err, &ve) || ve.Field != "to" {
		t.Fatalf("empty range = %v", err)
	}
	// PostgreSQL would refuse these as text; the filter is refused first, naming the field.
	for _, tc := range []struct {
		f     Filter
		field string
	}{
		{Filter{Action: "member\x00"}, "action"},
		{Filter{Actor: "key:\xff"}, "actor"},
	} {
		if err := tc.f.Validate(); !errors.As(err, &ve) || ve.Field != tc.field {
			t.Fatalf("Validate(%+v) = %v, want a %s error", tc.f, err, tc.field)
		}
		if _, err := r.List(ctx, a, tc.f, PageParams{}); !errors.As(err, &ve) || ve.Field != tc.field {
			t.Fatalf("List(%+v) = %v, want a %s error", tc.f, err, tc.field)
		}
		if err := r.Each(ctx, a, tc.f, func(*Event) error { return nil }); !errors.As(err, &ve) || ve.Field != tc.field {
			t.Fatalf("Each(%+v) = %v, want a %s error", tc.f, err, tc.field)
		}
	}
}

func TestExport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("JSONLinesVerifyOffline", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		record(t, r, a, 15, "x.y")
		var out bytes.Buffer
		flushes := 0
		n, err := r.Export(ctx, &out, a, Filter{}, ExportOptions{Format: FormatJSONL, Flush: func() { flushes++ }})
		if err != nil || n != 15 || flushes < 2 {
			t.Fatalf("export = %d rows, %d flushes, %v", n, flushes, err)
		}
		// Re-check the chain from the export alone, as a customer would.
		prev := make([]byte, 32)
		sc := bufio.NewScanner(&out)
		lines := 0
		for sc.Scan() {
			var doc map[string]any
			if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			rowHash, _ := hex.DecodeString(doc["row_hash"].(string))
			prevHash, _ := hex.DecodeString(doc["prev_hash"].(string))
			if !bytes.Equal(prevHash, prev) {
				t.Fatalf("line %d does not chain", lines)
			}
			delete(doc, "row_hash")
			delete(doc, "prev_hash")
			doc["v"] = 1
			canon, err := canonicalJSON(doc)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(append(append([]byte{}, prevHash...), canon...))
			if !bytes.Equal(sum[:], rowHash) {
				t.Fatalf("line %d: offline hash differs", lines)
			}
			prev = rowHash
			lines++
		}
		if lines != 15 {
			t.Fatalf("%d lines", lines)
		}
	})
	t.Run("CSVDefusesFormulas", func(t *testing.T) {
		t.Parallel()
		r, a, _ := twoTenants(t)
		ctx := WithActor(ctx, Actor{Kind: "user", ID: "user:1", Name: "=HYPERLINK(\"http://evil\")"})
		if _, err := r.Record(ctx, nil, Entry{TenantID: a, Action: "x.y"}); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := r.Export(ctx, &out, a, Filter{}, ExportOptions{Format: FormatCSV}); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&out).ReadAll()
		if err != nil || len(recs) != 2 || recs[0][0] != "id" {
			t.Fatalf("csv = %v, %v", recs, err)
		}
		if name := recs[1][6]; !strings.HasPrefix(name, "'=") {
			t.Fatalf("actor_name cell = %q, want it defused", name)
		}
		var ve *ValidationError
		if _, err := r.Export(ctx, &out, a, Filter{}, ExportOptions{Format: "xml"}); !errors.As(err, &ve) {
			t.Fatalf("unknown format = %v", err)
		}
	})
}

func TestCrossTenantReturnsNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, a, b := twoTenants(t)
	evs := record(t, r, a, 4, "x.y")
	page, err := r.List(ctx, b, Filter{}, PageParams{})
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("tenant b lists %+v, %v", page, err)
	}
	var out bytes.Buffer
	if n, err := r.Export(ctx, &out, b, Filter{}, ExportOptions{Format: FormatJSONL}); err != nil || n != 0 || strings.Contains(out.String(), evs[0].ID) {
		t.Fatalf("tenant b exports %d rows: %s (%v)", n, out.String(), err)
	}
	if res, err := r.Verify(ctx, b, nil, nil); err != nil || !res.OK || res.Checked != 0 {
		t.Fatalf("tenant b verify = %+v, %v", res, err)
	}
	if res, err := r.Verify(ctx, a, nil, nil); err != nil || !res.OK || res.Checked != 4 {
		t.Fatalf("tenant a verify = %+v, %v", res, err)
	}
}

// Events appended by the caller's own statement chain like any other, also while Record
// appends to the same chain from other goroutines, and one whose change did not happen
// leaves no trace.
func TestPipelinedJoinsTheChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, a, b := twoTenants(t)
	pool := dbtest.Pool(t)
	pipelined := func(tenantID string, i int, commit bool) error {
		p, err := r.Pipeline(ctx, Entry{TenantID: tenantID, Action: "tool.call", Target: Target{Type: "call", ID: fmt.Sprint(i)},
			Details: map[string]any{"i": i, "token": "must not be stored"}})
		if err != nil {
			return err
		}
		// Appended only when the statement's own change happened: here, when commit is set.
		b := &pgx.Batch{}
		b.Queue(`with changed as (select 1 where $1::bool) select a.out_seq from changed cross join lateral `+p.Call(2)+` a`,
			append([]any{commit}, p.Args()...)...)
		return db.TenantBatch(ctx, pool, tenantID, b)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				tenantID := a
				if i%3 == 0 {
					tenantID = b
				}
				var err error
				if g%2 == 0 {
					err = pipelined(tenantID, g*100+i, i != 5)
				} else {
					_, err = r.Record(ctx, nil, Entry{TenantID: tenantID, Action: "thing.change", Target: Target{Type: "thing", ID: fmt.Sprint(i)}})
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, tenantID := range []string{a, b} {
		res, err := r.Verify(ctx, tenantID, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !res.OK {
			t.Fatalf("chain of %s broken: %+v", tenantID, res)
		}
	}
	// Each goroutine appends 6 events for a (i = 1, 2, 4, 5, 7, 8) and 4 for b; the two
	// pipelined goroutines skipped their i = 5.
	count := func(tenantID, where string) (n int) {
		t.Helper()
		if err := db.WithTenantTx(ctx, pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
			return tx.QueryRow(ctx, `select count(*) from audit_events where tenant_id = $1`+where, tenantID).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	na, nb := count(a, ""), count(b, "")
	if nb != 4*4 {
		t.Fatalf("tenant b has %d events, want %d", nb, 4*4)
	}
	if secret := count(b, ` and details::text like '%must not%'`); secret != 0 {
		t.Fatalf("%d events kept a secret-looking detail", secret)
	}
	if na != 4*6-2 {
		t.Fatalf("tenant a has %d events, want %d", na, 4*6-2)
	}
}

// The document cut for the database, with the time and seq the database picks spliced back
// in, is the canonical document Verify hashes, whatever the details hold.
func TestDocPartsSpliceBackToTheDocument(t *testing.T) {
	for _, details := range []any{
		nil,
		map[string]any{"at": "", "seq": 0, "target": map[string]any{"x": 1}, "client_ip": "x"},
		map[string]any{"note": `,"at":"","client_ip":` + `,"seq":0,"target":`, "nested": map[string]any{"seq": 0, "target": "t"}},
	} {
		raw, err := canonicalDetails(details)
		if err != nil {
			t.Fatal(err)
		}
		ev := &Event{ID: uuid.NewString(), TenantID: uuid.NewString(), Action: "a.b", Details: raw,
			Actor: Actor{Kind: "api_key", ID: `key:"at":"","client_ip":`, Name: "n"}, Target: Target{Type: "call", ID: `,"seq":0,"target":`}}
		head, mid, tail, err := ev.docParts()
		if err != nil {
			t.Fatal(err)
		}
		ev.Seq, ev.At = 12345, time.Date(2026, 11, 22, 6, 7, 8, 9000, time.UTC)
		want, err := ev.canonicalDoc()
		if err != nil {
			t.Fatal(err)
		}
		got := string(head) + ev.At.Format(timeLayout) + string(mid) + "12345" + string(tail)
		if got != string(want) {
			t.Errorf("spliced document\n  %s\nwant\n  %s", got, want)
		}
	}
}

// A tenant id given in upper case is recorded and hashed in the canonical form PostgreSQL
// returns, so the untouched chain verifies.
func TestUpperCaseTenantIDChainVerifies(t *testing.T) {
	ctx := context.Background()
	r, a, b := twoTenants(t)
	for i := range 3 {
		if _, err := r.Record(ctx, nil, Entry{TenantID: strings.ToUpper(a), Action: "x.y", Details: map[string]any{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Record(ctx, nil, Entry{TenantID: b, Action: "x.y"}); err != nil {
		t.Fatal(err)
	}
	for tenantID, want := range map[string]int64{a: 3, b: 1} {
		res, err := r.Verify(ctx, tenantID, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !res.OK || res.Checked != want {
			t.Fatalf("untouched chain of %s: %+v, want ok over %d", tenantID, res, want)
		}
	}
}

// TestRetryKeyRecordsAnEventOnce: under one retry key, the same event recorded again (by a
// retry of the request, on any pod, even at once) is appended once; another event of the
// same request, the same event under another key and the same key in another tenant are
// appended each; every chain still verifies.
func TestRetryKeyRecordsAnEventOnce(t *testing.T) {
	t.Parallel()
	r, a, b := twoTenants(t)
	base := WithActor(context.Background(), Actor{Kind: "api_key", ID: "key:k1", Name: "ci"})
	attempt := func(key, requestID string) context.Context {
		return WithRetryKey(WithRequestMeta(base, RequestMeta{ClientIP: "192.0.2.7", RequestID: requestID}), key)
	}
	rpc := func(tenantID, target string) Entry {
		return Entry{TenantID: tenantID, Action: ActionRPC, Target: Target{Type: "session", ID: target},
			Details: map[string]any{"op": "rpc", "params": map[string]any{"method": "tools/call"}}}
	}
	first, err := r.Record(attempt("key-1", "req-1"), nil, rpc(a, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	// Retries race on two pods, one in a transaction of its own making.
	var wg sync.WaitGroup
	repeats := make([]*Event, 2)
	errs := make([]error, 2)
	wg.Go(func() { repeats[0], errs[0] = r.Record(attempt("key-1", "req-2"), nil, rpc(a, "s1")) })
	wg.Go(func() {
		errs[1] = db.WithTenantTx(attempt("key-1", "req-3"), dbtest.Pool(t), a, func(ctx context.Context, tx pgx.Tx) error {
			var err error
			repeats[1], err = r.Record(ctx, tx, rpc(a, "s1"))
			return err
		})
	})
	wg.Wait()
	for i, ev := range repeats {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if ev.ID != first.ID || ev.Seq != first.Seq || !bytes.Equal(ev.RowHash, first.RowHash) {
			t.Fatalf("repeat %d = id %s seq %d, want the first event's id %s seq %d", i, ev.ID, ev.Seq, first.ID, first.Seq)
		}
	}
	// Other events of the request, other keys and other tenants are events of their own.
	if _, err := r.Record(attempt("key-1", "req-1"), nil, rpc(a, "s2")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Record(attempt("key-2", "req-4"), nil, rpc(a, "s1")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Record(base, nil, rpc(a, "s1")); err != nil {
		t.Fatal(err)
	}
	evB, err := r.Record(attempt("key-1", "req-1"), nil, rpc(b, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	if evB.ID == first.ID || evB.Seq != 1 {
		t.Fatalf("tenant b's event = id %s seq %d, want an id of its own at seq 1", evB.ID, evB.Seq)
	}
	for tenantID, want := range map[string]int{a: 4, b: 1} {
		page, err := r.List(context.Background(), tenantID, Filter{}, PageParams{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != want {
			t.Fatalf("%d events in tenant %s, want %d", len(page.Items), tenantID, want)
		}
		res, err := r.Verify(context.Background(), tenantID, nil, nil)
		if err != nil || !res.OK || res.Checked != int64(want) {
			t.Fatalf("verify = %+v, %v", res, err)
		}
	}
}

// An append looks its id up through audit_events_id_key, however many events the chain
// holds and whether or not the table has statistics yet. Looked up with its tenant too, a
// plan cached on a new database read the tenant's whole chain through audit_events_at_idx
// on every append (migrations/0022). PostgreSQL's index counters show which index was read:
// the pool is closed first, so each backend's counters are flushed as it exits.
func TestAppendReadsOneIndexEntryPerEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	r := NewRecorder(d.AppPool, nil)
	a, b := uuid.NewString(), uuid.NewString()
	const n = 120
	record(t, r, a, n, "x.y")
	record(t, r, b, 3, "x.y")
	d.AppPool.Close()

	read := map[string]int64{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var inserted int64
		if err := d.Pool.QueryRow(ctx, `select n_tup_ins from pg_stat_user_tables where relname = 'audit_events'`).Scan(&inserted); err != nil {
			t.Fatal(err)
		}
		if inserted == n+3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the appends' counters never arrived: %d inserts counted, want %d", inserted, n+3)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, err := d.Pool.Query(ctx, `select indexrelname, idx_tup_read from pg_stat_user_indexes where relname = 'audit_events'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var tuples int64
		if err := rows.Scan(&name, &tuples); err != nil {
			t.Fatal(err)
		}
		read[name] = tuples
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// Each append reads at most the chain's head (audit_events_pkey, one entry); the id is
	// new, so its lookup finds nothing. A lookup that walked the chain reads about n²/2.
	if got := read["audit_events_at_idx"] + read["audit_events_pkey"] + read["audit_events_id_key"]; got > 2*(n+3) {
		t.Fatalf("%d appends read %d index entries (%v), want at most %d", n+3, got, read, 2*(n+3))
	}
}
