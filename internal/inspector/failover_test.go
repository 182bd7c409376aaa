package inspector_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// asTenant runs sql in a transaction of the application role scoped to the stack's tenant.
func (s *stack) asTenant(sql string, args ...any) {
	s.t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "select set_config('app.tenant_id', $1, true)", s.a.Tenant.ID); err != nil {
		s.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		s.t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// A worker killed between recording a call's end and committing its call_result event leaves
// the event out; the next owner emits it when it takes the session over.
func TestTakeoverReportsResultsTheDeadOwnerLeftOut(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 30 * time.Second})
	first := s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	ready := s.waitStatus(sess.ID, inspector.StatusReady)
	// The call as the dead owner left it: finished in its row, no event.
	callID := uuid.Must(uuid.NewV7()).String()
	s.asTenant(`insert into session_calls (id, tenant_id, session_id, name, arguments, status, result, epoch, finished_at)
		values ($1, $2, $3, 'echo', '{}', 'succeeded', '{"content":[{"type":"text","text":"lost"}]}', $4, now())`,
		callID, s.a.Tenant.ID, sess.ID, ready.Epoch)

	s.addWorker()
	first.stop()
	moved := s.waitEvent(sess.ID, func(e inspector.Event) bool { return e.Type == inspector.EventSessionMoved })
	got := s.waitEvent(sess.ID, func(e inspector.Event) bool {
		return e.Type == inspector.EventCallResult && dataOf(e)["call_id"] == callID
	})
	if d := dataOf(got); got.Seq < moved.Seq || d["ok"] != true || d["status"] != "succeeded" || d["recovered"] != true {
		t.Fatalf("recovered call_result = %s (seq %d, moved at %d)", got.Data, got.Seq, moved.Seq)
	}
	// Emitted once, and calls that had their event are left alone. The recovery runs as the
	// new owner adopts the session, before it has connected: calls wait for that.
	s.waitReadyAfter(sess.ID, moved.Seq)
	done := s.wait(sess.ID, s.call(sess.ID, "echo", map[string]any{"text": "after"}).ID)
	if done.Status != inspector.CallSucceeded {
		t.Fatalf("call after takeover = %+v", done)
	}
	n := 0
	for _, e := range s.events(sess.ID) {
		if e.Type == inspector.EventCallResult && dataOf(e)["call_id"] == callID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d call_result events for the call, want 1", n)
	}
	requireGapless(t, s.events(sess.ID))
}

// A queued call whose doorbell never reached the owner (a command lost with Redis, a dispatch
// refused while PostgreSQL was away) is found by the owner's sweep and runs once.
func TestQueuedCallWithoutDoorbellIsSwept(t *testing.T) {
	t.Parallel()
	s, sess, srv := newReadySessionServer(t)
	callID := uuid.Must(uuid.NewV7()).String()
	s.asTenant(`insert into session_calls (id, tenant_id, session_id, name, arguments, status)
		values ($1, $2, $3, 'echo', '{"text":"swept","key":"swept-1"}', 'queued')`, callID, s.a.Tenant.ID, sess.ID)
	c, err := s.svc.WaitCall(context.Background(), s.a.Tenant.ID, sess.ID, callID, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != inspector.CallSucceeded {
		t.Fatalf("swept call = %+v", c)
	}
	if n := srv.KeyCalls("swept-1"); n != 1 {
		t.Fatalf("the target ran the swept call %d times", n)
	}
}

// A doorbell after a session has moved reaches the new owner at once, not through its sweep:
// whatever an api process remembers of where the session was must not outlive the move.
func TestDoorbellFollowsAMovedSession(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 30 * time.Second})
	first := s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	// The api learns where the session is.
	if c := s.wait(sess.ID, s.call(sess.ID, "echo", map[string]any{"text": "before"}).ID); c.Status != inspector.CallSucceeded {
		t.Fatalf("call before the move = %+v", c)
	}

	s.addWorker()
	first.stop()
	moved := s.waitEvent(sess.ID, func(e inspector.Event) bool { return e.Type == inspector.EventSessionMoved })
	s.waitReadyAfter(sess.ID, moved.Seq)
	start := time.Now()
	c := s.wait(sess.ID, s.call(sess.ID, "echo", map[string]any{"text": "after"}).ID)
	if c.Status != inspector.CallSucceeded {
		t.Fatalf("call after the move = %+v", c)
	}
	// Only the former owner rung, the call would wait for the new owner's sweep (5 s).
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the call ended %v after it was made: the new owner was not rung", took)
	}
}
