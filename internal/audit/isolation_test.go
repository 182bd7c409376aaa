package audit

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
)

// TestTenantIsolation walks the Recorder's reads and writes with two tenants: b's list (with
// any filter, and with a cursor from a's list), each, export and verify see b's chain
// only; neither Record nor a pipelined append in b's transaction reaches a's chain.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, a, b := twoTenants(t)
	evA := record(t, r, a, 6, "a.only")
	evB := record(t, r, b, 2, "b.only")
	ofA := func(s string) bool {
		if strings.Contains(s, a) || strings.Contains(s, "a.only") {
			return true
		}
		for _, ev := range evA {
			if strings.Contains(s, ev.ID) {
				return true
			}
		}
		return false
	}

	pageA, err := r.List(ctx, a, Filter{}, PageParams{Limit: 2})
	if err != nil || pageA.NextCursor == "" {
		t.Fatalf("a's first page = %+v, %v", pageA, err)
	}
	hour := time.Hour
	from, to := time.Now().Add(-hour), time.Now().Add(hour)
	for name, tc := range map[string]struct {
		f    Filter
		p    PageParams
		want int
	}{
		"All":            {Filter{}, PageParams{Limit: 1000}, 2},
		"Descending":     {Filter{}, PageParams{Limit: 1000, Descending: true}, 2},
		"ActionOfA":      {Filter{Action: "a.only"}, PageParams{}, 0},
		"ActionPrefix":   {Filter{Action: "a.*"}, PageParams{}, 0},
		"ActorOfBoth":    {Filter{Actor: "key:k1"}, PageParams{}, 2},
		"TimeRange":      {Filter{From: &from, To: &to}, PageParams{}, 2},
		"CursorOfA":      {Filter{}, PageParams{Cursor: pageA.NextCursor}, 0},
		"CursorOfADesc":  {Filter{}, PageParams{Cursor: pageA.NextCursor, Descending: true}, 1},
		"ActionOfB":      {Filter{Action: "b.only"}, PageParams{}, 2},
		"ActionWildcard": {Filter{Action: "*"}, PageParams{}, 2},
	} {
		t.Run("List/"+name, func(t *testing.T) {
			page, err := r.List(ctx, b, tc.f, tc.p)
			if err != nil || len(page.Items) != tc.want {
				t.Fatalf("b's list = %+v, %v; want %d events", page, err, tc.want)
			}
			for _, ev := range page.Items {
				if ev.TenantID != b || ofA(fmt.Sprintf("%+v", ev)) {
					t.Fatalf("b's list has %+v", ev)
				}
			}
		})
	}
	t.Run("Each", func(t *testing.T) {
		var n int
		err := r.Each(ctx, b, Filter{}, func(ev *Event) error {
			n++
			if ev.TenantID != b || ofA(fmt.Sprintf("%+v", ev)) {
				return fmt.Errorf("b's each has %+v", ev)
			}
			return nil
		})
		if err != nil || n != len(evB) {
			t.Fatalf("each of b = %d events, %v", n, err)
		}
	})
	for _, format := range []string{FormatJSONL, FormatCSV} {
		t.Run("Export/"+format, func(t *testing.T) {
			var out bytes.Buffer
			n, err := r.Export(ctx, &out, b, Filter{}, ExportOptions{Format: format})
			if err != nil || n != int64(len(evB)) || ofA(out.String()) || !strings.Contains(out.String(), evB[1].ID) {
				t.Fatalf("b's %s export = %d events, %v: %s", format, n, err, out.String())
			}
		})
	}
	t.Run("Verify", func(t *testing.T) {
		if res, err := r.Verify(ctx, b, nil, nil); err != nil || !res.OK || res.Checked != int64(len(evB)) {
			t.Fatalf("b's verify = %+v, %v", res, err)
		}
	})
	t.Run("PipelineIntoAnotherTenant", func(t *testing.T) {
		// An append for a, pipelined into b's transaction, is refused with it.
		p, err := r.Pipeline(ctx, Entry{TenantID: a, Action: "x.smuggled"})
		if err != nil {
			t.Fatal(err)
		}
		batch := &pgx.Batch{}
		batch.Queue(`select a.out_seq from `+p.Call(1)+` a`, p.Args()...)
		if err := db.TenantBatch(ctx, dbtest.Pool(t), b, batch); err == nil {
			t.Fatal("a pipelined append for a ran in b's transaction")
		}
		// Record into a from b's transaction is refused too.
		err = db.WithTenantTx(ctx, dbtest.Pool(t), b, func(ctx context.Context, tx pgx.Tx) error {
			_, err := r.Record(ctx, tx, Entry{TenantID: a, Action: "x.smuggled"})
			return err
		})
		if err == nil {
			t.Fatal("recorded into a from b's transaction")
		}
	})
	// a's chain is whole and only a's.
	if res, err := r.Verify(ctx, a, nil, nil); err != nil || !res.OK || res.Checked != int64(len(evA)) {
		t.Fatalf("a's verify = %+v, %v", res, err)
	}
	if page, err := r.List(ctx, a, Filter{Action: "x.*"}, PageParams{}); err != nil || len(page.Items) != 0 {
		t.Fatalf("a's log has smuggled events: %+v, %v", page, err)
	}
}
