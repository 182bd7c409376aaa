package inspector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/db"
)

// txHook runs inside a store method's transaction after its change, so an audit entry
// commits or rolls back with the change it records. It may be nil.
type txHook func(ctx context.Context, tx pgx.Tx) error

// runHooks runs the hooks in order, stopping at the first error.
func runHooks(ctx context.Context, tx pgx.Tx, hooks []txHook) error {
	for _, h := range hooks {
		if h == nil {
			continue
		}
		if err := h(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

// Store persists sessions, events, calls and pending requests. Every method takes the tenant
// id after the context and runs in a tenant transaction; methods used by an owner take its
// epoch and fail with db.ErrStaleEpoch when a newer owner exists.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// validID reports whether s is an id as Tapline gives them out: a UUID in its canonical,
// lower-case form. Anything else is answered as not found without a query. PostgreSQL would
// find a session by the upper-case spelling of its id too, but the tracker's leases, the
// event channels and the watchers are keyed by the id's text, so a request under another
// spelling would wait in vain for a worker (a 504) or follow a channel nobody publishes to.
func validID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

const sessionColumns = `id, tenant_id, name, status, status_error, transport, url, protocol_pref, header_names,
	has_bearer, server_info, capabilities, instructions, protocol_version, roots, logging_level, subscriptions,
	last_seq, epoch, owner_node, created_by, created_at, updated_at, closed_at`

func scanSession(row pgx.Row) (*Session, error) {
	var s Session
	var roots []byte
	if err := row.Scan(&s.ID, &s.TenantID, &s.Name, &s.Status, &s.Error, &s.Target.Transport, &s.Target.URL,
		&s.Target.ProtocolVersion, &s.Target.HeaderNames, &s.Target.HasBearerToken, &s.ServerInfo, &s.Capabilities,
		&s.Instructions, &s.ProtocolVersion, &roots, &s.LoggingLevel, &s.Subscriptions, &s.LastSeq, &s.Epoch,
		&s.OwnerNode, &s.CreatedBy, &s.CreatedAt, &s.UpdatedAt, &s.ClosedAt); err != nil {
		return nil, db.InterpretError(err)
	}
	if err := json.Unmarshal(roots, &s.Roots); err != nil {
		return nil, fmt.Errorf("decode roots: %w", err)
	}
	if s.Target.HeaderNames == nil {
		s.Target.HeaderNames = []string{}
	}
	if s.Subscriptions == nil {
		s.Subscriptions = []string{}
	}
	return &s, nil
}

// insertSessionParams is a new session row.
type insertSessionParams struct {
	ID, Name, CreatedBy string
	Target              Target
	Sealed              []byte
	Roots               []Root
	MaxLive             int
}

// insertSession stores a new connecting session, refusing it when the tenant would have
// more live sessions than its quota. The check and the insert are serialised per tenant.
func (s *Store) insertSession(ctx context.Context, tenantID string, p insertSessionParams, hooks ...txHook) (*Session, error) {
	var out *Session
	headerNames := make([]string, 0, len(p.Target.Headers))
	for k := range p.Target.Headers {
		headerNames = append(headerNames, k)
	}
	slices.Sort(headerNames)
	roots, _ := json.Marshal(nonNilRoots(p.Roots))
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockLiveSessions(ctx, tx, tenantID); err != nil {
			return err
		}
		hooks = append([]txHook{liveSessionQuota(tenantID, p.MaxLive)}, hooks...)
		var err error
		out, err = scanSession(tx.QueryRow(ctx, `insert into sessions
			(id, tenant_id, name, transport, url, protocol_pref, secrets, header_names, has_bearer, status, roots, created_by)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'connecting', $10, $11)
			returning `+sessionColumns,
			p.ID, tenantID, p.Name, p.Target.Transport, p.Target.URL, p.Target.ProtocolVersion, p.Sealed, headerNames,
			p.Target.BearerToken != "", roots, p.CreatedBy))
		if err != nil {
			return err
		}
		return runHooks(ctx, tx, hooks)
	})
	if err != nil {
		return nil, fmt.Errorf("insert session: %w", err)
	}
	return out, nil
}

// lockLiveSessions serialises, per tenant, the changes that make sessions live, so a quota
// check sees every concurrent one.
func lockLiveSessions(ctx context.Context, tx pgx.Tx, tenantID string) error {
	_, err := tx.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('live-sessions:' || $1, 0))", tenantID)
	return db.InterpretError(err)
}

// liveSessionQuota fails with ErrLiveSessionLimit when, after the change, the tenant has
// more live sessions than its quota (tenants.max_live_sessions, else defaultMax; 0 = none).
// It must run after lockLiveSessions in the same transaction.
func liveSessionQuota(tenantID string, defaultMax int) txHook {
	return func(ctx context.Context, tx pgx.Tx) error {
		var live, max int
		err := tx.QueryRow(ctx, `select
				(select count(*) from sessions where tenant_id = $1 and status in ('connecting', 'ready')),
				coalesce((select max_live_sessions from tenants where id = $1), $2)`, tenantID, defaultMax).Scan(&live, &max)
		if err != nil {
			return db.InterpretError(err)
		}
		if max > 0 && live > max {
			return fmt.Errorf("%w (%d)", ErrLiveSessionLimit, max)
		}
		return nil
	}
}

func nonNilRoots(r []Root) []Root {
	if r == nil {
		return []Root{}
	}
	return r
}

// GetSession returns one session.
func (s *Store) GetSession(ctx context.Context, tenantID, id string) (*Session, error) {
	if !validID(tenantID) || !validID(id) {
		return nil, ErrNotFound
	}
	var out *Session
	err := db.TenantQueryRow(ctx, s.pool, tenantID, func(row pgx.Row) (err error) {
		out, err = scanSession(row)
		return err
	}, `select `+sessionColumns+` from sessions where tenant_id = $1 and id = $2`, tenantID, id)
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	return out, nil
}

// sessionSecrets returns the sealed secrets of a session, for its owner.
func (s *Store) sessionSecrets(ctx context.Context, tenantID, id string) ([]byte, error) {
	var sealed []byte
	err := db.TenantQueryRow(ctx, s.pool, tenantID, func(row pgx.Row) error { return row.Scan(&sealed) },
		`select secrets from sessions where tenant_id = $1 and id = $2`, tenantID, id)
	return sealed, err
}

// ListSessionsParams selects a page of sessions, newest first.
type ListSessionsParams struct {
	Status []Status
	Limit  int
	Cursor string
}

// ListSessions pages through a tenant's sessions.
func (s *Store) ListSessions(ctx context.Context, tenantID string, p ListSessionsParams) (*Page[Session], error) {
	if !validID(tenantID) {
		return nil, ErrNotFound
	}
	limit := clampLimit(p.Limit, 50, 200)
	at, id, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	statuses := make([]string, len(p.Status))
	for i, st := range p.Status {
		statuses[i] = string(st)
	}
	page := &Page[Session]{Items: []Session{}}
	err = db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+sessionColumns+` from sessions
			where tenant_id = $1 and (cardinality($2::text[]) = 0 or status = any($2))
			  and ($3::timestamptz is null or (created_at, id) < ($3, nullif($4, '')::uuid))
			order by created_at desc, id desc limit $5`, tenantID, statuses, at, id, limit+1)
		if err != nil {
			return db.InterpretError(err)
		}
		defer rows.Close()
		for rows.Next() {
			sess, err := scanSession(rows)
			if err != nil {
				return err
			}
			page.Items = append(page.Items, *sess)
		}
		return db.InterpretError(rows.Err())
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.NextCursor = encodeCursor(last.CreatedAt, last.ID)
	}
	return page, nil
}

// setSessionStatus changes a session's status from outside the owner (close, reconnect).
// It returns the session as it is afterwards.
func (s *Store) setSessionStatus(ctx context.Context, tenantID, id string, from []Status, to Status, reason string, hooks ...txHook) (*Session, bool, error) {
	if !validID(tenantID) || !validID(id) {
		return nil, false, ErrNotFound
	}
	var out *Session
	changed := false
	fromS := make([]string, len(from))
	for i, f := range from {
		fromS[i] = string(f)
	}
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		if to.Live() {
			if err := lockLiveSessions(ctx, tx, tenantID); err != nil {
				return err
			}
		}
		var err error
		out, err = scanSession(tx.QueryRow(ctx, `update sessions set status = $3, status_error = $4, updated_at = now(),
				closed_at = case when $3 = 'closed' then now() else null end
			where tenant_id = $1 and id = $2 and status = any($5) returning `+sessionColumns, tenantID, id, to, reason, fromS))
		if errors.Is(err, db.ErrNotFound) {
			out, err = scanSession(tx.QueryRow(ctx, `select `+sessionColumns+` from sessions where tenant_id = $1 and id = $2`, tenantID, id))
			return err
		}
		changed = err == nil
		if err != nil {
			return err
		}
		return runHooks(ctx, tx, hooks)
	})
	return out, changed, err
}

// endWithSession ends what a session being closed leaves open, in the transaction that closes
// it: queued calls never reach the target, running ones lose their connection, and parked
// requests can no longer be answered. Without an owner (none alive, or the doorbell lost)
// nothing would ever end them, as a closed session gets no new owner.
//
// The same transaction records what it ended, and the close itself, as the session's events
// (endAndReport), written exactly when the close is, whether or not an owner is alive to hear
// of it. reported receives them, with their seqs, to be published once committed. The owner,
// told by the doorbell, only cancels the calls at the target: what it finds ended there it
// does not report again.
func endWithSession(tenantID, sessionID string, reported *[]Event) txHook {
	return endAndReport(tenantID, sessionID, closeEnd, map[string]any{"state": StatusClosed, "reason": "closed by request"}, reported)
}

// endAndReport is the transaction hook that ends a session's open calls and parked requests
// as how says, after the session's status changed in the same transaction, and records the
// report of the end as the session's events (see appendEventsTx): the call_result of each
// call, the pending_resolved of each request, then status. So every end, by request or by the
// owner, commits its report with itself, or neither. reported receives the events, with
// their seqs, to be published once committed.
func endAndReport(tenantID, sessionID string, how sessionEnd, status map[string]any, reported *[]Event) txHook {
	return func(ctx context.Context, tx pgx.Tx) error {
		*reported = nil
		ended := &endedWork{}
		if err := endOpenWork(tenantID, sessionID, how, ended)(ctx, tx); err != nil {
			return err
		}
		events, err := appendEventsTx(ctx, tx, tenantID, sessionID, endEvents(ended, status))
		if err != nil {
			return err
		}
		*reported = events
		return nil
	}
}

// endEvents are the events that report the end of a session: the call_result of each call it
// ended and the pending_resolved of each request it expired, then status.
func endEvents(ended *endedWork, status map[string]any) []Event {
	events := make([]Event, 0, len(ended.calls)+len(ended.pending)+1)
	add := func(typ EventType, data any) {
		raw, _ := json.Marshal(data)
		events = append(events, Event{Type: typ, At: eventTime(), Data: raw})
	}
	for i := range ended.calls {
		add(EventCallResult, callResultEvent(&ended.calls[i]))
	}
	for _, id := range ended.pending {
		add(EventPendingResolved, pendingEndedEvent(id))
	}
	add(EventStatus, status)
	return events
}

// pendingEndedEvent is the pending_resolved event of a request the end of its session expired.
func pendingEndedEvent(requestID string) map[string]any {
	return map[string]any{"request_id": requestID, "status": PendingExpired, "reason": "the session ended"}
}

// appendEventsTx appends events to a session's log in tx, which must have changed the
// session's row already: the row lock it holds orders these events after every event an
// owner committed before, and before every one it commits after, so seqs stay gapless. They
// are fenced as an owner's are (tapline_append_events), by the epoch the row has under that
// lock, so no owner's write can slip between the read and the append. It returns the events
// with their seqs; they are published once tx is committed (publishEvents), never before.
func appendEventsTx(ctx context.Context, tx pgx.Tx, tenantID, sessionID string, events []Event) ([]Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	t, err := uuid.Parse(tenantID)
	if err != nil {
		return nil, ErrNotFound
	}
	sid, err := uuid.Parse(sessionID)
	if err != nil {
		return nil, ErrNotFound
	}
	var epoch int64
	if err := tx.QueryRow(ctx, `select epoch from sessions where tenant_id = $1 and id = $2`, tenantID, sessionID).Scan(&epoch); err != nil {
		return nil, db.InterpretError(err)
	}
	n := len(events)
	tenants, sessions, epochs := make([]pgtype.UUID, n), make([]pgtype.UUID, n), make([]int64, n)
	types, datas, ats := make([]string, n), make([][]byte, n), make([]time.Time, n)
	for i, e := range events {
		tenants[i], sessions[i] = pgtype.UUID{Bytes: t, Valid: true}, pgtype.UUID{Bytes: sid, Valid: true}
		epochs[i], types[i], datas[i], ats[i] = epoch, string(e.Type), db.StorableJSON(e.Data), e.At
	}
	var first *int64
	var refused bool
	if err := tx.QueryRow(ctx, `select first_seq, refused from tapline_append_events($1, $2, $3, $4, $5, $6)`,
		tenants, sessions, epochs, types, datas, ats).Scan(&first, &refused); err != nil {
		return nil, db.InterpretError(err)
	}
	if refused || first == nil {
		return nil, db.ErrStaleEpoch
	}
	out := make([]Event, n)
	for i, e := range events {
		out[i] = Event{Seq: *first + int64(i), Type: e.Type, At: e.At, Data: datas[i]}
	}
	return out, nil
}

// sessionEnd is how the end of a session ends its open calls: queued ones, which never reached
// the target, with status queued and error queuedError; running ones, which may have, as
// interrupted with runningError (never sent again: at most once).
type sessionEnd struct {
	queued                    CallStatus
	queuedError, runningError string // JSON objects
}

// closeEnd is how a close, by request or after being idle, ends the session's calls.
var closeEnd = sessionEnd{queued: CallCancelled, queuedError: closedBeforeSent, runningError: closedWhileRunning} //nolint:gochecknoglobals // constant

// failedEnd is how a session that could not connect to its target ends its calls: they fail
// saying why, so a caller waiting for one hears of it instead of waiting for a reconnect.
func failedEnd(sessionErr string) sessionEnd {
	queued, _ := json.Marshal(map[string]string{"message": "failed: the session could not connect to its target: " + sessionErr})
	running, _ := json.Marshal(map[string]string{"message": "interrupted: the session lost its target and could not connect again: " + sessionErr})
	return sessionEnd{queued: CallFailed, queuedError: db.StorableText(string(queued)), runningError: db.StorableText(string(running))}
}

// endedWork is what the end of a session ended: its open calls as they are now, and the ids
// of the parked requests that expired.
type endedWork struct {
	calls   []Call
	pending []string
}

// sessionCallsLockSQL and sessionCallsSharedLockSQL order a session's end against calls being
// queued on it: an insert takes the shared lock in a statement before the one that checks the
// session's status, and the end takes it exclusively between its status change and the end of
// the open calls. So an insert either finds the session ended or is committed, and then ended,
// before the end goes on: no call stays queued on a session that will never dispatch it.
// The shared lock is an expression of callInsertLocksSQL, the session id its $2.
const (
	sessionCallsLockSQL       = `select pg_advisory_xact_lock(hashtextextended('tapline.session-calls:' || $1::text, 0))`
	sessionCallsSharedLockSQL = `pg_advisory_xact_lock_shared(hashtextextended('tapline.session-calls:' || $2::text, 0))`
)

// endOpenWork is the transaction hook that ends a session's open calls and parked requests as
// how says, after the session's status changed in the same transaction. ended, when not nil,
// receives what it ended.
func endOpenWork(tenantID, sessionID string, how sessionEnd, ended *endedWork) txHook {
	return func(ctx context.Context, tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(sessionCallsLockSQL, sessionID)
		b.Queue(`update session_calls set
				status = case status when 'queued' then $3 else 'interrupted' end,
				error = case status when 'queued' then $4::jsonb else $5::jsonb end,
				finished_at = now(), updated_at = now()
			where tenant_id = $1 and session_id = $2 and status in ('queued', 'running')
			returning `+callColumns,
			tenantID, sessionID, string(how.queued), how.queuedError, how.runningError).Query(func(rows pgx.Rows) (err error) {
			calls, err := collectRows(rows, scanCall)
			if ended != nil {
				ended.calls = calls
			}
			return err
		})
		b.Queue(`update pending_requests set status = 'expired', answered_at = now()
			where tenant_id = $1 and session_id = $2 and status = 'pending' returning id`, tenantID, sessionID).Query(func(rows pgx.Rows) (err error) {
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if ended != nil {
				ended.pending = ids
			}
			return db.InterpretError(err)
		})
		return db.InterpretError(tx.SendBatch(ctx, b).Close())
	}
}

// The errors of the calls a close ends.
const (
	closedBeforeSent   = `{"message":"cancelled: the session was closed before the call was sent"}`
	closedWhileRunning = `{"message":"interrupted: the session was closed while the call ran"}`
)

// endSessionAsOwner moves a live session to status to (closed or error) with reason, for its
// owner with epoch, ends what it leaves open as how says and records the end's report, status
// last (endAndReport), in one transaction: an owner that dies once it committed leaves
// nothing of the end unreported. It returns the report's events, with their seqs, to be
// published; nil when the session was not live any more (closed meanwhile by request, which
// reported its own end); or db.ErrStaleEpoch when a newer owner exists, having written
// nothing.
func (s *Store) endSessionAsOwner(ctx context.Context, tenantID, id string, epoch int64, to Status, reason string, how sessionEnd, status map[string]any) ([]Event, error) {
	var reported []Event
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		reported = nil
		var cur int64
		var st Status
		// No key update: a call being inserted holds a key share lock on the session (its
		// foreign key) while the end waits for it (sessionCallsLockSQL).
		if err := tx.QueryRow(ctx, `select epoch, status from sessions where tenant_id = $1 and id = $2 for no key update`,
			tenantID, id).Scan(&cur, &st); err != nil {
			return db.InterpretError(err)
		}
		if cur != epoch {
			return db.ErrStaleEpoch
		}
		if !st.Live() {
			return nil
		}
		if _, err := tx.Exec(ctx, `update sessions set status = $3, status_error = $4, updated_at = now(),
				closed_at = case when $3 = 'closed' then now() else null end
			where tenant_id = $1 and id = $2`, tenantID, id, to, db.StorableText(reason)); err != nil {
			return db.InterpretError(err)
		}
		return endAndReport(tenantID, id, how, status, &reported)(ctx, tx)
	})
	if err != nil {
		return nil, err
	}
	return reported, nil
}

// OwnerUpdate is what an owner records about its connection.
type OwnerUpdate struct {
	Status          *Status
	Error           *string
	ServerInfo      json.RawMessage
	Capabilities    json.RawMessage
	Instructions    *string
	ProtocolVersion *string
	Roots           []Root
	LoggingLevel    *string
}

// errSessionEnded refuses an owner's change of its session's status once the session is no
// longer live: closed by request, which the owner's write must not undo.
var errSessionEnded = errors.New("the session is no longer live")

// updateAsOwner applies u if epoch is still the session's epoch, else db.ErrStaleEpoch. A
// change of status (to connecting or ready: the owner's connection) applies only while the
// session is live, else errSessionEnded: a close that commits while the owner connects is
// not undone, whichever of the two PostgreSQL takes first. What the target sent (server info, capabilities, instructions, protocol version, an error
// describing it) is made storable first: PostgreSQL would refuse a U+0000 in any of them.
func (s *Store) updateAsOwner(ctx context.Context, tenantID, id string, epoch int64, u OwnerUpdate) error {
	sets := []string{"updated_at = now()"}
	args := []any{tenantID, id, epoch}
	add := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, col+" = $"+strconv.Itoa(len(args)))
	}
	if u.Status != nil {
		add("status", *u.Status)
	}
	if u.Error != nil {
		add("status_error", db.StorableText(*u.Error))
	}
	if u.ServerInfo != nil {
		add("server_info", db.StorableJSON(u.ServerInfo))
	}
	if u.Capabilities != nil {
		add("capabilities", db.StorableJSON(u.Capabilities))
	}
	if u.Instructions != nil {
		add("instructions", db.StorableText(*u.Instructions))
	}
	if u.ProtocolVersion != nil {
		add("protocol_version", db.StorableText(*u.ProtocolVersion))
	}
	if u.Roots != nil {
		b, _ := json.Marshal(u.Roots)
		add("roots", b)
	}
	if u.LoggingLevel != nil {
		add("logging_level", *u.LoggingLevel)
	}
	live := ""
	if u.Status != nil {
		live = ` and status in ('connecting', 'ready')`
	}
	return db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update sessions set `+strings.Join(sets, ", ")+
			` where tenant_id = $1 and id = $2 and epoch = $3`+live, args...)
		if err != nil {
			return db.InterpretError(err)
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		if live != "" {
			var cur int64
			if err := tx.QueryRow(ctx, `select epoch from sessions where tenant_id = $1 and id = $2`, tenantID, id).Scan(&cur); err != nil {
				return db.InterpretError(err)
			}
			if cur == epoch {
				return errSessionEnded
			}
		}
		return db.ErrStaleEpoch
	})
}

// recordSubscription adds uri to the session's subscriptions (once) or removes it, if
// epoch is still the session's epoch, else db.ErrStaleEpoch. One statement edits the stored
// list, so concurrent subscribes on the owner each keep theirs.
func (s *Store) recordSubscription(ctx context.Context, tenantID, id string, epoch int64, uri string, subscribed bool) error {
	set := `subscriptions = array_remove(subscriptions, $4::text)`
	if subscribed {
		set = `subscriptions = case when $4::text = any(subscriptions) then subscriptions else array_append(subscriptions, $4::text) end`
	}
	return db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update sessions set `+set+`, updated_at = now()
			where tenant_id = $1 and id = $2 and epoch = $3`, tenantID, id, epoch, uri)
		if err != nil {
			return db.InterpretError(err)
		}
		if tag.RowsAffected() == 0 {
			return db.ErrStaleEpoch
		}
		return nil
	})
}

// adoptSession records a new owner with its lease epoch, which must exceed the stored one.
// It returns the session as the new owner sees it, or db.ErrStaleEpoch when a newer owner
// already adopted it, or ErrNotReady when it is no longer live.
func (s *Store) adoptSession(ctx context.Context, tenantID, id string, epoch int64, node string) (*Session, error) {
	var out *Session
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanSession(tx.QueryRow(ctx, `update sessions set epoch = $3, owner_node = $4, updated_at = now()
			where tenant_id = $1 and id = $2 and epoch < $3 and status in ('connecting', 'ready')
			returning `+sessionColumns, tenantID, id, epoch, node))
		if errors.Is(err, db.ErrNotFound) {
			var status Status
			var cur int64
			if err := tx.QueryRow(ctx, `select status, epoch from sessions where tenant_id = $1 and id = $2`, tenantID, id).Scan(&status, &cur); err != nil {
				return db.InterpretError(err)
			}
			if !status.Live() {
				return ErrNotReady
			}
			return db.ErrStaleEpoch
		}
		return err
	})
	return out, err
}

// releaseOwnership clears owner_node so other workers pick the session up at once (drain).
func (s *Store) releaseOwnership(ctx context.Context, tenantID, id string, epoch int64) error {
	return db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `update sessions set owner_node = '' where tenant_id = $1 and id = $2 and epoch = $3`, tenantID, id, epoch)
		return db.InterpretError(err)
	})
}

// liveSession is a discovery row.
type liveSession struct {
	TenantID, ID, OwnerNode string
	Epoch                   int64
}

// liveSessions lists sessions that should have an owner, across tenants.
func (s *Store) liveSessions(ctx context.Context, limit int) ([]liveSession, error) {
	rows, err := s.pool.Query(ctx, `select tenant_id, id, epoch, owner_node from tapline_live_sessions($1)`, limit)
	if err != nil {
		return nil, db.InterpretError(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (liveSession, error) {
		var l liveSession
		err := r.Scan(&l.TenantID, &l.ID, &l.Epoch, &l.OwnerNode)
		return l, err
	})
	return out, db.InterpretError(err)
}

// EventsParams selects events after a seq.
type EventsParams struct {
	AfterSeq int64
	Limit    int
	Types    []EventType
}

// SeqRange is the seqs From to To, both included; the zero value is empty.
type SeqRange struct {
	From, To int64
}

// Empty reports whether the range holds no seq.
func (r SeqRange) Empty() bool { return r.From < 1 || r.To < r.From }

// String is the range as "from-to", the form the event stream and the events page name it in.
func (r SeqRange) String() string {
	return strconv.FormatInt(r.From, 10) + "-" + strconv.FormatInt(r.To, 10)
}

// EventPage is a page of a session's events and what was deleted right before it.
type EventPage struct {
	Events []Event
	// Deleted is the seqs right after the page's AfterSeq whose events are gone: seqs have
	// no gaps and rows are immutable, so a committed seq missing from the table was deleted
	// by retention. It runs up to the first event kept, or to the session's last seq when
	// none after AfterSeq is kept; it is empty when the event after AfterSeq is kept or not
	// written yet.
	Deleted SeqRange
}

// Events returns a session's events after p.AfterSeq, in seq order.
func (s *Store) Events(ctx context.Context, tenantID, sessionID string, p EventsParams) ([]Event, error) {
	page, err := s.EventPage(ctx, tenantID, sessionID, p)
	return page.Events, err
}

// EventPage returns a session's events after p.AfterSeq, in seq order, and the range of
// seqs right after p.AfterSeq that retention deleted. The range is read before the events,
// in a statement of its own (a snapshot of its own), so it never names an event the page
// holds: a purge between the two statements only makes the page start later than the range
// ends, which a reader sees from the seqs.
func (s *Store) EventPage(ctx context.Context, tenantID, sessionID string, p EventsParams) (EventPage, error) {
	var out EventPage
	if !validID(tenantID) || !validID(sessionID) {
		return out, ErrNotFound
	}
	limit := clampLimit(p.Limit, 100, 1000)
	types := make([]string, len(p.Types))
	for i, t := range p.Types {
		types[i] = string(t)
	}
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var lastSeq int64
		var firstKept *int64
		err := tx.QueryRow(ctx, `select s.last_seq, (select min(e.seq) from session_events e
				where e.tenant_id = s.tenant_id and e.session_id = s.id and e.seq > $3)
			from sessions s where s.tenant_id = $1 and s.id = $2`, tenantID, sessionID, p.AfterSeq).Scan(&lastSeq, &firstKept)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return db.InterpretError(err)
		}
		out.Deleted = deletedAfter(p.AfterSeq, lastSeq, firstKept)
		rows, err := tx.Query(ctx, `select seq, type, at, data from session_events
			where tenant_id = $1 and session_id = $2 and seq > $3 and (cardinality($4::text[]) = 0 or type = any($4))
			order by seq limit $5`, tenantID, sessionID, p.AfterSeq, types, limit)
		if err != nil {
			return db.InterpretError(err)
		}
		out.Events, err = pgx.CollectRows(rows, scanEvent)
		return db.InterpretError(err)
	})
	if err != nil {
		return EventPage{}, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// deletedAfter is the range of seqs after afterSeq that were committed (up to lastSeq) but
// are no longer kept (before firstKept, the first kept after afterSeq; nil when none is).
func deletedAfter(afterSeq, lastSeq int64, firstKept *int64) SeqRange {
	to := lastSeq
	if firstKept != nil {
		to = *firstKept - 1
	}
	if to <= afterSeq {
		return SeqRange{}
	}
	return SeqRange{From: afterSeq + 1, To: to}
}

func scanEvent(r pgx.CollectableRow) (Event, error) {
	var e Event
	var data []byte
	err := r.Scan(&e.Seq, &e.Type, &e.At, &data)
	e.Data = data
	return e, err
}

// ExportEvents streams every event of a session in seq order to fn, in pages, so memory stays
// bounded for any history length.
func (s *Store) ExportEvents(ctx context.Context, tenantID, sessionID string, fn func(Event) error) error {
	after := int64(0)
	for {
		page, err := s.Events(ctx, tenantID, sessionID, EventsParams{AfterSeq: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(page) < 1000 {
			return nil
		}
	}
}

const callColumns = `id, session_id, name, arguments, status, progress, result, error, created_by, created_at, finished_at`

func scanCall(row pgx.Row) (*Call, error) { return scanCallWith(row, nil, nil) }

// scanCallWith scans a call whose columns come between the given leading and trailing ones.
func scanCallWith(row pgx.Row, leading, trailing []any) (*Call, error) {
	var c Call
	var progress []byte
	dest := make([]any, 0, len(leading)+11+len(trailing))
	dest = append(dest, leading...)
	dest = append(dest, &c.ID, &c.SessionID, &c.Name, &c.Arguments, &c.Status, &progress, &c.Result, &c.Error,
		&c.CreatedBy, &c.CreatedAt, &c.FinishedAt)
	dest = append(dest, trailing...)
	if err := row.Scan(dest...); err != nil {
		return nil, db.InterpretError(err)
	}
	if progress != nil {
		c.Progress = &Progress{}
		if err := json.Unmarshal(progress, c.Progress); err != nil {
			return nil, fmt.Errorf("decode progress: %w", err)
		}
	}
	return &c, nil
}

// insertCall queues a tool call on a ready session, with its audit event when audited is
// not nil, in one round trip: the insert and the event's append are one statement, so the
// event is written exactly when the call is, and the inserted row comes back from it.
//
// When a call with id exists already (ids derived from an Idempotency-Key), the same request
// returns it with existing set, and a different one is ErrConflict. Telling that, or a
// missing or unready session, apart costs a second round trip.
func (s *Store) insertCall(ctx context.Context, tenantID, sessionID, id, name string, args json.RawMessage, createdBy string, audited *audit.Pipelined) (out *Call, existing bool, err error) {
	if !validID(tenantID) || !validID(sessionID) {
		return nil, false, ErrNotFound
	}
	insert := `with ins as (
			insert into session_calls (id, tenant_id, session_id, name, arguments, status, created_by)
			select $1, $2, $3, $4, $5, 'queued', $6 from sessions
			where tenant_id = $2 and id = $3 and status = 'ready'
			on conflict (id) do nothing
			returning ` + callColumns + `)
		select ` + prefixed("ins.", callColumns) + ` from ins`
	insertArgs := []any{id, tenantID, sessionID, name, args, createdBy}
	if audited != nil {
		insert += ` cross join lateral ` + audited.Call(len(insertArgs)+1) + ` a`
		insertArgs = append(insertArgs, audited.Args()...)
	}
	b := &pgx.Batch{}
	// The owner is rung while this batch runs (Service.StartCall); its claim waits on this
	// lock, which the transaction holds until its insert is committed or gone.
	b.Queue(callInsertLocksSQL, id, sessionID)
	b.Queue(insert, insertArgs...).QueryRow(func(row pgx.Row) (err error) {
		out, err = scanCall(row)
		if errors.Is(err, db.ErrNotFound) {
			return nil // not inserted: see below
		}
		return err
	})
	if err := db.TenantBatch(ctx, s.pool, tenantID, b); err != nil {
		return nil, false, err
	}
	if out != nil {
		return out, false, nil
	}
	var status *Status
	var prior *Call
	var same bool
	b = &pgx.Batch{}
	b.Queue(`select status from sessions where tenant_id = $1 and id = $2`, tenantID, sessionID).QueryRow(func(row pgx.Row) error {
		var st Status
		if err := row.Scan(&st); err != nil {
			return db.InterpretError(err)
		}
		status = &st
		return nil
	})
	// The call an earlier request with the same Idempotency-Key inserted, with whether it
	// asked for the same thing.
	b.Queue(`select `+callColumns+`, name = $4 and arguments = $5::jsonb from session_calls
		where tenant_id = $1 and session_id = $2 and id = $3`, tenantID, sessionID, id, name, args).QueryRow(func(row pgx.Row) error {
		c, err := scanCallWith(row, nil, []any{&same})
		if errors.Is(err, db.ErrNotFound) {
			return nil
		}
		prior = c
		return err
	})
	if err := db.TenantBatch(ctx, s.pool, tenantID, b); err != nil {
		if errors.Is(err, db.ErrNotFound) {
			err = ErrNotFound
		}
		return nil, false, err
	}
	switch {
	case prior != nil && same:
		// A retry of a call accepted earlier, whatever the session's status now.
		return prior, true, nil
	case prior != nil:
		return nil, false, fmt.Errorf("%w: the Idempotency-Key was used for a different call", ErrConflict)
	case status == nil:
		return nil, false, ErrNotFound
	default:
		return nil, false, fmt.Errorf("%w: it is %s", ErrNotReady, *status)
	}
}

// GetCall returns one call.
func (s *Store) GetCall(ctx context.Context, tenantID, sessionID, callID string) (*Call, error) {
	if !validID(tenantID) || !validID(sessionID) || !validID(callID) {
		return nil, ErrNotFound
	}
	var out *Call
	err := db.TenantQueryRow(ctx, s.pool, tenantID, func(row pgx.Row) (err error) {
		out, err = scanCall(row)
		return err
	}, `select `+callColumns+` from session_calls where tenant_id = $1 and session_id = $2 and id = $3`, tenantID, sessionID, callID)
	if err != nil {
		return nil, fmt.Errorf("get call: %w", err)
	}
	return out, nil
}

// ListCalls returns a session's calls, newest first.
func (s *Store) ListCalls(ctx context.Context, tenantID, sessionID string, limit int) ([]Call, error) {
	if !validID(tenantID) || !validID(sessionID) {
		return nil, ErrNotFound
	}
	var out []Call
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+callColumns+` from session_calls where tenant_id = $1 and session_id = $2
			order by created_at desc limit $3`, tenantID, sessionID, clampLimit(limit, 50, 500))
		if err != nil {
			return db.InterpretError(err)
		}
		out, err = collectRows(rows, scanCall)
		return db.InterpretError(err)
	})
	return out, err
}

// callLockSQL takes a call's lock for the inserting transaction, callClaimLockSQL waits for
// it: the doorbell for a new call is rung while the call's row is being inserted, and the
// owner's claim must see that row once it is committed rather than miss it by a few
// hundred microseconds. Advisory locks go after the commit is visible, so the claim's
// next statement, with a fresh snapshot, finds the row.
// callInsertLocksSQL takes it with the session's shared lock (sessionCallsSharedLockSQL) in
// one statement.
const (
	callLockSQL        = `pg_advisory_xact_lock(hashtextextended('tapline.call:' || $1::text, 0))`
	callInsertLocksSQL = `select ` + callLockSQL + `, ` + sessionCallsSharedLockSQL
	callClaimLockSQL   = `select pg_advisory_xact_lock_shared(hashtextextended('tapline.call:' || $1::text, 0))`
)

// startCall moves a queued call to running for the owner with epoch. It reports false when
// the call is not queued any more (already dispatched, cancelled), so a command delivered
// twice dispatches once, and ErrNotFound when there is no such call (yet: see callLockSQL).
//
// One round trip when the call starts: the wait for an insert in progress and the fenced
// update, which returns the call. When nothing was updated, a second one tells the cases
// apart (ownedCall).
func (s *Store) startCall(ctx context.Context, tenantID, sessionID, callID string, epoch int64) (*Call, bool, error) {
	for attempt := 1; ; attempt++ {
		var out *Call
		b := &pgx.Batch{}
		b.Queue(callClaimLockSQL, callID)
		b.Queue(`update session_calls c set status = 'running', epoch = $4, updated_at = now()
			from sessions s
			where c.tenant_id = $1 and c.session_id = $2 and c.id = $3 and c.status = 'queued'
			  and s.tenant_id = c.tenant_id and s.id = c.session_id and s.epoch = $4
			returning `+prefixed("c.", callColumns), tenantID, sessionID, callID, epoch).QueryRow(scanUpdated(&out))
		if err := db.TenantBatch(ctx, s.pool, tenantID, b); err != nil {
			return nil, false, err
		}
		if out != nil {
			return out, true, nil
		}
		out, err := s.ownedCall(ctx, tenantID, sessionID, callID, epoch)
		if err != nil || out.Status != CallQueued || attempt == 3 {
			return out, false, err
		}
		// Queued after all: its insert committed between the two round trips (the claim
		// took the lock before the inserting transaction did). Claim it again; past a few
		// tries, the sweep will.
	}
}

// scanUpdated scans the call an owner's update returned into out, leaving it nil when the
// update matched nothing.
func scanUpdated(out **Call) func(pgx.Row) error {
	return func(row pgx.Row) (err error) {
		*out, err = scanCall(row)
		if errors.Is(err, db.ErrNotFound) {
			return nil
		}
		return err
	}
}

// ownedCall reads a call after an owner's fenced write to it matched nothing: the call as
// it is, or db.ErrStaleEpoch when the session has a newer owner, or ErrNotFound.
func (s *Store) ownedCall(ctx context.Context, tenantID, sessionID, callID string, epoch int64) (*Call, error) {
	var cur int64
	var out *Call
	err := db.TenantQueryRow(ctx, s.pool, tenantID, func(row pgx.Row) (err error) {
		out, err = scanCallWith(row, []any{&cur}, nil)
		return err
	}, `select s.epoch, `+prefixed("c.", callColumns)+` from sessions s
		join session_calls c on c.tenant_id = s.tenant_id and c.session_id = s.id and c.id = $3
		where s.tenant_id = $1 and s.id = $2`, tenantID, sessionID, callID)
	if err != nil {
		return nil, err
	}
	if cur != epoch {
		return nil, db.ErrStaleEpoch
	}
	return out, nil
}

// prefixed qualifies each column of a column list.
func prefixed(qualifier, columns string) string {
	parts := strings.Split(columns, ",")
	for i, p := range parts {
		parts[i] = qualifier + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

// callUpdate is an owner's change to a call.
type callUpdate struct {
	Status   CallStatus
	Progress *Progress
	Result   json.RawMessage
	Error    json.RawMessage
}

// updateCallAsOwner records progress or the end of a running call, fenced by epoch, and
// returns the call as it is afterwards, with whether the update applied. Ending a call that
// already ended (by the end of its session meanwhile) changes nothing, and whoever ended it
// reports it. Progress only ever goes up, as MCP requires of it, and is recorded after the
// end too: a server's last notifications/progress is often handled after the result it
// preceded, and a progress write that overtook an earlier one must not undo it. One round
// trip when the update applies, as startCall. The progress, result and error hold what the
// target sent, made storable.
func (s *Store) updateCallAsOwner(ctx context.Context, tenantID, sessionID, callID string, epoch int64, u callUpdate) (*Call, bool, error) {
	var progress []byte
	if u.Progress != nil {
		progress, _ = json.Marshal(u.Progress)
		progress = db.StorableJSON(progress)
	}
	var out *Call
	b := &pgx.Batch{}
	b.Queue(`update session_calls c set
			status = case when $5 = '' then c.status else $5 end,
			progress = coalesce($6, c.progress), result = coalesce($7, c.result), error = coalesce($8, c.error),
			finished_at = case when $5 in ('succeeded', 'failed', 'cancelled', 'interrupted') then now() else c.finished_at end,
			updated_at = now()
		from sessions s
		where c.tenant_id = $1 and c.session_id = $2 and c.id = $3
		  and (c.status in ('queued', 'running') or ($5 = '' and $6::jsonb is not null))
		  and ($6::jsonb is null or c.progress is null
		       or (c.progress->>'progress')::float8 < ($6::jsonb->>'progress')::float8)
		  and s.tenant_id = c.tenant_id and s.id = c.session_id and s.epoch = $4
		returning `+prefixed("c.", callColumns),
		tenantID, sessionID, callID, epoch, string(u.Status), progress,
		nullJSON(db.StorableJSON(u.Result)), nullJSON(db.StorableJSON(u.Error))).QueryRow(scanUpdated(&out))
	if err := db.TenantBatch(ctx, s.pool, tenantID, b); err != nil {
		return nil, false, err
	}
	if out != nil {
		return out, true, nil
	}
	out, err := s.ownedCall(ctx, tenantID, sessionID, callID, epoch)
	return out, false, err
}

// unreportedCalls returns the calls an earlier owner (epoch before epoch) finished recently
// without its call_result event reaching the log: the call's row and its event are separate
// writes, and a worker killed between the two leaves the event out.
func (s *Store) unreportedCalls(ctx context.Context, tenantID, sessionID string, epoch int64) ([]Call, error) {
	var out []Call
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		// Bounded by time on both sides, so the look-up uses (tenant_id, at) and stays small
		// however long the session's history; the margin absorbs clock skew between workers
		// and the database.
		rows, err := tx.Query(ctx, `select `+callColumns+` from session_calls c
			where c.tenant_id = $1 and c.session_id = $2 and c.epoch > 0 and c.epoch < $3
			  and c.status in ('succeeded', 'failed', 'cancelled', 'interrupted')
			  and c.finished_at > now() - interval '15 minutes'
			  and not exists (select 1 from session_events e
			      where e.tenant_id = c.tenant_id and e.at >= c.created_at - interval '5 minutes'
			        and e.session_id = c.session_id and e.type = 'call_result' and e.data->>'call_id' = c.id::text)
			order by c.finished_at`, tenantID, sessionID, epoch)
		if err != nil {
			return db.InterpretError(err)
		}
		out, err = collectRows(rows, scanCall)
		return db.InterpretError(err)
	})
	return out, err
}

// cancelQueuedCall cancels a call that has not been dispatched yet; it reports whether it did.
// The same transaction records the call's call_result as the session's event
// (appendEventsTx), so the history and the session's followers see how the call ended, as
// they do for every other end; the event is returned, with its seq, to be published once
// committed. The session's row is locked first, as the end of a session locks it before its
// calls, so the two never wait on each other in opposite orders.
func (s *Store) cancelQueuedCall(ctx context.Context, tenantID, sessionID, callID string, hooks ...txHook) (bool, []Event, error) {
	var done bool
	var reported []Event
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		done, reported = false, nil
		if _, err := tx.Exec(ctx, `select 1 from sessions where tenant_id = $1 and id = $2 for no key update`, tenantID, sessionID); err != nil {
			return db.InterpretError(err)
		}
		row := tx.QueryRow(ctx, `update session_calls set status = 'cancelled', finished_at = now(), updated_at = now(),
			error = '{"message":"cancelled before it was sent"}'
			where tenant_id = $1 and session_id = $2 and id = $3 and status = 'queued'
			returning `+callColumns, tenantID, sessionID, callID)
		call, err := scanCall(row)
		if errors.Is(err, db.ErrNotFound) {
			return nil // dispatched, or ended, meanwhile
		}
		if err != nil {
			return err
		}
		done = true
		raw, _ := json.Marshal(callResultEvent(call))
		if reported, err = appendEventsTx(ctx, tx, tenantID, sessionID, []Event{{Type: EventCallResult, At: eventTime(), Data: raw}}); err != nil {
			return err
		}
		return runHooks(ctx, tx, hooks)
	})
	if err != nil {
		return false, nil, err
	}
	return done, reported, nil
}

// openCalls lists a session's queued and running calls.
func (s *Store) openCalls(ctx context.Context, tenantID, sessionID string) ([]Call, error) {
	var out []Call
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+callColumns+` from session_calls where tenant_id = $1 and session_id = $2
			and status in ('queued', 'running') order by created_at`, tenantID, sessionID)
		if err != nil {
			return db.InterpretError(err)
		}
		out, err = collectRows(rows, scanCall)
		return db.InterpretError(err)
	})
	return out, err
}

const pendingColumns = `id, session_id, kind, params, status, answer, answered_by, created_at, expires_at, answered_at,
	coalesce(call_id::text, ''), coalesce(input_key, ''), coalesce(request_state, '')`

func scanPending(row pgx.Row) (*Pending, error) {
	var p Pending
	if err := row.Scan(&p.RequestID, &p.SessionID, &p.Kind, &p.Params, &p.Status, &p.Answer, &p.AnsweredBy,
		&p.CreatedAt, &p.ExpiresAt, &p.AnsweredAt, &p.CallID, &p.inputKey, &p.requestState); err != nil {
		return nil, db.InterpretError(err)
	}
	return &p, nil
}

// inputRound returns the input requests of a call's latest round, oldest first.
func (s *Store) inputRound(ctx context.Context, tenantID, sessionID, callID string) ([]Pending, error) {
	var out []Pending
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+pendingColumns+` from pending_requests
			where tenant_id = $1 and session_id = $2 and call_id = $3 and kind = 'input_required'
			  and request_state = (select request_state from pending_requests
			      where tenant_id = $1 and session_id = $2 and call_id = $3 and kind = 'input_required'
			      order by created_at desc limit 1)
			order by created_at`, tenantID, sessionID, callID)
		if err != nil {
			return db.InterpretError(err)
		}
		out, err = collectRows(rows, scanPending)
		return db.InterpretError(err)
	})
	return out, err
}

// pendingInput ties a parked request to a multi round-trip tool call.
type pendingInput struct {
	CallID, Key, RequestState string
}

// insertPending parks a server→client request, fenced by the owner's epoch. The params,
// input key and request state come from the target, and are made storable.
func (s *Store) insertPending(ctx context.Context, tenantID, sessionID string, epoch int64, kind PendingKind, params json.RawMessage, expires time.Time, in *pendingInput) (*Pending, error) {
	var out *Pending
	var callID, key, state string
	if in != nil {
		callID, key, state = in.CallID, db.StorableText(in.Key), db.StorableText(in.RequestState)
	}
	params = db.StorableJSON(params)
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanPending(tx.QueryRow(ctx, `insert into pending_requests
				(id, tenant_id, session_id, kind, params, status, epoch, call_id, input_key, request_state, expires_at)
			select $1, $2, $3, $4, $5, 'pending', $6, nullif($7, '')::uuid, nullif($8, ''), nullif($9, ''), $10
			from sessions where tenant_id = $2 and id = $3 and epoch = $6
			returning `+pendingColumns, newID(), tenantID, sessionID, kind, params, epoch, callID, key, state, expires))
		if errors.Is(err, db.ErrNotFound) {
			return db.ErrStaleEpoch
		}
		return err
	})
	return out, err
}

// ListPending returns a session's parked requests, oldest first; statuses filters (none = all).
func (s *Store) ListPending(ctx context.Context, tenantID, sessionID string, statuses []PendingStatus) ([]Pending, error) {
	if !validID(tenantID) || !validID(sessionID) {
		return nil, ErrNotFound
	}
	st := make([]string, len(statuses))
	for i, x := range statuses {
		st[i] = string(x)
	}
	var out []Pending
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `select exists(select 1 from sessions where tenant_id = $1 and id = $2)`, tenantID, sessionID).Scan(&exists); err != nil {
			return db.InterpretError(err)
		}
		if !exists {
			return ErrNotFound
		}
		rows, err := tx.Query(ctx, `select `+pendingColumns+` from pending_requests
			where tenant_id = $1 and session_id = $2 and (cardinality($3::text[]) = 0 or status = any($3))
			order by created_at limit 500`, tenantID, sessionID, st)
		if err != nil {
			return db.InterpretError(err)
		}
		out, err = collectRows(rows, scanPending)
		return db.InterpretError(err)
	})
	if err != nil {
		return nil, fmt.Errorf("list pending: %w", err)
	}
	return out, nil
}

// GetPending returns one parked request.
func (s *Store) GetPending(ctx context.Context, tenantID, sessionID, requestID string) (*Pending, error) {
	if !validID(tenantID) || !validID(sessionID) || !validID(requestID) {
		return nil, ErrNotFound
	}
	var out *Pending
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanPending(tx.QueryRow(ctx, `select `+pendingColumns+` from pending_requests where tenant_id = $1 and session_id = $2 and id = $3`,
			tenantID, sessionID, requestID))
		return err
	})
	return out, err
}

// resolvePending moves a pending request to a final status; it reports false when it was no
// longer pending (answered by someone else, expired).
func (s *Store) resolvePending(ctx context.Context, tenantID, sessionID, requestID string, status PendingStatus, answer json.RawMessage, by string, hooks ...txHook) (*Pending, bool, error) {
	var out *Pending
	changed := false
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanPending(tx.QueryRow(ctx, `update pending_requests set status = $4, answer = $5, answered_by = $6, answered_at = now()
			where tenant_id = $1 and session_id = $2 and id = $3 and status = 'pending' returning `+pendingColumns,
			tenantID, sessionID, requestID, status, nullJSON(answer), by))
		if errors.Is(err, db.ErrNotFound) {
			out, err = scanPending(tx.QueryRow(ctx, `select `+pendingColumns+` from pending_requests where tenant_id = $1 and session_id = $2 and id = $3`,
				tenantID, sessionID, requestID))
			return err
		}
		changed = err == nil
		if err != nil {
			return err
		}
		return runHooks(ctx, tx, hooks)
	})
	return out, changed, err
}

// expirePendingAsOwner expires a pending request for the session's owner with epoch, fenced:
// it fails with db.ErrStaleEpoch when a newer owner exists, and reports false when the request
// was no longer pending.
func (s *Store) expirePendingAsOwner(ctx context.Context, tenantID, sessionID, requestID string, epoch int64) (*Pending, bool, error) {
	var out *Pending
	changed := false
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var cur int64
		// FOR SHARE orders this against a takeover's epoch bump.
		if err := tx.QueryRow(ctx, `select epoch from sessions where tenant_id = $1 and id = $2 for share`, tenantID, sessionID).Scan(&cur); err != nil {
			return db.InterpretError(err)
		}
		if cur != epoch {
			return db.ErrStaleEpoch
		}
		var err error
		out, err = scanPending(tx.QueryRow(ctx, `update pending_requests set status = 'expired', answered_at = now()
			where tenant_id = $1 and session_id = $2 and id = $3 and status = 'pending' returning `+pendingColumns,
			tenantID, sessionID, requestID))
		if errors.Is(err, db.ErrNotFound) {
			out, err = scanPending(tx.QueryRow(ctx, `select `+pendingColumns+` from pending_requests where tenant_id = $1 and session_id = $2 and id = $3`,
				tenantID, sessionID, requestID))
			return err
		}
		changed = err == nil
		return err
	})
	return out, changed, err
}

// expireOldPending expires the pending requests that belong to epochs before epoch (the dead
// connection's), returning their ids.
func (s *Store) expireOldPending(ctx context.Context, tenantID, sessionID string, epoch int64) ([]string, error) {
	var ids []string
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		// Input requests of a multi round-trip call carry their own state and stay answerable.
		rows, err := tx.Query(ctx, `update pending_requests set status = 'expired', answered_at = now()
			where tenant_id = $1 and session_id = $2 and status = 'pending' and epoch < $3 and kind <> 'input_required'
			returning id`, tenantID, sessionID, epoch)
		if err != nil {
			return db.InterpretError(err)
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return db.InterpretError(err)
	})
	return ids, err
}

// collectRows reads every row with scan, the single-row scanner of a type, so one scanner
// serves both Get and List queries.
func collectRows[T any](rows pgx.Rows, scan func(pgx.Row) (*T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, db.InterpretError(rows.Err())
}

func nullJSON(b json.RawMessage) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func clampLimit(n, def, max int) int {
	switch {
	case n <= 0:
		return def
	case n > max:
		return max
	}
	return n
}

func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(at.UTC().Format(time.RFC3339Nano) + "|" + id))
}

func decodeCursor(s string) (*time.Time, string, error) {
	if s == "" {
		return nil, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	bad := &ValidationError{Field: "cursor", Reason: "not a cursor this listing issued"}
	if err != nil {
		return nil, "", bad
	}
	ts, id, ok := strings.Cut(string(b), "|")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || !validID(id) {
		return nil, "", bad
	}
	return &at, id, nil
}

// setRootsOffline stores roots for a session nobody holds; the next owner applies them.
func (s *Store) setRootsOffline(ctx context.Context, tenantID, sessionID string, roots []Root, hooks ...txHook) error {
	b, _ := json.Marshal(nonNilRoots(roots))
	return db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update sessions set roots = $3, updated_at = now() where tenant_id = $1 and id = $2`, tenantID, sessionID, b)
		if err == nil && tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		if err != nil {
			return db.InterpretError(err)
		}
		return runHooks(ctx, tx, hooks)
	})
}
