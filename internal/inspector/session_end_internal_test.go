package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/tracker"
)

// Closing a session after being idle ends what it leaves open as a close by request does:
// the queued call is cancelled before it was sent, the call an earlier owner left running
// is interrupted, the parked request nobody waits for here expires, each reported before
// the close. The other tenant's session keeps its own.
func TestIdleCloseEndsTheSessionsCallsAndRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	mineTenant, mine := s.tenant(1)
	theirTenant, theirs := s.tenant(1)
	insertCall := func(tenantID, sessionID string, status CallStatus) string {
		t.Helper()
		id := newID()
		if _, err := s.d.Pool.Exec(ctx, `insert into session_calls (id, tenant_id, session_id, name, status, epoch)
			values ($1, $2, $3, 'echo', $4, 1)`, id, tenantID, sessionID, status); err != nil {
			t.Fatal(err)
		}
		return id
	}
	insertPending := func(tenantID, sessionID string) string {
		t.Helper()
		id := newID()
		if _, err := s.d.Pool.Exec(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
			values ($1, $2, $3, 'elicitation', '{}', 'pending', 1, now() + interval '1 hour')`, id, tenantID, sessionID); err != nil {
			t.Fatal(err)
		}
		return id
	}
	queued, running, request := insertCall(mineTenant, mine[0], CallQueued), insertCall(mineTenant, mine[0], CallRunning), insertPending(mineTenant, mine[0])
	theirCall, theirRequest := insertCall(theirTenant, theirs[0], CallQueued), insertPending(theirTenant, theirs[0])

	trk, err := tracker.New(s.rdb, &tracker.Config{Prefix: s.prefix + ":trk", NodeName: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	if err := trk.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(trk.Stop)
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	rt := &Runtime{cfg: RuntimeConfig{IdleClose: time.Minute, Tracker: trk}, store: NewStore(s.d.AppPool),
		persister: &persister{shards: []*commitShard{s.shard}}, logger: logger}
	s.start()
	r := newSessionRunner(rt, nil, &Session{TenantID: mineTenant, ID: mine[0], Epoch: 1})
	defer r.cancel()
	r.lastActivity = time.Now().Add(-time.Hour)

	r.closeIfIdle()

	if r.ctx.Err() == nil {
		t.Fatal("the runner of the session closed after being idle still runs")
	}
	sess, err := rt.store.GetSession(ctx, mineTenant, mine[0])
	if err != nil {
		t.Fatal(err)
	}
	if sess.Status != StatusClosed || sess.ClosedAt == nil {
		t.Errorf("session after the idle close: %s, closed at %v", sess.Status, sess.ClosedAt)
	}
	for _, tc := range []struct {
		tenant, session, call string
		want                  CallStatus
		error                 string
	}{
		{mineTenant, mine[0], queued, CallCancelled, closedBeforeSent},
		{mineTenant, mine[0], running, CallInterrupted, closedWhileRunning},
		{theirTenant, theirs[0], theirCall, CallQueued, ""},
	} {
		c, err := rt.store.GetCall(ctx, tc.tenant, tc.session, tc.call)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != tc.want || string(compactJSON(t, c.Error)) != string(compactJSON(t, []byte(tc.error))) {
			t.Errorf("call %s: %s %s, want %s %s", tc.call, c.Status, c.Error, tc.want, tc.error)
		}
	}
	for _, tc := range []struct {
		tenant, session, request string
		want                     PendingStatus
	}{{mineTenant, mine[0], request, PendingExpired}, {theirTenant, theirs[0], theirRequest, PendingWaiting}} {
		p, err := rt.store.GetPending(ctx, tc.tenant, tc.session, tc.request)
		if err != nil || p.Status != tc.want {
			t.Errorf("request %s: %+v %v, want %s", tc.request, p, err, tc.want)
		}
	}

	// The close was recorded with its report, in one transaction: every event is in.
	events, err := rt.store.Events(ctx, mineTenant, mine[0], EventsParams{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events {
		got = append(got, string(e.Type)+" "+string(compactJSON(t, e.Data)))
	}
	want := []string{
		`call_result {"call_id":"` + queued + `","error":{"message":"cancelled: the session was closed before the call was sent"},"ok":false,"status":"cancelled"}`,
		`call_result {"call_id":"` + running + `","error":{"message":"interrupted: the session was closed while the call ran"},"ok":false,"status":"interrupted"}`,
		`pending_resolved {"reason":"the session ended","request_id":"` + request + `","status":"expired"}`,
		`status {"reason":"idle","state":"closed"}`,
	}
	if len(got) != len(want) {
		t.Fatalf("events:\n%v\nwant:\n%v", got, want)
	}
	// The close comes last; what it ended, before it in any order.
	slices.Sort(got[:3])
	slices.Sort(want[:3])
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %s, want %s", i, got[i], want[i])
		}
	}
}

// compactJSON is raw as encoding/json writes it again: keys sorted, no spaces.
func compactJSON(t *testing.T, raw []byte) []byte {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	out, _ := json.Marshal(v)
	return out
}

// A call queued while its session ends is either refused or ended with the others: the
// insert's snapshot may predate the end, so the end waits for inserts in progress before it
// ends the session's calls. A trigger holds the insert after it found the session ready.
func TestCallQueuedWhileTheSessionEndsIsEnded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	tenantID, ids := s.tenant(1)
	if _, err := s.d.Pool.Exec(ctx, `
		create function test_slow_insert() returns trigger language plpgsql as $$
		begin
			if new.name = 'slow-insert' then perform pg_sleep(1); end if;
			return new;
		end $$;
		create trigger test_slow_insert before insert on session_calls for each row execute function test_slow_insert();`); err != nil {
		t.Fatal(err)
	}
	store := NewStore(s.d.AppPool)
	callID := newID()
	inserted := make(chan error, 1)
	go func() {
		_, _, err := store.insertCall(ctx, tenantID, ids[0], callID, "slow-insert", json.RawMessage(`{}`), "key:test", nil)
		inserted <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := s.d.Pool.QueryRow(ctx, `select count(*) from pg_stat_activity
			where datname = current_database() and state = 'active' and query like '%insert into session_calls%'
			  and query not like '%pg_stat_activity%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the insert never started")
		}
		time.Sleep(10 * time.Millisecond)
	}

	reported, err := store.endSessionAsOwner(ctx, tenantID, ids[0], 1, StatusError, "gone", failedEnd("gone"),
		map[string]any{"state": StatusError, "error": "gone"})
	if err != nil {
		t.Fatal(err)
	}
	var ended []string
	for _, e := range reported {
		var d struct {
			CallID string `json:"call_id"`
		}
		if e.Type == EventCallResult && json.Unmarshal(e.Data, &d) == nil {
			ended = append(ended, d.CallID)
		}
	}
	if err := <-inserted; err != nil {
		t.Fatalf("the insert the end waited for: %v", err)
	}
	c, err := store.GetCall(ctx, tenantID, ids[0], callID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != CallFailed || len(ended) != 1 || ended[0] != callID {
		t.Fatalf("call queued while its session ended: %s; the end reported the calls %v", c.Status, ended)
	}
}

// A request parked in the instant before its session ends, whose handler has not started
// waiting for its answer yet, is reported expired once: by the end, which expired it, and
// not again by the handler, which finds it expired when it starts waiting. So for either
// end: the owner's own (after being idle) and a close by request.
func TestRequestParkedAsTheSessionEndsIsReportedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	tenantID, ids := s.tenant(1, 1)
	rt := &Runtime{cfg: RuntimeConfig{PendingTimeout: time.Minute}, store: NewStore(s.d.AppPool),
		persister: &persister{shards: []*commitShard{s.shard}}, logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	s.start()
	for i, end := range []struct {
		name string
		end  func(r *sessionRunner)
	}{
		{"idle", func(r *sessionRunner) {
			r.endSession(StatusClosed, "closed after being idle", closeEnd, map[string]any{"state": StatusClosed, "reason": "idle"})
		}},
		{"close by request", func(r *sessionRunner) {
			var reported []Event
			if _, changed, err := rt.store.setSessionStatus(ctx, tenantID, r.id, []Status{StatusReady}, StatusClosed, "closed by request",
				endWithSession(tenantID, r.id, &reported)); err != nil || !changed {
				t.Fatalf("close: %v %v", changed, err)
			}
			r.closeByRequest(ctx)
		}},
	} {
		r := newSessionRunner(rt, nil, &Session{TenantID: tenantID, ID: ids[i], Epoch: 1})
		// park, step by step: the request is stored, then the session ends, then its
		// handler starts waiting for the answer.
		p, err := r.parkRow(ctx, PendingElicitation, json.RawMessage(`{"message":"late"}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		end.end(r)
		final, err := r.awaitAnswer(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{}
		if err := r.deliverAnswer(final, &out); err == nil {
			t.Fatalf("%s: the handler of an expired request delivered an answer", end.name)
		}
		// Everything appended before is committed once this is.
		if _, err := rt.persister.appendSync(ctx, pendingEvent{tenantID: tenantID, sessionID: ids[i], epoch: 1,
			typ: EventWatchers, data: json.RawMessage(`{}`), at: eventTime()}); err != nil {
			t.Fatal(err)
		}
		events, err := rt.store.Events(ctx, tenantID, ids[i], EventsParams{Types: []EventType{EventPendingResolved}})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != 1 {
			var got []string
			for _, e := range events {
				got = append(got, string(e.Data))
			}
			t.Errorf("%s: the request parked as the session ended is resolved %d times: %v", end.name, len(events), got)
		}
	}
}

// waitBlockedUpdate waits until a statement of the database's matching like is waiting for
// a lock.
func waitBlockedUpdate(t *testing.T, pool *pgxpool.Pool, like string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(context.Background(), `select count(*) from pg_stat_activity
			where datname = current_database() and wait_event_type = 'Lock' and query like $1
			  and query not like '%pg_stat_activity%'`, like).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no statement like %q ever waited for the lock", like)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An owner that starts connecting as its session is closed does not bring the session back
// to life: its status write, held behind the transaction that closes the session, finds the
// session closed and leaves it so, and the runner stops. The other tenant's session, which
// its owner connects meanwhile, goes to connecting.
func TestConnectingDoesNotReopenASessionClosedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	mineTenant, mine := s.tenant(1)
	theirTenant, theirs := s.tenant(1)
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	rt := &Runtime{cfg: RuntimeConfig{ConnectTimeout: 5 * time.Second, Guard: guard}, store: NewStore(s.d.AppPool),
		persister: &persister{shards: []*commitShard{s.shard}}, transport: guard.Transport(),
		logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	s.start()

	// The close, by request, takes the session's row first.
	tx, err := s.d.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `update sessions set status = 'closed', closed_at = now(), updated_at = now() where id = $1`, mine[0]); err != nil {
		t.Fatal(err)
	}
	r := newSessionRunner(rt, nil, &Session{TenantID: mineTenant, ID: mine[0], Epoch: 1})
	defer r.cancel()
	connected := make(chan error, 1)
	go func() { connected <- r.connect() }()
	waitBlockedUpdate(t, s.d.Pool, "update sessions set updated_at = now(), status = %")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-connected; !errors.Is(err, errSessionEnded) {
		t.Errorf("connecting a session closed meanwhile: %v, want errSessionEnded", err)
	}
	sess, err := rt.store.GetSession(ctx, mineTenant, mine[0])
	if err != nil {
		t.Fatal(err)
	}
	if sess.Status != StatusClosed || sess.ClosedAt == nil {
		t.Errorf("the session closed as its owner connected is %s (closed at %v), want closed", sess.Status, sess.ClosedAt)
	}
	if r.ctx.Err() == nil {
		t.Error("the runner of a session closed as it connected still runs")
	}
	if _, err := rt.persister.appendSync(ctx, pendingEvent{tenantID: mineTenant, sessionID: mine[0], epoch: 1,
		typ: EventWatchers, data: json.RawMessage(`{}`), at: eventTime()}); err != nil {
		t.Fatal(err)
	}
	if events, err := rt.store.Events(ctx, mineTenant, mine[0], EventsParams{Types: []EventType{EventStatus}}); err != nil || len(events) != 0 {
		t.Errorf("status events of the session closed as its owner connected: %v %v", events, err)
	}

	// A live session's owner connects as before (its target, http://x, does not resolve).
	other := newSessionRunner(rt, nil, &Session{TenantID: theirTenant, ID: theirs[0], Epoch: 1})
	defer other.cancel()
	if err := other.connect(); err == nil || errors.Is(err, errSessionEnded) {
		t.Errorf("connecting to a target that does not resolve: %v", err)
	}
	if sess, err := rt.store.GetSession(ctx, theirTenant, theirs[0]); err != nil || sess.Status != StatusConnecting {
		t.Errorf("the other tenant's session: %+v %v, want connecting", sess, err)
	}
}
