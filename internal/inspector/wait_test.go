package inspector_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// A caller that waits hears of the end from the owner directly: what it is handed is the
// committed row, field for field, for the fast tool and for one that runs past the grace
// period in which only the owner's notice is awaited.
func TestWaitingCallerGetsTheCommittedCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	for _, tc := range []struct {
		tool string
		args map[string]any
	}{
		{"echo", map[string]any{"text": "waited for"}},
		{"slow", map[string]any{"steps": 8, "interval_ms": 50}},
	} {
		raw, _ := json.Marshal(tc.args)
		got, err := s.svc.StartCall(ctx, s.a.Tenant.ID, sess.ID, inspector.StartCallParams{
			Name: tc.tool, Arguments: raw, CreatedBy: "key:test", Wait: 15 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != inspector.CallSucceeded || len(got.Result) == 0 || got.FinishedAt == nil {
			t.Fatalf("%s: waited call = %+v", tc.tool, got)
		}
		stored, err := s.svc.GetCall(ctx, s.a.Tenant.ID, sess.ID, got.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !sameCall(got, stored) {
			t.Errorf("%s: the waiter got\n  %+v\nthe row is\n  %+v", tc.tool, got, stored)
		}
	}
}

// When the owner stops while a caller waits, no notice comes; the caller learns the outcome
// from the session's events, as the next owner records the call interrupted.
func TestWaitingCallerHearsOfAnInterruptedCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{leaseTTL: 30 * time.Second})
	first := s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	type result struct {
		call *inspector.Call
		err  error
	}
	done := make(chan result, 1)
	go func() {
		raw, _ := json.Marshal(map[string]any{"steps": 400, "interval_ms": 50})
		c, err := s.svc.StartCall(ctx, s.a.Tenant.ID, sess.ID, inspector.StartCallParams{
			Name: "slow", Arguments: raw, CreatedBy: "key:test", Wait: 20 * time.Second,
		})
		done <- result{c, err}
	}()
	s.waitEvent(sess.ID, func(e inspector.Event) bool { return e.Type == inspector.EventProgress })
	s.addWorker()
	first.stop()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.call.Status != inspector.CallInterrupted {
			t.Fatalf("the waiter got %+v, want the call interrupted", r.call)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("the waiting caller never heard of the interrupted call")
	}
}

// sameCall compares calls as stored: times to the microsecond PostgreSQL keeps.
func sameCall(a, b *inspector.Call) bool {
	norm := func(c inspector.Call) inspector.Call {
		c.CreatedAt = c.CreatedAt.UTC().Truncate(time.Microsecond)
		if c.FinishedAt != nil {
			f := c.FinishedAt.UTC().Truncate(time.Microsecond)
			c.FinishedAt = &f
		}
		c.Result = compact(c.Result)
		c.Error = compact(c.Error)
		c.Arguments = compact(c.Arguments)
		return c
	}
	return reflect.DeepEqual(norm(*a), norm(*b))
}

func compact(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return raw
	}
	out, _ := json.Marshal(v)
	return out
}
