package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
)

// ValidationError names the filter or page parameter at fault.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// Filter selects events. Zero fields select everything.
type Filter struct {
	// From and To bound the events' time: From <= at < To.
	From, To *time.Time
	// Action matches exactly, or as a prefix when it ends with "*" ("member.*").
	Action string
	// Actor matches the actor id exactly ("key:<id>", "user:<id>").
	Actor string
}

// Validate returns a *ValidationError naming the first field List, Each and Export would
// refuse, so a caller can refuse the filter before it records or answers anything.
func (f Filter) Validate() error {
	if f.From != nil && f.To != nil && !f.From.Before(*f.To) {
		return &ValidationError{Field: "to", Reason: "must be after from"}
	}
	for _, fv := range []struct{ field, value string }{{"action", f.Action}, {"actor", f.Actor}} {
		switch {
		case len(fv.value) > maxFieldLen:
			return &ValidationError{Field: fv.field, Reason: "too long"}
		case strings.IndexByte(fv.value, 0) >= 0:
			// PostgreSQL refuses NUL in text: the query would fail, not match nothing.
			return &ValidationError{Field: fv.field, Reason: "must not contain the NUL character"}
		case !utf8.ValidString(fv.value):
			return &ValidationError{Field: fv.field, Reason: "must be valid UTF-8"}
		}
	}
	return nil
}

// PageParams selects a page: Limit in [1, 1000] (100 by default), Cursor from the previous
// page, newest first when Descending.
type PageParams struct {
	Limit      int
	Cursor     string
	Descending bool
}

// Page is one page of events; NextCursor is empty on the last.
type Page struct {
	Items      []Event
	NextCursor string
}

const eventColumns = `id::text, tenant_id::text, seq, at, actor_kind, actor_id, actor_name, action,
	target_type, target_id, client_ip, user_agent, request_id, details::text, prev_hash, row_hash`

func scanEvent(row pgx.Row) (Event, error) {
	var ev Event
	var details string
	err := row.Scan(&ev.ID, &ev.TenantID, &ev.Seq, &ev.At, &ev.Actor.Kind, &ev.Actor.ID, &ev.Actor.Name, &ev.Action,
		&ev.Target.Type, &ev.Target.ID, &ev.ClientIP, &ev.UserAgent, &ev.RequestID, &details, &ev.PrevHash, &ev.RowHash)
	if err != nil {
		return ev, db.InterpretError(err)
	}
	ev.At = ev.At.UTC()
	// As PostgreSQL's jsonb prints it: same value, other key order and spacing. Hashing
	// canonicalises it again, so only Verify pays for that.
	ev.Details = json.RawMessage(details)
	return ev, nil
}

// filterSQL is the WHERE clause shared by listing and export; $1 is the tenant, $2 and $3
// bound seq, $4 is the action filter, $5 the actor filter.
const filterSQL = `tenant_id = $1 and seq >= $2 and seq <= $3
	and ($4 = '' or action = $4 or (right($4, 1) = '*' and starts_with(action, left($4, -1))))
	and ($5 = '' or actor_id = $5)`

// seqRange maps a time range onto the chain's seqs, which grow with time: the first seq at
// or after from and the last before to (or the head), through the (tenant_id, at, seq)
// index. ok is false when the range is empty.
func seqRange(ctx context.Context, tx pgx.Tx, tenantID string, from, to *time.Time) (lo, hi int64, ok bool, err error) {
	lo = 1
	if from != nil {
		err = tx.QueryRow(ctx, `select seq from audit_events where tenant_id = $1 and at >= $2 order by at, seq limit 1`,
			tenantID, *from).Scan(&lo)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, 0, false, nil
		}
		if err != nil {
			return 0, 0, false, db.InterpretError(err)
		}
	}
	if to != nil {
		err = tx.QueryRow(ctx, `select seq from audit_events where tenant_id = $1 and at < $2 order by at desc, seq desc limit 1`,
			tenantID, *to).Scan(&hi)
	} else {
		err = tx.QueryRow(ctx, `select seq from audit_events where tenant_id = $1 order by seq desc limit 1`, tenantID).Scan(&hi)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, db.InterpretError(err)
	}
	return lo, hi, lo <= hi, nil
}

// List returns one page of a tenant's events, oldest first unless p.Descending.
func (r *Recorder) List(ctx context.Context, tenantID string, f Filter, p PageParams) (*Page, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	limit := p.Limit
	switch {
	case limit <= 0:
		limit = 100
	case limit > 1000:
		limit = 1000
	}
	after, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	page := &Page{Items: []Event{}}
	if _, err := uuid.Parse(tenantID); err != nil {
		return page, nil
	}
	err = db.WithTenantTx(ctx, r.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		lo, hi, ok, err := seqRange(ctx, tx, tenantID, f.From, f.To)
		if err != nil || !ok {
			return err
		}
		q := `select ` + eventColumns + ` from audit_events where ` + filterSQL
		if p.Descending {
			if after > 0 {
				hi = min(hi, after-1)
			}
			q += ` order by seq desc limit $6`
		} else {
			if after > 0 {
				lo = max(lo, after+1)
			}
			q += ` order by seq limit $6`
		}
		rows, err := tx.Query(ctx, q, tenantID, lo, hi, f.Action, f.Actor, limit+1)
		if err != nil {
			return db.InterpretError(err)
		}
		defer rows.Close()
		for rows.Next() {
			ev, err := scanEvent(rows)
			if err != nil {
				return err
			}
			page.Items = append(page.Items, ev)
		}
		return db.InterpretError(rows.Err())
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.NextCursor = encodeCursor(page.Items[limit-1].Seq)
	}
	return page, nil
}

// Each calls fn for every event of a tenant matching f, oldest first, reading batch by batch
// in short transactions, so memory stays constant however long the range. The range is fixed
// when Each starts: events appended meanwhile are not visited. An error from fn stops Each
// and is returned as is.
func (r *Recorder) Each(ctx context.Context, tenantID string, f Filter, fn func(*Event) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if _, err := uuid.Parse(tenantID); err != nil {
		return nil
	}
	var lo, hi int64
	var ok bool
	err := db.WithTenantTx(ctx, r.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		lo, hi, ok, err = seqRange(ctx, tx, tenantID, f.From, f.To)
		return err
	})
	if err != nil {
		return fmt.Errorf("audit range: %w", err)
	}
	if !ok {
		return nil
	}
	batch := make([]Event, 0, r.batch)
	for next := lo; next <= hi; {
		batch = batch[:0]
		err := db.WithTenantTx(ctx, r.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `select `+eventColumns+` from audit_events where `+filterSQL+` order by seq limit $6`,
				tenantID, next, hi, f.Action, f.Actor, r.batch)
			if err != nil {
				return db.InterpretError(err)
			}
			defer rows.Close()
			for rows.Next() {
				ev, err := scanEvent(rows)
				if err != nil {
					return err
				}
				batch = append(batch, ev)
			}
			return db.InterpretError(rows.Err())
		})
		if err != nil {
			return fmt.Errorf("read audit events: %w", err)
		}
		for i := range batch {
			if err := fn(&batch[i]); err != nil {
				return err
			}
		}
		if len(batch) < r.batch {
			break
		}
		next = batch[len(batch)-1].Seq + 1
	}
	return nil
}

// VerifyResult reports a chain check.
type VerifyResult struct {
	// OK is true when every checked event's hash matches its content and its predecessor.
	OK bool
	// Checked counts the events examined, the bad one included.
	Checked int64
	// FirstBadID and FirstBadSeq name the first event where the chain breaks, and Reason
	// says how.
	FirstBadID  string
	FirstBadSeq int64
	Reason      string
	// LastSeq and HeadHash are the last good event's seq and row_hash: keep HeadHash outside
	// the database to detect a rewritten chain later.
	LastSeq  int64
	HeadHash []byte
}

// Verify checks a tenant's chain over [from, to): each event's row_hash must be the hash of
// its content and its prev_hash, prev_hash must be the previous event's row_hash and seqs
// must have no gaps. It stops at the first broken event.
func (r *Recorder) Verify(ctx context.Context, tenantID string, from, to *time.Time) (*VerifyResult, error) {
	f := Filter{From: from, To: to}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	res := &VerifyResult{OK: true}
	if _, err := uuid.Parse(tenantID); err != nil {
		return res, nil
	}
	var expectSeq int64
	var expectPrev []byte
	err := r.Each(ctx, tenantID, f, func(ev *Event) error {
		if expectPrev == nil {
			// The first event of the range: its predecessor is outside it.
			var err error
			if expectPrev, err = r.predecessorHash(ctx, tenantID, ev.Seq); err != nil {
				return err
			}
			expectSeq = ev.Seq
			if expectPrev == nil {
				return res.bad(ev, "the event before it is missing")
			}
		}
		if ev.Seq != expectSeq {
			return res.bad(ev, fmt.Sprintf("events %d to %d are missing", expectSeq, ev.Seq-1))
		}
		if !bytes.Equal(ev.PrevHash, expectPrev) {
			return res.bad(ev, "prev_hash does not match the previous event's row_hash")
		}
		sum, err := ev.computeHash()
		if err != nil {
			return res.bad(ev, "content cannot be hashed: "+err.Error())
		}
		if !bytes.Equal(sum, ev.RowHash) {
			return res.bad(ev, "row_hash does not match the event's content")
		}
		res.Checked++
		res.LastSeq, res.HeadHash = ev.Seq, ev.RowHash
		expectSeq, expectPrev = ev.Seq+1, ev.RowHash
		return nil
	})
	if errors.Is(err, errVerifyStop) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("verify audit chain: %w", err)
	}
	return res, nil
}

// errVerifyStop ends Verify's walk at the first broken event.
var errVerifyStop = errors.New("verify: chain broken")

func (res *VerifyResult) bad(ev *Event, reason string) error {
	res.OK = false
	res.Checked++
	res.FirstBadID, res.FirstBadSeq, res.Reason = ev.ID, ev.Seq, reason
	return errVerifyStop
}

// predecessorHash returns the row_hash of the event before seq (the zero hash before seq 1)
// or nil when that event is missing.
func (r *Recorder) predecessorHash(ctx context.Context, tenantID string, seq int64) ([]byte, error) {
	if seq == 1 {
		return make([]byte, sha256.Size), nil
	}
	var h []byte
	err := db.WithTenantTx(ctx, r.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, `select row_hash from audit_events where tenant_id = $1 and seq = $2`, tenantID, seq-1).Scan(&h)
	})
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, db.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, db.InterpretError(err)
	}
	return h, nil
}

// Export formats.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// ExportOptions shapes an export.
type ExportOptions struct {
	// Format is FormatJSONL or FormatCSV.
	Format string
	// Flush, when set, is called after each batch so a streamed response keeps moving.
	Flush func()
}

// Export writes a tenant's events matching f to w, oldest first, in constant memory. JSON
// lines carry every hashed field plus prev_hash and row_hash (hex), so a reader can re-check
// the chain offline: drop the two hashes, add "v": 1, encode with RFC 8785 and hash
// SHA-256(prev_hash || that). CSV is for spreadsheets: cells that a spreadsheet would run as
// a formula are prefixed with ', so CSV is not byte-for-byte verifiable.
func (r *Recorder) Export(ctx context.Context, w io.Writer, tenantID string, f Filter, opts ExportOptions) (int64, error) {
	var n int64
	var write func(ev *Event) error
	var finish func() error
	switch opts.Format {
	case FormatJSONL:
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		write = func(ev *Event) error { return enc.Encode(ev) }
		finish = func() error { return nil }
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(csvHeader()); err != nil {
			return 0, err
		}
		write = func(ev *Event) error { return cw.Write(ev.csvRecord()) }
		finish = func() error { cw.Flush(); return cw.Error() }
	default:
		return 0, &ValidationError{Field: "format", Reason: "want jsonl or csv"}
	}
	err := r.Each(ctx, tenantID, f, func(ev *Event) error {
		if err := write(ev); err != nil {
			return err
		}
		n++
		if opts.Flush != nil && n%int64(r.batch) == 0 {
			if err := finish(); err != nil {
				return err
			}
			opts.Flush()
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if err := finish(); err != nil {
		return n, err
	}
	if opts.Flush != nil {
		opts.Flush()
	}
	return n, nil
}

func csvHeader() []string {
	return []string{"id", "tenant_id", "seq", "at", "actor_kind", "actor_id", "actor_name", "action",
		"target_type", "target_id", "client_ip", "user_agent", "request_id", "details", "prev_hash", "row_hash"}
}

func (ev *Event) csvRecord() []string {
	rec := []string{ev.ID, ev.TenantID, strconv.FormatInt(ev.Seq, 10), ev.At.Format(timeLayout), ev.Actor.Kind, ev.Actor.ID,
		ev.Actor.Name, ev.Action, ev.Target.Type, ev.Target.ID, ev.ClientIP, ev.UserAgent, ev.RequestID, string(ev.Details),
		hex.EncodeToString(ev.PrevHash), hex.EncodeToString(ev.RowHash)}
	for i, c := range rec {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			rec[i] = "'" + c
		}
	}
	return rec
}

// timeLayout is how event times are written where they are hashed or exported: UTC with
// exactly six fractional digits, PostgreSQL's precision.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// MarshalJSON writes the export form of an event.
func (ev Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID        string          `json:"id"`
		TenantID  string          `json:"tenant_id"`
		Seq       int64           `json:"seq"`
		At        string          `json:"at"`
		Actor     Actor           `json:"actor"`
		Action    string          `json:"action"`
		Target    Target          `json:"target"`
		ClientIP  string          `json:"client_ip"`
		UserAgent string          `json:"user_agent"`
		RequestID string          `json:"request_id"`
		Details   json.RawMessage `json:"details"`
		PrevHash  string          `json:"prev_hash"`
		RowHash   string          `json:"row_hash"`
	}{ev.ID, ev.TenantID, ev.Seq, ev.At.UTC().Format(timeLayout), ev.Actor, ev.Action, ev.Target, ev.ClientIP,
		ev.UserAgent, ev.RequestID, ev.Details, hex.EncodeToString(ev.PrevHash), hex.EncodeToString(ev.RowHash)})
}

func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("seq:" + strconv.FormatInt(seq, 10)))
}

func decodeCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	num, ok := strings.CutPrefix(string(b), "seq:")
	seq, perr := strconv.ParseInt(num, 10, 64)
	if err != nil || !ok || perr != nil || seq <= 0 {
		return 0, &ValidationError{Field: "cursor", Reason: "not a cursor this listing issued"}
	}
	return seq, nil
}
