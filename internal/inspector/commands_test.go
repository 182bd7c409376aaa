package inspector_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// TestSlowRequestIsDispatchedOnce: a forwarded request slower than one delivery attempt is
// delivered again under the same command id; the repeat joins the running command instead of
// reaching the target a second time, and the request gets the first one's reply.
func TestSlowRequestIsDispatchedOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	// The stack's command timeout is 10s, so an attempt lasts 3.3s: the tool takes longer
	// than one attempt and less than the whole timeout.
	res, err := s.svc.Request(context.Background(), s.a.Tenant.ID, sess.ID, inspector.OpRPC, map[string]any{
		"method": "tools/call",
		"params": map[string]any{"name": "slow", "arguments": map[string]any{"steps": 4, "interval_ms": 1000, "key": "dup-rpc"}},
	})
	if err != nil || !strings.Contains(string(res), "done after 4 steps") {
		t.Fatalf("request = %s, %v", res, err)
	}
	// Every repeat was on the inbox before the reply came; give the worker time to read them.
	time.Sleep(500 * time.Millisecond)
	if n := srv.KeyCalls("dup-rpc"); n != 1 {
		t.Fatalf("one rpc request ran tools/call %d times on the target, want 1", n)
	}
}
