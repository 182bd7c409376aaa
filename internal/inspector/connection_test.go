package inspector_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// A session on the legacy HTTP+SSE transport keeps its connection after connecting: the
// event stream outlives the connect timeout's context, so the session connects once, calls
// go through, and the target's server→client requests reach a person.
func TestLegacySSESessionStaysConnected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.SSEURL(), inspector.Target{Transport: inspector.TransportSSE})
	s.waitStatus(sess.ID, inspector.StatusReady)
	time.Sleep(2 * time.Second)

	echo := s.wait(sess.ID, s.call(sess.ID, "echo", map[string]any{"text": "over sse"}).ID)
	if echo.Status != inspector.CallSucceeded || callText(t, echo) != "over sse" {
		t.Fatalf("echo over SSE: %s %s", echo.Status, echo.Error)
	}
	sample := s.call(sess.ID, "sample", map[string]any{"prompt": "over sse"})
	req := s.waitParked(sess.ID)
	answer := inspector.PendingAnswer{Result: []byte(`{"role":"assistant","content":{"type":"text","text":"answered"},"model":"person"}`)}
	if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sess.ID, req, "tester", answer); err != nil {
		t.Fatal(err)
	}
	if got := s.wait(sess.ID, sample.ID); got.Status != inspector.CallSucceeded {
		t.Fatalf("sampling call over SSE: %s %s", got.Status, got.Error)
	}

	connects := s.connects(sess.ID)
	if connects != 1 {
		t.Fatalf("the session connected %d times, want once", connects)
	}
}

// Reconnecting expires the requests the target parked on the old connection at once: their
// answers could only go back on that connection, and go-sdk's Close waits for them.
func TestReconnectExpiresRequestsParkedOnTheOldConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	// A tool that returns at once and leaves a sampling request behind, parked until
	// somebody answers it. (go-sdk's server waits for its own requests when its session
	// closes: the test's end releases this one, should the error answer be lost in the
	// close.)
	mcp.AddTool(srv.Server(), &mcp.Tool{Name: "sample_later"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		ss := req.Session
		go func() {
			_, _ = ss.CreateMessage(t.Context(), &mcp.CreateMessageParams{
				Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "later"}}}, MaxTokens: 8})
		}()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
	})
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	s.wait(sess.ID, s.call(sess.ID, "sample_later", nil).ID)
	req := s.waitParked(sess.ID)
	last := s.events(sess.ID)
	if _, err := s.svc.ReconnectSession(ctx, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	s.waitReadyAfter(sess.ID, last[len(last)-1].Seq)
	p, err := s.svc.Store().GetPending(ctx, s.a.Tenant.ID, sess.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != inspector.PendingExpired {
		t.Fatalf("request parked on the old connection is %s after the reconnect, want expired", p.Status)
	}
	s.waitEvent(sess.ID, func(e inspector.Event) bool {
		return e.Type == inspector.EventPendingResolved && dataOf(e)["request_id"] == req && dataOf(e)["reason"] == "the connection ended"
	})
}

// Closing a session ends what it leaves open. The running call is cancelled at the target
// and recorded as interrupted, the call waiting for a person's sampling answer too, and the
// parked request expires; so do a call an earlier owner left running and a request it left
// parked, which nothing on the owner waits for. Each is reported exactly once, before the
// close itself, and cancelling a call the close ended answers at once with the call as it is.
func TestCloseEndsTheSessionsCallsAndRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess, srv := newReadySessionServer(t)
	slow := s.call(sess.ID, "slow", map[string]any{"steps": 400, "interval_ms": 50, "key": "closed-under-it"})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := srv.WaitCall(wctx, "closed-under-it"); err != nil {
		t.Fatal(err)
	}
	sample := s.call(sess.ID, "sample", map[string]any{"prompt": "never answered"})
	req := s.waitParked(sess.ID)
	// What an earlier owner left: a call running and a request parked on its connection.
	orphan, orphanReq := "019a0000-0000-7000-8000-0000000000c1", "019a0000-0000-7000-8000-0000000000c2"
	if _, err := s.owner.Exec(ctx, `insert into session_calls (id, tenant_id, session_id, name, status, epoch)
		values ($1, $2, $3, 'echo', 'running', 1)`, orphan, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.owner.Exec(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
		values ($1, $2, $3, 'elicitation', '{}', 'pending', 1, now() + interval '1 hour')`, orphanReq, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}

	if _, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{slow.ID, sample.ID, orphan} {
		c, err := s.svc.GetCall(ctx, s.a.Tenant.ID, sess.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != inspector.CallInterrupted {
			t.Fatalf("call %s is %s right after the close, want interrupted", c.Name, c.Status)
		}
		// Nothing is left to cancel: the answer is the call, without asking a worker.
		got, err := s.svc.CancelCall(ctx, s.a.Tenant.ID, sess.ID, id)
		if err != nil || got.Status != inspector.CallInterrupted {
			t.Fatalf("cancel a call the close ended: %v %v", got, err)
		}
	}
	p, err := s.svc.Store().GetPending(ctx, s.a.Tenant.ID, sess.ID, req)
	if err != nil || p.Status != inspector.PendingExpired {
		t.Fatalf("parked request after the close: %v %v", p, err)
	}
	eventually(t, 10*time.Second, "the target sees the slow call cancelled", func() bool { return srv.CancelledCalls("slow") == 1 })
	// The owner has let the session go: whatever it had to say about the calls and requests
	// it cut off is in.
	eventually(t, 10*time.Second, "the owner lets the session go", func() bool { return s.workers[0].rt.Sessions() == 0 })

	requireEndReported(t, s.events(sess.ID), "closed", []string{slow.ID, sample.ID, orphan}, []string{req, orphanReq})
}

// requireEndReported checks that a session's events report each of calls (interrupted) and
// requests (expired) exactly once, then the end of the session, status state, once, after
// them.
func requireEndReported(t *testing.T, events []inspector.Event, state string, calls, requests []string) {
	t.Helper()
	var ended int64
	reported := map[string][]int64{}
	for _, e := range events {
		switch d := dataOf(e); e.Type {
		case inspector.EventCallResult:
			if d["status"] != string(inspector.CallInterrupted) && d["status"] != string(inspector.CallCancelled) {
				t.Errorf("call_result %v, want status as the close recorded it", d)
			}
			id, _ := d["call_id"].(string)
			reported[id] = append(reported[id], e.Seq)
		case inspector.EventPendingResolved:
			if d["status"] != string(inspector.PendingExpired) {
				t.Errorf("pending_resolved %v, want expired", d)
			}
			id, _ := d["request_id"].(string)
			reported[id] = append(reported[id], e.Seq)
		case inspector.EventStatus:
			if d["state"] == state {
				if ended != 0 {
					t.Errorf("the session's end (%s) reported at seqs %d and %d", state, ended, e.Seq)
				}
				ended = e.Seq
			}
		}
	}
	if ended == 0 {
		t.Fatalf("the session's end (%s) was never reported", state)
	}
	for _, id := range append(slices.Clone(calls), requests...) {
		if seqs := reported[id]; len(seqs) != 1 || seqs[0] > ended {
			t.Errorf("%s reported at seqs %v, want once before the end at %d", id, seqs, ended)
		}
	}
}

// A session closed while no worker holds it (none alive, or the doorbell lost) still ends
// its calls and parked requests: nobody would ever end them otherwise, as a closed session
// gets no owner. Nor would anybody report them: the close does, with itself, each once and
// in order, committed before they are published to live followers. The other tenant's calls
// are untouched.
func TestCloseWithoutAnOwnerEndsTheCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	mine, theirs := s.readyWithoutOwner(s.a.Tenant.ID, "no owner"), s.readyWithoutOwner(s.b.Tenant.ID, "no owner")
	queued, running, other := s.queueEcho(s.a.Tenant.ID, mine.ID), s.queueEcho(s.a.Tenant.ID, mine.ID), s.queueEcho(s.b.Tenant.ID, theirs.ID)
	// A worker claimed this one and died, leaving a request parked.
	if _, err := s.owner.Exec(ctx, `update session_calls set status = 'running' where id = $1`, running.ID); err != nil {
		t.Fatal(err)
	}
	request := "019a0000-0000-7000-8000-0000000000d1"
	if _, err := s.owner.Exec(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
		values ($1, $2, $3, 'sampling', '{}', 'pending', 1, now() + interval '1 hour')`, request, s.a.Tenant.ID, mine.ID); err != nil {
		t.Fatal(err)
	}
	live := s.rdb.Subscribe(ctx, s.prefix+":ev:{"+s.a.Tenant.ID+":"+mine.ID+"}")
	defer live.Close()
	if _, err := live.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, mine.ID); err != nil {
		t.Fatal(err)
	}
	events := s.events(mine.ID)
	requireEndReported(t, events, "closed", []string{queued.ID, running.ID}, []string{request})
	for _, e := range events {
		select {
		case m := <-live.Channel():
			var got inspector.Event
			if err := json.Unmarshal([]byte(m.Payload), &got); err != nil || got.Seq != e.Seq || got.Type != e.Type ||
				!got.At.Equal(e.At) || string(compact(got.Data)) != string(compact(e.Data)) {
				t.Errorf("published %s (%v), want the committed %d %s %s %s", m.Payload, err, e.Seq, e.Type, e.At, e.Data)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) was never published", e.Seq, e.Type)
		}
	}
	if theirEvents, err := s.svc.Events(ctx, s.b.Tenant.ID, theirs.ID, inspector.EventsParams{}); err != nil || len(theirEvents) != 0 {
		t.Errorf("the other tenant's session has events: %v %v", theirEvents, err)
	}
	for _, tc := range []struct {
		call   *inspector.Call
		tenant string
		want   inspector.CallStatus
	}{
		{queued, s.a.Tenant.ID, inspector.CallCancelled},
		{running, s.a.Tenant.ID, inspector.CallInterrupted},
		{other, s.b.Tenant.ID, inspector.CallQueued},
	} {
		got, err := s.svc.GetCall(ctx, tc.tenant, tc.call.SessionID, tc.call.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != tc.want || (tc.want != inspector.CallQueued && (got.FinishedAt == nil || len(got.Error) == 0)) {
			t.Errorf("call %s after the close: %s, finished %v, error %s; want %s", tc.call.ID, got.Status, got.FinishedAt, got.Error, tc.want)
		}
	}
}

// An owner whose connection comes up as its session is closed does not bring the session
// back to life: its write of ready, held behind the transaction that closes the session,
// finds the session closed and leaves it so, and the worker lets the connection go.
func TestReadyDoesNotReopenASessionClosedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	w := s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	initializing, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) })
	srv.Server().AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "initialize" {
				once.Do(func() { close(initializing) })
				<-release
			}
			return next(ctx, method, req)
		}
	})
	sess := s.create(srv.URL(), inspector.Target{})
	select {
	case <-initializing:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker never connected")
	}
	// The owner wrote connecting and waits for the target. The close takes the session's
	// row; the target answers; the owner's write of ready waits for the close.
	tx, err := s.owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `update sessions set status = 'closed', closed_at = now(), updated_at = now() where id = $1`, sess.ID); err != nil {
		t.Fatal(err)
	}
	released.Do(func() { close(release) })
	eventually(t, 10*time.Second, "the owner's write of ready waiting for the close", func() bool {
		var n int
		err := s.owner.QueryRow(ctx, `select count(*) from pg_stat_activity
			where datname = current_database() and wait_event_type = 'Lock' and query like 'update sessions set updated_at = now(), status = %'`).Scan(&n)
		return err == nil && n > 0
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the worker lets the session go", func() bool { return w.rt.Sessions() == 0 })
	got, err := s.svc.GetSession(ctx, s.a.Tenant.ID, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != inspector.StatusClosed {
		t.Fatalf("the session closed as its owner connected is %s, want closed", got.Status)
	}
	for _, e := range s.events(sess.ID) {
		if e.Type == inspector.EventStatus && dataOf(e)["state"] == string(inspector.StatusReady) {
			t.Fatalf("the session closed as its owner connected was reported ready: %s", e.Data)
		}
	}
}

// A queued call cancelled by request reports its end as every other end does: the cancel's
// transaction records its call_result, which is published once committed, and the other
// tenant's session, and its queued call, are untouched.
func TestCancelledQueuedCallIsReported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	mine, theirs := s.readyWithoutOwner(s.a.Tenant.ID, "no owner"), s.readyWithoutOwner(s.b.Tenant.ID, "no owner")
	queued, other := s.queueEcho(s.a.Tenant.ID, mine.ID), s.queueEcho(s.b.Tenant.ID, theirs.ID)
	live := s.rdb.Subscribe(ctx, s.prefix+":ev:{"+s.a.Tenant.ID+":"+mine.ID+"}")
	defer live.Close()
	if _, err := live.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	// Another tenant cannot cancel it.
	if _, err := s.svc.CancelCall(ctx, s.b.Tenant.ID, mine.ID, queued.ID); !errors.Is(err, inspector.ErrNotFound) {
		t.Fatalf("cancel from the other tenant = %v, want ErrNotFound", err)
	}
	got, err := s.svc.CancelCall(ctx, s.a.Tenant.ID, mine.ID, queued.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != inspector.CallCancelled {
		t.Fatalf("cancelled call = %+v", got)
	}
	events := s.events(mine.ID)
	if len(events) != 1 || events[0].Type != inspector.EventCallResult {
		t.Fatalf("events after the cancel = %+v, want one call_result", events)
	}
	var data struct {
		CallID string               `json:"call_id"`
		OK     bool                 `json:"ok"`
		Status inspector.CallStatus `json:"status"`
		Error  struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(events[0].Data, &data); err != nil || data.CallID != queued.ID || data.OK ||
		data.Status != inspector.CallCancelled || data.Error.Message == "" {
		t.Fatalf("call_result = %s (%v)", events[0].Data, err)
	}
	select {
	case m := <-live.Channel():
		var pub inspector.Event
		if err := json.Unmarshal([]byte(m.Payload), &pub); err != nil || pub.Seq != events[0].Seq || pub.Type != inspector.EventCallResult {
			t.Fatalf("published %s (%v), want the committed event %d", m.Payload, err, events[0].Seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call_result was never published")
	}
	// Cancelling it again changes nothing and reports nothing.
	if again, err := s.svc.CancelCall(ctx, s.a.Tenant.ID, mine.ID, queued.ID); err != nil || again.Status != inspector.CallCancelled {
		t.Fatalf("second cancel = %+v, %v", again, err)
	}
	if n := len(s.events(mine.ID)); n != 1 {
		t.Fatalf("%d events after a second cancel, want 1", n)
	}
	if theirEvents, err := s.svc.Events(ctx, s.b.Tenant.ID, theirs.ID, inspector.EventsParams{}); err != nil || len(theirEvents) != 0 {
		t.Errorf("the other tenant's session has events: %v %v", theirEvents, err)
	}
	if c, err := s.svc.GetCall(ctx, s.b.Tenant.ID, theirs.ID, other.ID); err != nil || c.Status != inspector.CallQueued {
		t.Errorf("the other tenant's call = %+v, %v; want it queued", c, err)
	}
}

// A target that stops taking the session's connection and says so with a 400 for every
// request (some servers answer a session they lost that way, rather than with a 404) gets a
// new connection: the first refusal sends a ping, the ping is refused too, and the session
// reconnects by itself, as it does after a 404. Requests work again without anyone asking
// for the reconnect.
func TestTargetRefusingEverythingGetsANewConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	upstream, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	// The proxy forgets every session it has seen when told to: it refuses their requests
	// with a plain-text 400, and lets a new initialize through.
	var mu sync.Mutex
	seen, forgotten := map[string]bool{}, map[string]bool{}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: upstream.Scheme, Host: upstream.Host})
	proxy.FlushInterval = -1
	proxy.ModifyResponse = func(res *http.Response) error {
		if id := res.Header.Get("Mcp-Session-Id"); id != "" {
			mu.Lock()
			seen[id] = true
			mu.Unlock()
		}
		return nil
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lost := forgotten[r.Header.Get("Mcp-Session-Id")]
		mu.Unlock()
		if lost {
			http.Error(w, "Bad Request: unknown session", http.StatusBadRequest)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	// It goes first, while the worker still holds the session's event stream through it.
	t.Cleanup(func() {
		front.CloseClientConnections()
		front.Close()
	})
	forget := func() {
		mu.Lock()
		defer mu.Unlock()
		for id := range seen {
			forgotten[id] = true
		}
	}

	sess := s.create(front.URL+upstream.Path, inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	list := func() error {
		_, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpListTools, map[string]any{}, nil)
		return err
	}
	if err := list(); err != nil {
		t.Fatalf("tools/list before: %v", err)
	}
	forget()
	var remote *inspector.RemoteError
	if err := list(); !errors.As(err, &remote) || remote.Code != -32600 || !strings.Contains(remote.Message, "HTTP 400") {
		t.Fatalf("tools/list on the forgotten session = %v, want the refusal as JSON-RPC error -32600", err)
	}
	eventually(t, 20*time.Second, "tools/list works again", func() bool { return list() == nil })
	connects := s.connects(sess.ID)
	if connects != 2 {
		t.Fatalf("the session connected %d times, want twice: once, then once more after the refusals", connects)
	}
}
