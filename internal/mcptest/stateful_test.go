package mcptest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var testImpl = &mcp.Implementation{Name: "tapline-test", Version: "0.0.1"}

func TestStatefulNegotiation(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)

	// A default client asks for 2026-07-28 (server/discover), is refused by the
	// stateful handler and falls back to initialize at 2025-11-25.
	cs := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), nil)
	res := cs.InitializeResult()
	if res.ProtocolVersion != "2025-11-25" {
		t.Errorf("negotiated %q, want 2025-11-25", res.ProtocolVersion)
	}
	if res.ServerInfo.Name != "mcptest-stateful" || !strings.Contains(res.Instructions, "stateful") {
		t.Errorf("server info %+v, instructions %q", res.ServerInfo, res.Instructions)
	}
	caps := res.Capabilities
	if caps.Tools == nil || !caps.Tools.ListChanged || caps.Resources == nil || !caps.Resources.Subscribe || caps.Completions == nil || caps.Logging == nil || caps.Prompts == nil {
		t.Errorf("capabilities %+v", caps)
	}
	if cs.ID() == "" {
		t.Error("no Mcp-Session-Id")
	}

	// A pinned older version is honoured.
	pinned := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), &mcp.ClientSessionOptions{ProtocolVersion: "2025-06-18"})
	if got := pinned.InitializeResult().ProtocolVersion; got != "2025-06-18" {
		t.Errorf("pinned: negotiated %q", got)
	}
	var versions []string
	for _, r := range srv.Requests() {
		if r.Method == "tools/list" || r.ProtocolVersion == "" {
			continue
		}
		versions = append(versions, r.ProtocolVersion)
	}
	if !slices.Contains(versions, "2025-06-18") || !slices.Contains(versions, "2025-11-25") {
		t.Errorf("MCP-Protocol-Version headers seen: %v", versions)
	}
}

func TestStatefulLegacySSE(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	cs, err := mcp.NewClient(testImpl, nil).Connect(ctx, &mcp.SSEClientTransport{Endpoint: srv.SSEURL()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "over sse"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, res); got != "over sse" {
		t.Errorf("echo = %q", got)
	}
}

func TestStatefulContentTools(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	cs := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), nil)

	call := func(name string, args map[string]any) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	if got := textOf(t, call("echo", map[string]any{"text": "hi", "key": "k1"})); got != "hi" {
		t.Errorf("echo = %q", got)
	}
	add := call("add", map[string]any{"a": 2, "b": 40.5})
	var sum AddOut
	raw, _ := json.Marshal(add.StructuredContent)
	if err := json.Unmarshal(raw, &sum); err != nil || sum.Sum != 42.5 {
		t.Errorf("add structured = %s (%v)", raw, err)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		if tool.Name == "add" && tool.OutputSchema == nil {
			t.Error("add has no output schema")
		}
	}
	if img, ok := call("image", nil).Content[0].(*mcp.ImageContent); !ok || img.MIMEType != "image/png" || string(img.Data) != string(TinyPNG) {
		t.Errorf("image content wrong")
	}
	if au, ok := call("audio", nil).Content[0].(*mcp.AudioContent); !ok || au.MIMEType != "audio/wav" || string(au.Data) != string(TinyWAV) {
		t.Errorf("audio content wrong")
	}
	if rl, ok := call("resource_link", nil).Content[0].(*mcp.ResourceLink); !ok || rl.URI != HelloURI {
		t.Errorf("resource_link content wrong")
	}
	if er, ok := call("embedded_resource", nil).Content[0].(*mcp.EmbeddedResource); !ok || er.Resource.Text != helloText {
		t.Errorf("embedded_resource content wrong")
	}
	if fail := call("fail", nil); !fail.IsError || !strings.Contains(textOf(t, fail), "on purpose") {
		t.Errorf("fail = %+v", fail)
	}
	if big := textOf(t, call("big", nil)); len(big) != 100<<10 {
		t.Errorf("big is %d bytes", len(big))
	}

	if srv.ToolCalls("echo") != 1 || srv.KeyCalls("k1") != 1 || srv.ToolCallsReceived("big") != 1 {
		t.Errorf("ledger: echo %d, k1 %d, big received %d", srv.ToolCalls("echo"), srv.KeyCalls("k1"), srv.ToolCallsReceived("big"))
	}
	var echo ReceivedRequest
	for _, r := range srv.Requests() {
		if r.Tool == "echo" {
			echo = r
		}
	}
	if echo.Key != "k1" || echo.ID == "" || echo.SessionID != cs.ID() {
		t.Errorf("received echo = %+v (session %s)", echo, cs.ID())
	}
}

func TestStatefulProgressAndCancel(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	var mu sync.Mutex
	var progress []*mcp.ProgressNotificationParams
	client := mcp.NewClient(testImpl, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, req.Params)
			mu.Unlock()
		},
	})
	cs := connect(t, client, srv.URL(), nil)

	params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 4, "interval_ms": 5}}
	params.SetProgressToken("tok-1")
	if _, err := cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	eventually(t, "4 progress notifications", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(progress) == 4
	})
	mu.Lock()
	last := progress[3]
	mu.Unlock()
	if last.ProgressToken != "tok-1" || last.Progress != 4 || last.Total != 4 {
		t.Errorf("last progress %+v", last)
	}

	// Cancelling the caller's context sends notifications/cancelled; the
	// handler sees its context end.
	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"key": "cancel-me", "steps": 1000, "interval_ms": 20}})
		errc <- err
	}()
	if err := srv.WaitCall(ctx, "cancel-me"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("CallTool after cancel = %v", err)
	}
	eventually(t, "server-side cancellation", func() bool { return srv.CancelledCalls("slow") == 1 })
	eventually(t, "notifications/cancelled received", func() bool {
		for _, r := range srv.Requests() {
			if r.Method == "notifications/cancelled" {
				return true
			}
		}
		return false
	})
}

// humanAnswers is a client that answers every server→client request the way
// a Tapline worker would after a human replied.
func humanAnswers(t *testing.T, elicitCompleted chan<- string) *mcp.Client {
	client := mcp.NewClient(testImpl, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			prompt := req.Params.Messages[0].Content.(*mcp.TextContent).Text
			return &mcp.CreateMessageResult{Model: "human-1", Role: "assistant", StopReason: "endTurn", Content: &mcp.TextContent{Text: "answer to " + prompt}}, nil
		},
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			if req.Params.Mode == "url" {
				return &mcp.ElicitResult{Action: "accept"}, nil
			}
			if schema, _ := req.Params.RequestedSchema.(map[string]any); schema != nil {
				if props, _ := schema["properties"].(map[string]any); props["approve"] != nil {
					return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}}, nil
				}
			}
			// Partial content: the SDK fills the schema defaults in.
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Grace", "color": "blue"}}, nil
		},
		ElicitationCompleteHandler: func(_ context.Context, req *mcp.ElicitationCompleteNotificationRequest) {
			elicitCompleted <- req.Params.ElicitationID
		},
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{ListChanged: true},
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
	})
	client.AddRoots(&mcp.Root{URI: "file:///work", Name: "work"})
	return client
}

func TestStatefulServerToClientRequests(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	completed := make(chan string, 1)
	cs := connect(t, humanAnswers(t, completed), srv.URL(), nil)

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "sample", Arguments: map[string]any{"prompt": "ping?"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, res); got != "model=human-1 role=assistant stop=endTurn" || res.Content[1].(*mcp.TextContent).Text != "answer to ping?" {
		t.Errorf("sample = %q, %+v", got, res.Content)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "elicit"})
	if err != nil {
		t.Fatal(err)
	}
	var out ElicitOut
	raw, _ := json.Marshal(res.StructuredContent)
	_ = json.Unmarshal(raw, &out)
	if out.Action != "accept" || out.Content["name"] != "Grace" || out.Content["count"] != float64(3) || out.Content["subscribe"] != false {
		t.Errorf("elicit = %s", raw)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "elicit_url"})
	if err != nil {
		t.Fatal(err)
	}
	got := textOf(t, res)
	url := got[strings.Index(got, "url=")+4:]
	if !strings.HasPrefix(got, "action=accept elicitationId=el-") {
		t.Fatalf("elicit_url = %q", got)
	}
	resp, err := http.Get(url) // the human opens the link
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case id := <-completed:
		if !strings.Contains(got, "elicitationId="+id+" ") {
			t.Errorf("completed %q, result %q", id, got)
		}
	case <-ctx.Done():
		t.Fatal("no notifications/elicitation/complete")
	}

	// go-sdk v1.8.0 does not retry URLElicitationRequired by itself: the error
	// reaches the caller with the elicitation in its data.
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "elicit_url_required"})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != mcp.CodeURLElicitationRequired || !strings.Contains(string(werr.Data), "/elicit/el-") {
		t.Errorf("elicit_url_required error = %v", err)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "roots"})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, res); got != "work file:///work" {
		t.Errorf("roots = %q", got)
	}
}

func TestStatefulLogging(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	var mu sync.Mutex
	var levels []mcp.LoggingLevel
	cs := connect(t, mcp.NewClient(testImpl, &mcp.ClientOptions{
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) {
			mu.Lock()
			levels = append(levels, req.Params.Level)
			mu.Unlock()
		},
	}), srv.URL(), nil)

	// Before logging/setLevel the SDK sends nothing.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "log"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "warning"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "log"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two log messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(levels) >= 2
	})
	time.Sleep(50 * time.Millisecond) // nothing else may arrive
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(levels, []mcp.LoggingLevel{"warning", "error"}) {
		t.Errorf("levels = %v", levels)
	}
}

func TestStatefulResourcesPromptsCompletion(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	updated := make(chan string, 4)
	cs := connect(t, mcp.NewClient(testImpl, &mcp.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			updated <- req.Params.URI
		},
	}), srv.URL(), nil)

	resources, err := cs.ListResources(ctx, nil)
	if err != nil || len(resources.Resources) != 2 {
		t.Fatalf("resources = %+v, %v", resources, err)
	}
	templates, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil || len(templates.ResourceTemplates) != 1 || templates.ResourceTemplates[0].URITemplate != ItemTemplate {
		t.Fatalf("templates = %+v, %v", templates, err)
	}
	read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://items/beta"})
	if err != nil || read.Contents[0].Text != `{"id":"beta"}` {
		t.Fatalf("read item = %+v, %v", read, err)
	}
	blob, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: BlobURI})
	if err != nil || string(blob.Contents[0].Blob) != string(TinyPNG) {
		t.Fatalf("read blob: %v", err)
	}

	comp, err := cs.Complete(ctx, &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/resource", URI: ItemTemplate},
		Argument: mcp.CompleteParamsArgument{Name: "id", Value: "al"},
	})
	if err != nil || !slices.Equal(comp.Completion.Values, []string{"alpha", "alpine"}) {
		t.Errorf("complete template = %+v, %v", comp, err)
	}
	comp, err = cs.Complete(ctx, &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"},
		Argument: mcp.CompleteParamsArgument{Name: "style", Value: "p"},
	})
	if err != nil || !slices.Equal(comp.Completion.Values, []string{"pirate"}) {
		t.Errorf("complete prompt = %+v, %v", comp, err)
	}
	prompt, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada", "style": "formal"}})
	if err != nil || prompt.Messages[0].Content.(*mcp.TextContent).Text != "Greet Ada in a formal style." {
		t.Errorf("prompt = %+v, %v", prompt, err)
	}

	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: HelloURI}); err != nil {
		t.Fatal(err)
	}
	if srv.Subscriptions(HelloURI) != 1 {
		t.Errorf("subscriptions = %d", srv.Subscriptions(HelloURI))
	}
	if err := srv.TriggerResourceUpdated(HelloURI); err != nil {
		t.Fatal(err)
	}
	select {
	case uri := <-updated:
		if uri != HelloURI {
			t.Errorf("updated %q", uri)
		}
	case <-ctx.Done():
		t.Fatal("no notifications/resources/updated")
	}
	if err := cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: HelloURI}); err != nil {
		t.Fatal(err)
	}
	if srv.Subscriptions(HelloURI) != 0 {
		t.Errorf("subscriptions after unsubscribe = %d", srv.Subscriptions(HelloURI))
	}
}

func TestStatefulListChanged(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	changed := make(chan struct{}, 4)
	cs := connect(t, mcp.NewClient(testImpl, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	}), srv.URL(), nil)

	has := func(name string) bool {
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(res.Tools, func(tool *mcp.Tool) bool { return tool.Name == name })
	}
	wait := func() {
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("no notifications/tools/list_changed")
		}
	}
	// The notification travels on the standalone GET stream, which the client
	// opens right after initialize; the event store replays it if the GET
	// attaches late.
	srv.AddTool("extra")
	wait()
	if !has("extra") {
		t.Error("extra not listed after add")
	}
	srv.RemoveTool("extra")
	wait()
	if has("extra") {
		t.Error("extra still listed after remove")
	}
}

func TestStatefulCloseSessions(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	cs := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), nil)
	if srv.SessionCount() != 1 {
		t.Fatalf("sessions = %d", srv.SessionCount())
	}
	srv.CloseSessions()
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
	if !errors.Is(err, mcp.ErrSessionMissing) {
		t.Errorf("after server-side close: %v, want ErrSessionMissing", err)
	}
}

func TestStatefulJSONResponse(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, &StatefulOptions{JSONResponse: true, NoEventStore: true})
	ctx := testContext(t)
	cs := connect(t, mcp.NewClient(testImpl, nil), srv.URL(), nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "json"}})
	if err != nil || textOf(t, res) != "json" {
		t.Fatalf("echo = %v, %v", res, err)
	}
}

// rawParams and rawResult carry arbitrary JSON through go-sdk's custom-method
// API, which is how an inspector sends a request the SDK has no method for.
type rawParams struct {
	mcp.ParamsBase
	raw json.RawMessage
}

func (p *rawParams) MarshalJSON() ([]byte, error) { return p.raw, nil }

type rawResult struct {
	mcp.ResultBase
	raw json.RawMessage
}

func (r *rawResult) UnmarshalJSON(data []byte) error {
	r.raw = append(json.RawMessage(nil), data...)
	return nil
}

func TestStatefulRawRequest(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	client := mcp.NewClient(testImpl, nil)
	for _, m := range []string{CustomMethod, "no/such/method"} {
		if err := mcp.AddSendingCustomMethod[*rawParams, *rawResult](client, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := mcp.AddSendingCustomMethod[*rawParams, *rawResult](client, "tools/list"); err == nil {
		t.Error("a standard method was accepted as custom")
	}
	cs := connect(t, client, srv.URL(), nil)

	res, err := mcp.CallCustomMethod[*rawParams, *rawResult](ctx, cs, CustomMethod, &rawParams{raw: json.RawMessage(`{"value":[1,"two"]}`)})
	if err != nil || string(res.raw) != `{"value":[1,"two"]}` {
		t.Fatalf("custom = %s, %v", res.raw, err)
	}

	// An unknown method is refused by go-sdk's server before JSON-RPC (HTTP
	// 400, plain text), which the client takes as a broken connection.
	_, err = mcp.CallCustomMethod[*rawParams, *rawResult](ctx, cs, "no/such/method", &rawParams{raw: json.RawMessage(`{}`)})
	if err == nil {
		t.Fatal("unknown method succeeded")
	}
	_, listErr := cs.ListTools(ctx, nil)
	t.Logf("unknown method: %v; session afterwards: %v", err, listErr)
	if listErr == nil {
		t.Error("session survived an unknown method; update the findings")
	}
}
