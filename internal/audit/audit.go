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

// Record appends an event to its tenant's chain. With a nil tx it runs its own tenant
// transaction; otherwise tx must be a tenant transaction of e.TenantID (db.WithTenantTx),
// and the event commits or rolls back with it. Appends of one tenant are serialised by a
// transaction-scoped advisory lock, held until tx ends.
func (r *Recorder) Record(ctx context.Context, tx pgx.Tx, e Entry) (*Event, error) {
	ev, err := r.prepare(ctx, e)
	if err != nil {
		return nil, err
	}
	if tx == nil {
		err = db.WithTenantTx(ctx, r.pool, e.TenantID, func(ctx context.Context, tx pgx.Tx) error {
			return r.appendEvent(ctx, tx, ev)
		})
	} else {
		err = r.appendEvent(ctx, tx, ev)
	}
	if err != nil {
		return nil, fmt.Errorf("record audit event %s: %w", e.Action, err)
	}
	return ev, nil
}

func (r *Recorder) prepare(ctx context.Context, e Entry) (*Event, error) {
	if _, err := uuid.Parse(e.TenantID); err != nil {
		return nil, fmt.Errorf("%w: tenant id %q", ErrInvalidEntry, e.TenantID)
	}
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
	return &Event{
		ID:        uuid.Must(uuid.NewV7()).String(),
		TenantID:  e.TenantID,
		Actor:     Actor{Kind: clean(actor.Kind), ID: clean(actor.ID), Name: clean(actor.Name)},
		Action:    clean(e.Action),
		Target:    Target{Type: clean(e.Target.Type), ID: clean(e.Target.ID)},
		ClientIP:  clean(meta.ClientIP),
		UserAgent: clean(meta.UserAgent),
		RequestID: clean(meta.RequestID),
		Details:   details,
	}, nil
}

func (r *Recorder) appendEvent(ctx context.Context, tx pgx.Tx, ev *Event) error {
	if _, err := tx.Exec(ctx, lockChainSQL, ev.TenantID); err != nil {
		return db.InterpretError(err)
	}
	var h chainHead
	if err := h.scan(tx.QueryRow(ctx, headSQL, ev.TenantID)); err != nil {
		return err
	}
	if err := r.seal(ev, &h); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, insertSQL, ev.insertArgs()...)
	return db.InterpretError(err)
}

// The three statements of an append. The lock serialises a tenant's appends until the
// transaction ends; the head is read after it, by a statement of its own, so that in READ
// COMMITTED it sees the row the previous holder committed.
const (
	lockChainSQL = `select pg_advisory_xact_lock(hashtextextended('tapline.audit:' || $1::text, 0))`
	headSQL      = `select seq, row_hash, at from audit_events where tenant_id = $1 order by seq desc limit 1`
	insertSQL    = `insert into audit_events (tenant_id, seq, id, at, actor_kind, actor_id, actor_name,
			action, target_type, target_id, client_ip, user_agent, request_id, details, prev_hash, row_hash)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`
)

// chainHead is the newest event of a tenant's chain, if any.
type chainHead struct {
	seq  int64
	hash []byte
	at   time.Time
}

func (h *chainHead) scan(row pgx.Row) error {
	err := row.Scan(&h.seq, &h.hash, &h.at)
	if errors.Is(err, pgx.ErrNoRows) {
		*h = chainHead{hash: make([]byte, sha256.Size)}
		return nil
	}
	return db.InterpretError(err)
}

// seal places ev after head: its seq, its time and its hashes.
func (r *Recorder) seal(ev *Event, head *chainHead) error {
	ev.Seq = head.seq + 1
	// Time never runs backwards within a chain, whichever pod's clock recorded the event, so
	// time ranges and seq ranges agree.
	ev.At = r.now().UTC().Truncate(time.Microsecond)
	if ev.At.Before(head.at) {
		ev.At = head.at.UTC()
	}
	ev.PrevHash = head.hash
	var err error
	ev.RowHash, err = ev.computeHash()
	return err
}

func (ev *Event) insertArgs() []any {
	return []any{ev.TenantID, ev.Seq, ev.ID, ev.At, ev.Actor.Kind, ev.Actor.ID, ev.Actor.Name,
		ev.Action, ev.Target.Type, ev.Target.ID, ev.ClientIP, ev.UserAgent, ev.RequestID,
		string(ev.Details), ev.PrevHash, ev.RowHash}
}

// Pipelined is an event recorded in a transaction whose statements go to PostgreSQL in
// batches, two round trips in all: QueueHead adds the chain's lock and the read of its head
// to the first batch, which must run in an explicit transaction (begun in that batch or
// before), and after it QueueInsert adds the sealed event's insert to the second, which
// commits. The event is the caller's to return once the commit succeeded.
type Pipelined struct {
	r    *Recorder
	ev   *Event
	head chainHead
	read bool
}

// Pipeline prepares an event for a pipelined transaction (see Pipelined).
func (r *Recorder) Pipeline(ctx context.Context, e Entry) (*Pipelined, error) {
	ev, err := r.prepare(ctx, e)
	if err != nil {
		return nil, err
	}
	return &Pipelined{r: r, ev: ev}, nil
}

// QueueHead queues the lock of the tenant's chain and the read of its head.
func (p *Pipelined) QueueHead(b *pgx.Batch) {
	b.Queue(lockChainSQL, p.ev.TenantID)
	b.Queue(headSQL, p.ev.TenantID).QueryRow(func(row pgx.Row) error {
		p.read = true
		return p.head.scan(row)
	})
}

// QueueInsert seals the event after the head the first batch read and queues its insert.
func (p *Pipelined) QueueInsert(b *pgx.Batch) error {
	if !p.read {
		return errors.New("audit: QueueInsert before the head was read")
	}
	if err := p.r.seal(p.ev, &p.head); err != nil {
		return fmt.Errorf("record audit event %s: %w", p.ev.Action, err)
	}
	b.Queue(insertSQL, p.ev.insertArgs()...)
	return nil
}

// Event is the event as sealed by QueueInsert.
func (p *Pipelined) Event() *Event { return p.ev }

// hashVersion is part of every hashed document, so the hashed form can evolve.
const hashVersion = 1

// canonicalDoc is the document an event's hash covers: every column but the hashes.
func (ev *Event) canonicalDoc() ([]byte, error) {
	details, err := normalise(ev.Details)
	if err != nil {
		return nil, err
	}
	doc := map[string]any{
		"v":          json.Number(fmt.Sprint(hashVersion)),
		"id":         ev.ID,
		"tenant_id":  ev.TenantID,
		"seq":        json.Number(fmt.Sprint(ev.Seq)),
		"at":         ev.At.UTC().Format(timeLayout),
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
