package inspector_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/inspector"
)

// A session whose target cannot be reached again goes to error and takes its calls with it:
// queued ones fail, naming the session's error, instead of waiting days for a reconnect; one
// an earlier owner left running may have reached the target, so it ends interrupted and is
// never sent again; a parked request expires. Each is reported before the error itself, a
// caller waiting with ?wait= gets the failed call, and a call asked for afterwards is refused
// as a state conflict. The other tenant's call is untouched.
func TestSessionInErrorEndsItsCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	mine, theirs := s.readyWithoutOwner(s.a.Tenant.ID, "gone"), s.readyWithoutOwner(s.b.Tenant.ID, "gone")
	queued, running, other := s.queueEcho(s.a.Tenant.ID, mine.ID), s.queueEcho(s.a.Tenant.ID, mine.ID), s.queueEcho(s.b.Tenant.ID, theirs.ID)
	if _, err := s.owner.Exec(ctx, `update session_calls set status = 'running', epoch = 1 where id = $1`, running.ID); err != nil {
		t.Fatal(err)
	}
	// The other tenant's session failed before; nothing touches it now.
	if _, err := s.owner.Exec(ctx, `update sessions set status = 'error' where id = $1`, theirs.ID); err != nil {
		t.Fatal(err)
	}
	request := "019a0000-0000-7000-8000-000000000001"
	if _, err := s.owner.Exec(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
		values ($1, $2, $3, 'sampling', '{}', 'pending', 1, now() + interval '1 hour')`, request, s.a.Tenant.ID, mine.ID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		call *inspector.Call
		err  error
	}
	waited := make(chan result, 1)
	go func() {
		c, err := s.svc.StartCall(ctx, s.a.Tenant.ID, mine.ID, inspector.StartCallParams{Name: "echo", CreatedBy: "key:test", Wait: 30 * time.Second})
		waited <- result{c, err}
	}()
	eventually(t, 10*time.Second, "the waiting call queued", func() bool {
		calls, err := s.svc.ListCalls(ctx, s.a.Tenant.ID, mine.ID, 10)
		return err == nil && len(calls) == 3
	})

	s.addWorker()
	failed := s.waitStatus(mine.ID, inspector.StatusError)
	if failed.Error == "" {
		t.Fatal("the session in error says nothing of why")
	}
	var w result
	select {
	case w = <-waited:
	case <-time.After(15 * time.Second):
		t.Fatal("the caller waiting for a call of the failed session was not answered")
	}
	if w.err != nil || w.call.Status != inspector.CallFailed {
		t.Fatalf("the waiting caller got %+v, %v; want the call failed", w.call, w.err)
	}
	for _, tc := range []struct {
		call   *inspector.Call
		tenant string
		want   inspector.CallStatus
	}{
		{queued, s.a.Tenant.ID, inspector.CallFailed},
		{w.call, s.a.Tenant.ID, inspector.CallFailed},
		{running, s.a.Tenant.ID, inspector.CallInterrupted},
		{other, s.b.Tenant.ID, inspector.CallQueued},
	} {
		got, err := s.svc.GetCall(ctx, tc.tenant, tc.call.SessionID, tc.call.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != tc.want {
			t.Errorf("call %s: %s, want %s", tc.call.ID, got.Status, tc.want)
		}
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(got.Error, &e)
		if tc.want == inspector.CallFailed && (got.FinishedAt == nil || !strings.Contains(e.Message, failed.Error)) {
			t.Errorf("call %s failed with %s at %v; want the session's error %q", tc.call.ID, got.Error, got.FinishedAt, failed.Error)
		}
	}
	p, err := s.svc.Store().GetPending(ctx, s.a.Tenant.ID, mine.ID, request)
	if err != nil || p.Status != inspector.PendingExpired {
		t.Fatalf("parked request of the failed session: %+v %v", p, err)
	}

	errored := s.waitEvent(mine.ID, func(e inspector.Event) bool {
		return e.Type == inspector.EventStatus && dataOf(e)["state"] == string(inspector.StatusError)
	})
	reported := map[string]int64{}
	for _, e := range s.events(mine.ID) {
		switch d := dataOf(e); e.Type {
		case inspector.EventCallResult:
			id, _ := d["call_id"].(string)
			want := string(inspector.CallFailed)
			if id == running.ID {
				want = string(inspector.CallInterrupted)
			}
			if d["status"] != want || d["ok"] != false || d["error"] == nil {
				t.Errorf("call_result %v, want %s with its error", d, want)
			}
			if _, twice := reported[id]; twice {
				t.Errorf("call %s reported twice", id)
			}
			reported[id] = e.Seq
		case inspector.EventPendingResolved:
			reported[d["request_id"].(string)] = e.Seq
		}
	}
	for _, id := range []string{queued.ID, w.call.ID, running.ID, request} {
		if seq, ok := reported[id]; !ok || seq > errored.Seq {
			t.Errorf("%s reported at seq %d (reported: %v), want before the error at %d", id, seq, ok, errored.Seq)
		}
	}

	// Nothing queues on a session in error: the caller hears at once that it is not ready.
	if _, err := s.svc.StartCall(ctx, s.a.Tenant.ID, mine.ID, inspector.StartCallParams{Name: "echo", CreatedBy: "key:test"}); !errors.Is(err, inspector.ErrNotReady) {
		t.Fatalf("a call on the session in error: %v, want ErrNotReady", err)
	}
}
