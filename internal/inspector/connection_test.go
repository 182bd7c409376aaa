package inspector_test

import (
	"context"
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
	var req string
	eventually(t, 10*time.Second, "the sampling request is parked", func() bool {
		list, _ := s.svc.ListPending(ctx, s.a.Tenant.ID, sess.ID, []inspector.PendingStatus{inspector.PendingWaiting})
		if len(list) == 1 {
			req = list[0].RequestID
		}
		return req != ""
	})
	answer := inspector.PendingAnswer{Result: []byte(`{"role":"assistant","content":{"type":"text","text":"answered"},"model":"person"}`)}
	if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sess.ID, req, "tester", answer); err != nil {
		t.Fatal(err)
	}
	if got := s.wait(sess.ID, sample.ID); got.Status != inspector.CallSucceeded {
		t.Fatalf("sampling call over SSE: %s %s", got.Status, got.Error)
	}

	connects := 0
	for _, e := range s.events(sess.ID) {
		if e.Type == inspector.EventStatus && dataOf(e)["state"] == string(inspector.StatusConnecting) {
			connects++
		}
	}
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
	// somebody answers it.
	mcp.AddTool(srv.Server(), &mcp.Tool{Name: "sample_later"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		ss := req.Session
		go func() {
			_, _ = ss.CreateMessage(context.Background(), &mcp.CreateMessageParams{
				Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "later"}}}, MaxTokens: 8})
		}()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
	})
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	s.wait(sess.ID, s.call(sess.ID, "sample_later", nil).ID)
	var req string
	eventually(t, 10*time.Second, "the sampling request is parked", func() bool {
		list, _ := s.svc.ListPending(ctx, s.a.Tenant.ID, sess.ID, []inspector.PendingStatus{inspector.PendingWaiting})
		if len(list) == 1 {
			req = list[0].RequestID
		}
		return req != ""
	})
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
