package inspector_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// A caller that waits hears of the end from the owner directly: what it is handed is the
// committed row, field for field, for the fast tool and for one that runs past the grace
// period in which only the owner's notice is awaited.
func TestWaitingCallerGetsTheCommittedCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess := newReadySession(t)
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

// The owner is rung while the call's row is still being inserted. Its claim waits for that
// insert instead of missing the row: here the insert is held up (the tenant's audit chain
// is locked) long enough for the claim to be seen waiting on the call's lock in pg_locks,
// and once the insert commits the call runs at once, on that doorbell, not on the next
// sweep for calls whose doorbell was lost.
func TestDoorbellRungBeforeTheInsertCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess := newReadySession(t)

	hold, err := s.owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `select pg_advisory_xact_lock(hashtextextended('tapline.audit:' || $1::text, 0))`, s.a.Tenant.ID); err != nil {
		t.Fatal(err)
	}
	done := startWaitingCall(s.svc, s.a.Tenant.ID, sess.ID, "rung early")
	eventually(t, 10*time.Second, "the owner's claim waiting for the insert", func() bool {
		var n int
		err := s.owner.QueryRow(ctx, `select count(*) from pg_locks l join pg_stat_activity a on a.pid = l.pid
			where l.locktype = 'advisory' and l.mode = 'ShareLock' and not l.granted and a.datname = current_database()`).Scan(&n)
		return err == nil && n == 1
	})
	var visible int
	if err := s.owner.QueryRow(ctx, `select count(*) from session_calls where session_id = $1`, sess.ID).Scan(&visible); err != nil || visible != 0 {
		t.Fatalf("%d calls visible before the insert committed (%v)", visible, err)
	}
	released := time.Now()
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.call.Status != inspector.CallSucceeded || callText(t, res.call) != "rung early" {
		t.Fatalf("call %+v", res.call)
	}
	// The sweep would have taken up to 5 s; the waiting claim takes one round trip.
	if took := time.Since(released); took > 3*time.Second {
		t.Fatalf("the call ended %v after its insert committed: its doorbell was lost", took)
	}
}

// An insert slower than the owner's claims are patient (here its api waits for the one
// connection of its pool) is followed by a second doorbell once the row is in, and the call
// runs then. Left to the owner's sweep, which comes every 5 s, at least one of three such
// calls, spaced about a second apart, would take longer than the bound below.
func TestSlowInsertIsRungAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess := newReadySession(t)
	cfg := s.pool.Config()
	cfg.MaxConns, cfg.MinConns = 1, 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	svc, err := inspector.NewService(&inspector.ServiceConfig{
		Pool: pool, Redis: s.rdb, Tracker: newTracker(t, s.rdb, s.prefix, "slow-api", 3*time.Second, nil),
		Guard: s.guard, Keys: s.keys, Prefix: s.prefix, CommandTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	for i := range 3 {
		conn, err := pool.Acquire(ctx) // the pool's only connection: the insert waits for it
		if err != nil {
			t.Fatal(err)
		}
		done := startWaitingCall(svc, s.a.Tenant.ID, sess.ID, "slow insert")
		// Well past the owner's claims, which give up after about 0.3 s.
		time.Sleep(time.Second)
		released := time.Now()
		conn.Release()
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.call.Status != inspector.CallSucceeded {
			t.Fatalf("call %d = %+v", i, res.call)
		}
		if took := time.Since(released); took > 1500*time.Millisecond {
			t.Fatalf("call %d ended %v after its insert could start: it waited for the sweep", i, took)
		}
	}
}

// startedCall is what StartCall returned.
type startedCall struct {
	call *inspector.Call
	err  error
}

// startWaitingCall calls echo with text through svc in the background, waiting up to 20 s
// for the result, and delivers what StartCall returned.
func startWaitingCall(svc *inspector.Service, tenantID, sessionID, text string) <-chan startedCall {
	done := make(chan startedCall, 1)
	go func() {
		raw, _ := json.Marshal(map[string]string{"text": text})
		c, err := svc.StartCall(context.Background(), tenantID, sessionID, inspector.StartCallParams{Name: "echo",
			Arguments: raw, CreatedBy: "key:test", Wait: 20 * time.Second})
		done <- startedCall{c, err}
	}()
	return done
}
