package inspector_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/inspector"
)

// TestSlowRequestIsDispatchedOnce: a forwarded request slower than one delivery attempt is
// delivered again under the same command id; the repeat joins the running command instead of
// reaching the target a second time, and the request gets the first one's reply.
func TestSlowRequestIsDispatchedOnce(t *testing.T) {
	t.Parallel()
	s, sess, srv := newReadySessionServer(t)
	// The stack's command timeout is 10s, so an attempt lasts 3.3s: the tool takes longer
	// than one attempt and less than the whole timeout.
	res, err := s.svc.Request(context.Background(), s.a.Tenant.ID, sess.ID, inspector.OpRPC, map[string]any{
		"method": "tools/call",
		"params": map[string]any{"name": "slow", "arguments": map[string]any{"steps": 4, "interval_ms": 1000, "key": "dup-rpc"}},
	}, nil)
	if err != nil || !strings.Contains(string(res), "done after 4 steps") {
		t.Fatalf("request = %s, %v", res, err)
	}
	// Every repeat was on the inbox before the reply came; give the worker time to read them.
	time.Sleep(500 * time.Millisecond)
	if n := srv.KeyCalls("dup-rpc"); n != 1 {
		t.Fatalf("one rpc request ran tools/call %d times on the target, want 1", n)
	}
}

// TestIdempotencyKeyNamesOneRequest: a forwarded request repeated with the same
// Idempotency-Key, by the same principal, gets the first one's reply without reaching the
// target again; another request, or another principal, under the same key runs.
func TestIdempotencyKeyNamesOneRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess, srv := newReadySessionServer(t)
	echo := func(text string, opts *inspector.RequestOptions) string {
		t.Helper()
		res, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpRPC, map[string]any{
			"method": "tools/call",
			"params": map[string]any{"name": "echo", "arguments": map[string]any{"text": text, "key": "idem-rpc"}},
		}, opts)
		if err != nil {
			t.Fatal(err)
		}
		return string(res)
	}
	ci := &inspector.RequestOptions{Principal: "key:ci", IdempotencyKey: "rpc-1"}
	first := echo("once", ci)
	for range 3 {
		if again := echo("once", ci); again != first {
			t.Fatalf("retry = %s, want the first reply %s", again, first)
		}
	}
	if n := srv.KeyCalls("idem-rpc"); n != 1 {
		t.Fatalf("the target got the request %d times, want 1", n)
	}
	if other := echo("different", ci); other == first {
		t.Fatalf("the same key for another request got the first one's reply %s", other)
	}
	echo("once", &inspector.RequestOptions{Principal: "key:someone-else", IdempotencyKey: "rpc-1"})
	echo("once", nil)
	echo("once", nil)
	if n := srv.KeyCalls("idem-rpc"); n != 5 {
		t.Fatalf("the target got the requests %d times, want 5", n)
	}
}

// TestSetRootsRetriedWithItsKeyNotifiesOnce: roots replaced again with the same
// Idempotency-Key (a retry that reached another api node after the first one died) reach the
// owner as the same command, so the target hears notifications/roots/list_changed once;
// another key, or none, is another change.
func TestSetRootsRetriedWithItsKeyNotifiesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess, srv := newReadySessionServer(t)
	changed := func() int {
		n := 0
		for _, r := range srv.Requests() {
			if r.Method == "notifications/roots/list_changed" {
				n++
			}
		}
		return n
	}
	set := func(opts *inspector.RequestOptions) {
		t.Helper()
		if _, err := s.svc.SetRoots(ctx, s.a.Tenant.ID, sess.ID, []inspector.Root{{URI: "file:///repo"}}, opts); err != nil {
			t.Fatal(err)
		}
	}
	ci := &inspector.RequestOptions{Principal: "key:ci", IdempotencyKey: "roots-1"}
	for range 3 {
		set(ci)
	}
	eventually(t, 10*time.Second, "the target heard of the change", func() bool { return changed() >= 1 })
	time.Sleep(300 * time.Millisecond) // a second notification would have arrived by now
	if n := changed(); n != 1 {
		t.Fatalf("one change retried twice with its key notified the target %d times, want 1", n)
	}
	set(&inspector.RequestOptions{Principal: "key:ci", IdempotencyKey: "roots-2"})
	set(nil)
	eventually(t, 10*time.Second, "the target heard of both changes", func() bool { return changed() == 3 })
}
