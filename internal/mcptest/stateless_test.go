package mcptest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestStatelessDiscover(t *testing.T) {
	t.Parallel()
	srv := NewStatelessServer(t, nil)
	ctx := testContext(t)
	cs := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), nil)

	res := cs.InitializeResult()
	if res.ProtocolVersion != "2026-07-28" {
		t.Errorf("negotiated %q, want 2026-07-28", res.ProtocolVersion)
	}
	if res.ServerInfo == nil || res.ServerInfo.Name != "mcptest-stateless" || res.Capabilities.Tools == nil {
		t.Errorf("discover result %+v", res)
	}
	if cs.ID() != "" {
		t.Errorf("session id %q in a sessionless era", cs.ID())
	}
	out, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "modern"}})
	if err != nil || textOf(t, out) != "modern" {
		t.Fatalf("echo = %v, %v", out, err)
	}
	for _, r := range srv.Requests() {
		if r.Method == "initialize" || r.SessionID != "" {
			t.Errorf("unexpected legacy request %+v", r)
		}
		if r.Method != "server/discover" && r.ProtocolVersion != "2026-07-28" {
			t.Errorf("request %+v without the 2026-07-28 header", r)
		}
	}
	if got := srv.Requests()[0].Method; got != "server/discover" {
		t.Errorf("first request %q, want server/discover", got)
	}
}

// TestStatelessMultiRoundTripAuto lets go-sdk's client middleware answer the
// input requests with the client's own handlers and retry.
func TestStatelessMultiRoundTripAuto(t *testing.T) {
	t.Parallel()
	srv := NewStatelessServer(t, nil)
	ctx := testContext(t)
	cs := connect(t, humanAnswers(t, make(chan string, 1)), srv.URL(), nil)

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "confirm", Arguments: map[string]any{"key": "mrtr-auto"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `action=accept approve=true summary="answer to Summarise the change." roots=file:///work`
	if got := textOf(t, res); got != want {
		t.Errorf("confirm = %q\nwant       %q", got, want)
	}
	if res.NeedsInput() {
		t.Error("final result still needs input")
	}
	if srv.InputRequired() != 1 || srv.KeyCalls("mrtr-auto") != 2 || srv.ToolCallsReceived("confirm") != 2 {
		t.Errorf("input_required %d, calls %d, received %d", srv.InputRequired(), srv.KeyCalls("mrtr-auto"), srv.ToolCallsReceived("confirm"))
	}
}

// TestStatelessMultiRoundTripManual is how the Tapline worker drives MRTR: the
// automatic middleware is off, the input requests become pending requests for
// a human, and the worker retries with the answers.
func TestStatelessMultiRoundTripManual(t *testing.T) {
	t.Parallel()
	srv := NewStatelessServer(t, nil)
	ctx := testContext(t)
	client := mcp.NewClient(testImpl, &mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}})
	cs := connect(t, client, srv.URL(), nil)

	args := map[string]any{"key": "mrtr-manual"}
	first, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "confirm", Arguments: args})
	if err != nil {
		t.Fatal(err)
	}
	if !first.NeedsInput() || first.RequestState == "" || len(first.InputRequests) != 3 {
		t.Fatalf("first result %+v", first)
	}
	if el, ok := first.InputRequests["approve"].(*mcp.ElicitParams); !ok || el.Mode != "form" || el.RequestedSchema == nil {
		t.Errorf("approve request %#v", first.InputRequests["approve"])
	}
	// On the client, a sampling input request always decodes as the
	// with-tools variant.
	if _, ok := first.InputRequests["summary"].(*mcp.CreateMessageWithToolsParams); !ok {
		t.Errorf("summary request %T", first.InputRequests["summary"])
	}
	if _, ok := first.InputRequests["roots"].(*mcp.ListRootsParams); !ok {
		t.Errorf("roots request %T", first.InputRequests["roots"])
	}

	retry := &mcp.CallToolParams{
		Name:      "confirm",
		Arguments: args,
		InputResponses: mcp.InputResponseMap{
			"approve": &mcp.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}},
			"summary": &mcp.CreateMessageResult{Role: "assistant", Model: "human", Content: &mcp.TextContent{Text: "LGTM"}},
			"roots":   &mcp.ListRootsResult{Roots: []*mcp.Root{{URI: "file:///repo"}}},
		},
		RequestState: first.RequestState,
	}
	final, err := cs.CallTool(ctx, retry)
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, final); got != `action=accept approve=true summary="LGTM" roots=file:///repo` {
		t.Errorf("final = %q", got)
	}
	// The same requestState cannot be redeemed twice.
	again, err := cs.CallTool(ctx, retry)
	if err != nil || !again.IsError || !strings.Contains(textOf(t, again), "already redeemed") {
		t.Errorf("replayed requestState = %+v, %v", again, err)
	}
}

func TestStatelessProgressAndCancel(t *testing.T) {
	t.Parallel()
	srv := NewStatelessServer(t, nil)
	ctx := testContext(t)
	var mu sync.Mutex
	var steps []float64
	cs := connect(t, mcp.NewClient(testImpl, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			steps = append(steps, req.Params.Progress)
			mu.Unlock()
		},
	}), srv.URL(), nil)

	params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 3, "interval_ms": 5}}
	params.SetProgressToken(7)
	if _, err := cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 progress notifications", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(steps) == 3
	})

	// Cancelling the caller's context closes the request's HTTP stream; with
	// PropagateRequestCancellation that cancels the handler.
	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"key": "close-me", "steps": 1000, "interval_ms": 20}})
		errc <- err
	}()
	if err := srv.WaitCall(ctx, "close-me"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("CallTool after cancel = %v", err)
	}
	eventually(t, "server-side cancellation", func() bool { return srv.CancelledCalls("slow") == 1 })
}

func TestStatelessNoCancelPropagation(t *testing.T) {
	t.Parallel()
	srv := NewStatelessServer(t, &StatelessOptions{NoCancelPropagation: true})
	ctx := testContext(t)
	cs := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), nil)

	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"key": "orphan", "steps": 5, "interval_ms": 20}})
		errc <- err
	}()
	if err := srv.WaitCall(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-errc
	// The orphaned handler runs to its end (about 100 ms) and is not counted
	// as cancelled: notifications/cancelled, if the client sends it, lands on
	// another temporary session.
	time.Sleep(300 * time.Millisecond)
	if n := srv.CancelledCalls("slow"); n != 0 {
		t.Errorf("cancelled calls = %d, want 0 without propagation", n)
	}
}

func TestStatelessLegacyClient(t *testing.T) {
	t.Parallel()
	srv := NewStatelessServer(t, nil)
	ctx := testContext(t)
	cs := connect(t, humanAnswers(t, make(chan string, 1)), srv.URL(), &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if got := cs.InitializeResult().ProtocolVersion; got != "2025-11-25" {
		t.Errorf("negotiated %q", got)
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "old"}}); err != nil || textOf(t, res) != "old" {
		t.Fatalf("echo = %v, %v", res, err)
	}
	// The SDK bridges input requests to server→client requests for old
	// clients, which a stateless server cannot send.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "confirm"})
	if err == nil && !res.IsError {
		t.Errorf("confirm on a legacy client succeeded: %+v", res)
	}
	t.Logf("confirm over 2025-11-25 on a stateless server: result %+v, err %v", res, err)
}
