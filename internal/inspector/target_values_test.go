package inspector_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// A target that sends U+0000, valid JSON that PostgreSQL refuses in jsonb and in text, in
// its server info, instructions, tool results, tool errors, progress and input requests is
// recorded all the same: U+FFFD in JSON, nothing in text. Before, the session's events were
// dropped with every other session's in their batch, and the call stayed running for ever.
func TestTargetValuesWithNULAreStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	srv.Server().AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			if ir, ok := res.(*mcp.InitializeResult); ok && err == nil {
				info := *ir.ServerInfo
				info.Name = "nul\x00server"
				ir.ServerInfo, ir.Instructions = &info, "be\x00nice"
			}
			return res, err
		}
	})
	type in struct{}
	mcp.AddTool(srv.Server(), &mcp.Tool{Name: "nul"}, func(ctx context.Context, req *mcp.CallToolRequest, _ in) (*mcp.CallToolResult, any, error) {
		_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: 1, Total: 2, Message: "half\x00way"})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "a\x00b"}}, StructuredContent: map[string]any{"k\x00": "v"}}, nil, nil
	})
	mcp.AddTool(srv.Server(), &mcp.Tool{Name: "fail"}, func(context.Context, *mcp.CallToolRequest, in) (*mcp.CallToolResult, any, error) {
		return nil, nil, errors.New("bad\x00thing")
	})
	mcp.AddTool(srv.Server(), &mcp.Tool{Name: "ask"}, func(ctx context.Context, req *mcp.CallToolRequest, _ in) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "who\x00are you", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{}}})
		if err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.Action}}}, nil, nil
	})
	sess := s.create(srv.URL(), inspector.Target{})
	ready := s.waitStatus(sess.ID, inspector.StatusReady)
	if ready.Instructions != "benice" || !strings.Contains(string(ready.ServerInfo), "nul\uFFFDserver") {
		t.Errorf("instructions %q, server info %s", ready.Instructions, ready.ServerInfo)
	}

	c := s.wait(sess.ID, s.call(sess.ID, "nul", nil).ID)
	if c.Status != inspector.CallSucceeded || callText(t, c) != "a\uFFFDb" || !strings.Contains(string(c.Result), "k\uFFFD") {
		t.Errorf("call %s: %s", c.Status, c.Result)
	}
	c = s.wait(sess.ID, s.call(sess.ID, "fail", nil).ID)
	if c.Status != inspector.CallFailed || callText(t, c) != "bad\uFFFDthing" {
		t.Errorf("call %s: %s", c.Status, c.Result)
	}

	asked := s.call(sess.ID, "ask", nil)
	var p inspector.Pending
	eventually(t, 20*time.Second, "the elicitation", func() bool {
		list, err := s.svc.ListPending(ctx, s.a.Tenant.ID, sess.ID, []inspector.PendingStatus{inspector.PendingWaiting})
		if err != nil || len(list) == 0 {
			return false
		}
		p = list[0]
		return true
	})
	if !strings.Contains(string(p.Params), "who\uFFFDare you") {
		t.Errorf("pending params %s", p.Params)
	}
	if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sess.ID, p.RequestID, "key:test", inspector.PendingAnswer{Action: "decline"}); err != nil {
		t.Fatal(err)
	}
	if c = s.wait(sess.ID, asked.ID); c.Status != inspector.CallSucceeded || callText(t, c) != "decline" {
		t.Errorf("call %s: %s", c.Status, c.Result)
	}

	// Every event is there, gapless, the progress with the rest.
	s.waitEvent(sess.ID, func(e inspector.Event) bool {
		return e.Type == inspector.EventCallResult && dataOf(e)["call_id"] == asked.ID
	})
	events := s.events(sess.ID)
	requireGapless(t, events)
	progressed, framed := false, false
	for _, e := range events {
		switch e.Type {
		case inspector.EventProgress:
			progressed = progressed || dataOf(e)["message"] == "half\uFFFDway"
		case inspector.EventFrame:
			framed = framed || strings.Contains(string(e.Data), "a\uFFFDb")
		}
	}
	if !progressed || !framed {
		t.Errorf("progress with the target's message: %v; frame with the tool's result: %v", progressed, framed)
	}
}
