// Package audit is Tapline's tamper-evident audit log: who did what to which object, when,
// from where, in which tenant.
//
// Every mutating action is one Event. Events are append-only (a trigger refuses UPDATE,
// DELETE and TRUNCATE, and the application role may only INSERT and SELECT) and hash-chained
// per tenant: row_hash = SHA-256(prev_hash || RFC 8785 canonical JSON of the event), with
// seq counting 1, 2, 3… per tenant. Whoever edits, deletes or inserts a row directly in the
// database breaks the chain, and Verify names the first event where it breaks. A database
// administrator could rewrite a whole chain; exporting it (jsonl carries the hashes) and
// keeping the head hash elsewhere detects that too.
//
// Other packages record through Recorder.Record, preferably inside the transaction that
// makes the change, so the change and its audit entry commit together:
//
//	err := db.WithTenantTx(ctx, pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
//		// … the change …
//		_, err := recorder.Record(ctx, tx, audit.Entry{
//			TenantID: tenantID,
//			Action:   audit.ActionSessionCreate,
//			Target:   audit.Target{Type: "session", ID: id},
//			Details:  map[string]any{"url": url},
//		})
//		return err
//	})
//
// The actor and the request's client address, user agent and id come from the context
// (WithActor, WithRequestMeta; the api's middleware sets both); code without a request, such
// as a worker, names its actor in the Entry or gets System.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/db"
)

// Actions recorded by Tapline. Names are "<object>.<verb>"; filters accept a trailing "*"
// ("member.*").
const (
	ActionAPIKeyCreate   = "api_key.create"
	ActionAPIKeyRevoke   = "api_key.revoke"
	ActionMemberAdd      = "member.add"
	ActionMemberUpdate   = "member.update"
	ActionMemberRemove   = "member.remove"
	ActionTokenIssue     = "auth.token.issue"
	ActionAuditExport    = "audit.export"
	ActionSessionCreate  = "session.create"
	ActionSessionClose   = "session.close"
	ActionSessionConnect = "session.reconnect"
	ActionToolCall       = "tool.call"
	ActionCallCancel     = "tool.cancel"
	ActionPendingAnswer  = "pending.answer"
	ActionRootsUpdate    = "roots.update"
	ActionRPC            = "session.rpc"
)

// Limits on recorded fields; longer values are cut (strings) or refused (details).
const (
	maxFieldLen   = 512
	maxDetailsLen = 64 << 10
)

// ErrInvalidEntry means an Entry lacks its tenant or action, or its details do not encode.
var ErrInvalidEntry = errors.New("invalid audit entry")

// Actor is who acted. Kind is "api_key", "user" or "system"; ID is stable ("key:<id>",
// "user:<id>", "system:<name>").
type Actor struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// SystemActor is the actor of changes no person or key asked for, named after the part of
// Tapline that made them ("retention", "worker").
func SystemActor(name string) Actor {
	return Actor{Kind: "system", ID: "system:" + name, Name: name}
}

// Target is the object acted on.
type Target struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Entry is what a caller records.
type Entry struct {
	// TenantID is required.
	TenantID string
	// Actor defaults to the context's (WithActor), then to SystemActor("tapline").
	Actor Actor
	// Action is required, e.g. ActionSessionCreate.
	Action string
	Target Target
	// Details is anything encoding/json encodes to an object or null. Values under keys
	// that look secret (token, secret, password, authorization…) are replaced with
	// "[redacted]"; still, never put secrets here.
	Details any
}

// Event is one stored audit log row.
type Event struct {
	ID        string
	TenantID  string
	Seq       int64
	At        time.Time
	Actor     Actor
	Action    string
	Target    Target
	ClientIP  string
	UserAgent string
	RequestID string
	// Details is the entry's details as a JSON object ({} when none): canonical JSON on
	// events Record returns, PostgreSQL's rendering of the same value on events read back.
	Details  json.RawMessage
	PrevHash []byte
	RowHash  []byte
}

// Config tunes a Recorder; nil means defaults.
type Config struct {
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// BatchSize is how many rows each query of Each and Verify reads. Defaults to 1000.
	BatchSize int
}

// Recorder appends to and reads the audit log.
type Recorder struct {
	pool  *pgxpool.Pool
	now   func() time.Time
	batch int
}

// NewRecorder returns a Recorder on pool (the application role's pool).
func NewRecorder(pool *pgxpool.Pool, cfg *Config) *Recorder {
	r := &Recorder{pool: pool, now: time.Now, batch: 1000}
	if cfg != nil {
		if cfg.Now != nil {
			r.now = cfg.Now
		}
		if cfg.BatchSize > 0 {
			r.batch = cfg.BatchSize
		}
	}
	return r
}

// Record appends an event to its tenant's chain. With a nil tx it runs in a transaction of
// its own; otherwise tx must be a tenant transaction of e.TenantID (db.WithTenantTx), and the
// event commits or rolls back with it. Appends of one tenant are serialised by a
// transaction-scoped advisory lock, held until the transaction ends. Either way the append
// is one statement (tapline_audit_append, migrations/0017 and 0020). Under a retry key
// (WithRetryKey), an event an earlier attempt of the request already appended is not
// appended again: the Event returned then carries the stored event's seq, time and hashes.
func (r *Recorder) Record(ctx context.Context, tx pgx.Tx, e Entry) (*Event, error) {
	ev, err := r.prepare(ctx, e)
	if err != nil {
		return nil, err
	}
	args, err := ev.appendArgs(r.now())
	if err != nil {
		return nil, fmt.Errorf("record audit event %s: %w", e.Action, err)
	}
	if tx == nil {
		err = db.TenantQueryRow(ctx, r.pool, e.TenantID, ev.scanAppended, appendSQL, args...)
	} else {
		err = ev.scanAppended(tx.QueryRow(ctx, appendSQL, args...))
	}
	if err != nil {
		return nil, fmt.Errorf("record audit event %s: %w", e.Action, err)
	}
	return ev, nil
}

func (r *Recorder) prepare(ctx context.Context, e Entry) (*Event, error) {
	tenantID, err := uuid.Parse(e.TenantID)
	if err != nil {
		return nil, fmt.Errorf("%w: tenant id %q", ErrInvalidEntry, e.TenantID)
	}
	// The document is hashed with the id as PostgreSQL gives it back to Verify: canonical,
	// lower case, whatever spelling the caller had.
	e.TenantID = tenantID.String()
	if strings.TrimSpace(e.Action) == "" {
		return nil, fmt.Errorf("%w: no action", ErrInvalidEntry)
	}
	actor := e.Actor
	if actor == (Actor{}) {
		actor = ActorFrom(ctx)
	}
	meta := RequestMetaFrom(ctx)
	details, err := canonicalDetails(e.Details)
	if err != nil {
		return nil, fmt.Errorf("%w: details: %w", ErrInvalidEntry, err)
	}
	ev := &Event{
		ID:        uuid.Must(uuid.NewV7()).String(),
		TenantID:  e.TenantID,
		Actor:     Actor{Kind: clean(actor.Kind), ID: clean(actor.ID), Name: clean(actor.Name)},
		Action:    clean(e.Action),
		Target:    Target{Type: clean(e.Target.Type), ID: clean(e.Target.ID)},
		ClientIP:  clean(meta.ClientIP),
		UserAgent: clean(meta.UserAgent),
		RequestID: clean(meta.RequestID),
		Details:   details,
	}
	if key := RetryKeyFrom(ctx); key != "" {
		ev.ID = retriedEventID(key, ev)
	}
	return ev, nil
}

// retriedEventSpace is the UUIDv5 namespace of the ids of events recorded under a retry key.
var retriedEventSpace = uuid.MustParse("6f1c0a4e-9b7d-4c52-8a3e-2d5f7b19c604") //nolint:gochecknoglobals // a constant UUID

// retriedEventID names an event recorded under a retry key: the same request recording the
// same event (tenant, actor, action, target and details) gets the same id on every attempt,
// and tapline_audit_append (migrations/0020) appends an id once. What may differ between
// attempts (time, request id, client address) is left out.
func retriedEventID(key string, ev *Event) string {
	sum := sha256.Sum256(ev.Details)
	name := strings.Join([]string{key, ev.TenantID, ev.Actor.Kind, ev.Actor.ID, ev.Action, ev.Target.Type, ev.Target.ID,
		string(sum[:])}, "\x00")
	return uuid.NewSHA1(retriedEventSpace, []byte(name)).String()
}

// appendSQL appends one event (migrations/0017) and reads what the database placed.
var appendSQL = `select out_seq, out_at, out_prev_hash, out_row_hash from ` + appendCallFrom(1) //nolint:gochecknoglobals // a constant string

// appendCallFrom writes the call of tapline_audit_append with its parameters numbered from
// $first, for a statement that has parameters of its own before them.
func appendCallFrom(first int) string {
	var b strings.Builder
	b.WriteString("tapline_audit_append(")
	for i := range appendParams {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", first+i)
	}
	b.WriteString(")")
	return b.String()
}

// appendParams is the number of tapline_audit_append's parameters.
const appendParams = 16

// appendArgs returns tapline_audit_append's arguments for ev recorded at now: its columns
// and its canonical document in three parts, around the time and the seq that the database
// fills in from the chain's head.
func (ev *Event) appendArgs(now time.Time) ([]any, error) {
	head, mid, tail, err := ev.docParts()
	if err != nil {
		return nil, err
	}
	return []any{ev.TenantID, ev.ID, now.UTC().Truncate(time.Microsecond), ev.Actor.Kind, ev.Actor.ID, ev.Actor.Name,
		ev.Action, ev.Target.Type, ev.Target.ID, ev.ClientIP, ev.UserAgent, ev.RequestID,
		string(ev.Details), head, mid, tail}, nil
}

// scanAppended reads what tapline_audit_append placed: the seq, the time and the hashes.
func (ev *Event) scanAppended(row pgx.Row) error {
	if err := row.Scan(&ev.Seq, &ev.At, &ev.PrevHash, &ev.RowHash); err != nil {
		return db.InterpretError(err)
	}
	ev.At = ev.At.UTC()
	return nil
}

// Pipelined is an event appended by a statement its caller writes, typically a
// data-modifying CTE that appends the event only when its change happened, so the change and
// its audit entry go to PostgreSQL in one batch with no Go in between:
//
//	with changed as (insert … returning 1)
//	select a.* from changed cross join lateral <p.Call(n)> a
//
// with p.Args() appended to the statement's own n-1 arguments.
type Pipelined struct {
	args []any
}

// Pipeline prepares an event for a statement of the caller's (see Pipelined).
func (r *Recorder) Pipeline(ctx context.Context, e Entry) (*Pipelined, error) {
	ev, err := r.prepare(ctx, e)
	if err != nil {
		return nil, err
	}
	args, err := ev.appendArgs(r.now())
	if err != nil {
		return nil, fmt.Errorf("record audit event %s: %w", e.Action, err)
	}
	return &Pipelined{args: args}, nil
}

// Call is the function call that appends the event, its parameters numbered from $first;
// it yields the columns out_seq, out_at, out_prev_hash and out_row_hash.
func (p *Pipelined) Call(first int) string { return appendCallFrom(first) }

// Args are the call's arguments.
func (p *Pipelined) Args() []any { return p.args }

// hashVersion is part of every hashed document, so the hashed form can evolve.
const hashVersion = 1

// canonicalDoc is the document an event's hash covers: every column but the hashes.
func (ev *Event) canonicalDoc() ([]byte, error) {
	return ev.writeDoc(ev.At.UTC().Format(timeLayout), json.Number(strconv.FormatInt(ev.Seq, 10)))
}

// writeDoc writes the canonical document of ev with the given time and seq values.
func (ev *Event) writeDoc(at string, seq json.Number) ([]byte, error) {
	details, err := normalise(ev.Details)
	if err != nil {
		return nil, err
	}
	doc := map[string]any{
		"v":          json.Number(fmt.Sprint(hashVersion)),
		"id":         ev.ID,
		"tenant_id":  ev.TenantID,
		"seq":        seq,
		"at":         at,
		"actor":      map[string]any{"kind": ev.Actor.Kind, "id": ev.Actor.ID, "name": ev.Actor.Name},
		"action":     ev.Action,
		"target":     map[string]any{"type": ev.Target.Type, "id": ev.Target.ID},
		"client_ip":  ev.ClientIP,
		"user_agent": ev.UserAgent,
		"request_id": ev.RequestID,
		"details":    details,
	}
	var buf bytes.Buffer
	if err := writeCanonical(&buf, doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// The members docParts cuts around, as written with its placeholders. Keys are sorted:
// "at" follows "actor", whose values are strings, and "seq" is followed by "target", whose
// values are strings, then by strings only. So the first unescaped occurrence of the first
// and the last of the second are the top-level members, even when details hold keys of the
// same names.
const (
	atMember  = `,"at":"","client_ip":`
	seqMember = `,"seq":0,"target":`
)

// docParts returns ev's canonical document cut around its time and seq values:
// head + at + mid + seq + tail is the document for that time and seq.
func (ev *Event) docParts() (head, mid, tail []byte, err error) {
	doc, err := ev.writeDoc("", json.Number("0"))
	if err != nil {
		return nil, nil, nil, err
	}
	i := bytes.Index(doc, []byte(atMember))
	j := bytes.LastIndex(doc, []byte(seqMember))
	if i < 0 || j < i {
		return nil, nil, nil, errors.New("audit: canonical document without its time or seq")
	}
	at := i + len(`,"at":"`)
	seq := j + len(`,"seq":`)
	return doc[:at], doc[at:seq], doc[seq+1:], nil
}

func (ev *Event) computeHash() ([]byte, error) {
	doc, err := ev.canonicalDoc()
	if err != nil {
		return nil, fmt.Errorf("canonical event: %w", err)
	}
	h := sha256.New()
	h.Write(ev.PrevHash)
	h.Write(doc)
	return h.Sum(nil), nil
}

// canonicalDetails redacts secret-looking keys and returns canonical JSON, {} for nil.
func canonicalDetails(details any) (json.RawMessage, error) {
	if details == nil {
		return json.RawMessage(`{}`), nil
	}
	tree, err := normalise(details)
	if err != nil {
		return nil, err
	}
	if tree == nil {
		return json.RawMessage(`{}`), nil
	}
	if _, ok := tree.(map[string]any); !ok {
		return nil, errors.New("want a JSON object")
	}
	tree = redact(tree)
	var buf bytes.Buffer
	if err := writeCanonical(&buf, tree); err != nil {
		return nil, err
	}
	if buf.Len() > maxDetailsLen {
		return nil, fmt.Errorf("%d bytes, at most %d", buf.Len(), maxDetailsLen)
	}
	return buf.Bytes(), nil
}

// looksSecret reports whether a details key probably holds a credential.
func looksSecret(key string) bool {
	k := strings.ToLower(key)
	for _, suffix := range []string{"_id", "_ids", "_type", "_at", "_name"} {
		if strings.HasSuffix(k, suffix) {
			return false
		}
	}
	for _, w := range []string{"secret", "password", "passwd", "token", "authorization", "cookie", "credential", "api_key", "apikey", "bearer", "private_key"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redact replaces the values of secret-looking keys and strips NUL characters, which
// PostgreSQL's jsonb refuses.
func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			if looksSecret(k) && val != nil {
				out[stripNUL(k)] = "[redacted]"
			} else {
				out[stripNUL(k)] = redact(val)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = redact(e)
		}
		return out
	case string:
		return stripNUL(x)
	}
	return v
}

func stripNUL(s string) string { return strings.ReplaceAll(s, "\x00", "") }

// clean makes a caller-supplied string storable: valid UTF-8, no NUL, at most maxFieldLen
// bytes.
func clean(s string) string {
	s = stripNUL(strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= maxFieldLen {
		return s
	}
	s = s[:maxFieldLen]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
