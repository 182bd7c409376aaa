package mcptest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Resource URIs served by [StatefulServer].
const (
	// HelloURI is a static text resource.
	HelloURI = "mcptest://static/hello"
	// BlobURI is a static binary resource.
	BlobURI = "mcptest://static/blob"
	// ItemTemplate is a resource template whose {id} completes over Items.
	ItemTemplate = "mcptest://items/{id}"
)

// Items are the ids the resource template serves and completes.
var Items = []string{"alpha", "alpine", "beta", "gamma"}

// GreetStyles are the completions of the "style" argument of the "greet"
// prompt.
var GreetStyles = []string{"casual", "formal", "pirate"}

// StatefulOptions configures a [StatefulServer]. The zero value is a server
// that answers POSTs with SSE streams and keeps events for resumption.
type StatefulOptions struct {
	// JSONResponse answers POSTs with application/json instead of SSE; related
	// notifications then travel on the standalone GET stream.
	JSONResponse bool
	// NoEventStore disables resumability (no SSE event ids, no priming event).
	NoEventStore bool
}

// A StatefulServer is a go-sdk MCP server of the 2025 era (the newest it
// negotiates is 2025-11-25; a 2026-07-28 client falls back to initialize)
// with sessions, served on loopback over Streamable HTTP at [StatefulServer.URL]
// and over the legacy HTTP+SSE transport at [StatefulServer.SSEURL].
//
// Tools (every one accepts an optional string argument "key", see [Ledger]):
//
//	echo {text}                  text content
//	add {a, b}                   structured content {sum} with an output schema
//	slow {steps, interval_ms}    one progress notification per step (with total); honours cancellation
//	sample {prompt}              sampling/createMessage to the client; returns the answer
//	elicit {message}             form elicitation with defaults and enums; returns action and content
//	elicit_url {}                URL-mode elicitation; completion when the URL is visited
//	elicit_url_required {}       fails with -32042 URLElicitationRequired
//	roots {}                     roots/list to the client
//	log {}                       notifications/message at debug … error, filtered by logging/setLevel
//	image, audio                 image and audio content
//	resource_link                a resource_link to HelloURI
//	embedded_resource            an embedded HelloURI
//	fail {}                      a tool error (isError true)
//	big {size}                   a text result of size bytes (default 100 KiB)
//
// The non-standard method CustomMethod echoes its params' "value".
//
// Resources: HelloURI, BlobURI and ItemTemplate (with completion over Items);
// resources/subscribe is supported and [StatefulServer.TriggerResourceUpdated]
// sends notifications/resources/updated. Prompt "greet" takes "name"
// (required) and "style" (completed over GreetStyles).
type StatefulServer struct {
	*Ledger

	t      testing.TB
	server *mcp.Server
	http   *httptest.Server
	stop   context.CancelFunc

	closeOnce sync.Once

	mu              sync.Mutex
	subscriptions   map[string]int                // uri -> live subscriptions
	urlElicitations map[string]*mcp.ServerSession // elicitation id -> session
	nextElicitation atomic.Int64
}

// NewStatefulServer starts a StatefulServer on loopback and stops it when
// the test ends. opts may be nil.
func NewStatefulServer(t testing.TB, opts *StatefulOptions) *StatefulServer {
	t.Helper()
	if opts == nil {
		opts = &StatefulOptions{}
	}
	stopCtx, stop := context.WithCancel(context.Background())
	s := &StatefulServer{
		Ledger:          newLedger(),
		t:               t,
		stop:            stop,
		subscriptions:   make(map[string]int),
		urlElicitations: make(map[string]*mcp.ServerSession),
	}
	s.server = mcp.NewServer(&mcp.Implementation{Name: "mcptest-stateful", Title: "Tapline stateful test server", Version: "1.0.0"},
		&mcp.ServerOptions{
			Instructions:       "Tapline's stateful test server. Every tool accepts an optional \"key\".",
			CompletionHandler:  s.complete,
			SubscribeHandler:   s.subscribe,
			UnsubscribeHandler: s.unsubscribe,
			// 2026-07-28 needs a stateless handler; offer the 2025 era only.
			SupportedProtocolVersions: []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"},
		})
	s.server.AddReceivingMiddleware(s.Ledger.middleware(stopCtx))
	s.addTools()
	s.addResources()
	s.addPrompts()
	if err := mcp.AddReceivingCustomMethod(s.server, CustomMethod, echoCustom); err != nil {
		t.Fatalf("mcptest: %v", err)
	}

	hopts := &mcp.StreamableHTTPOptions{JSONResponse: opts.JSONResponse}
	if !opts.NoEventStore {
		hopts.EventStore = mcp.NewMemoryEventStore(nil)
	}
	getServer := func(*http.Request) *mcp.Server { return s.server }
	mux := http.NewServeMux()
	mux.Handle("/mcp", s.Ledger.tap(mcp.NewStreamableHTTPHandler(getServer, hopts)))
	mux.Handle("/sse", s.Ledger.tap(mcp.NewSSEHandler(getServer, nil)))
	mux.HandleFunc("GET /elicit/{id}", s.serveElicitationPage)
	s.http = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// URL is the Streamable HTTP endpoint, http://127.0.0.1:PORT/mcp.
func (s *StatefulServer) URL() string { return s.http.URL + "/mcp" }

// SSEURL is the legacy HTTP+SSE endpoint (protocol 2024-11-05 transport).
func (s *StatefulServer) SSEURL() string { return s.http.URL + "/sse" }

// Server is the underlying go-sdk server, for tests that add their own
// features.
func (s *StatefulServer) Server() *mcp.Server { return s.server }

// Close stops the server: running tool handlers are cancelled, sessions are
// closed, client connections are dropped. It is idempotent.
func (s *StatefulServer) Close() {
	s.closeOnce.Do(func() {
		shutdown(s.t, "StatefulServer", s.http, func() {
			s.stop()
			closeSessions(s.server)
		})
	})
}

// CloseSessions ends every session on the server side, as a restarted target
// would: the next request carrying an old Mcp-Session-Id gets 404.
func (s *StatefulServer) CloseSessions() { closeSessions(s.server) }

// SessionCount reports how many sessions are live.
func (s *StatefulServer) SessionCount() int {
	n := 0
	for range s.server.Sessions() {
		n++
	}
	return n
}

// AddTool adds (or replaces) a tool named name that answers with its own
// name, and notifies every session with notifications/tools/list_changed.
func (s *StatefulServer) AddTool(name string) {
	mcp.AddTool(s.server, &mcp.Tool{Name: name, Description: "added at run time"},
		func(context.Context, *mcp.CallToolRequest, keyOnly) (*mcp.CallToolResult, any, error) {
			return text(name), nil, nil
		})
}

// RemoveTool removes the tool named name and notifies every session.
func (s *StatefulServer) RemoveTool(name string) { s.server.RemoveTools(name) }

// TriggerResourceUpdated sends notifications/resources/updated for uri to
// every session subscribed to it.
func (s *StatefulServer) TriggerResourceUpdated(uri string) error {
	return s.server.ResourceUpdated(context.Background(), &mcp.ResourceUpdatedNotificationParams{URI: uri})
}

// Subscriptions reports resources/subscribe minus resources/unsubscribe
// requests received for uri.
func (s *StatefulServer) Subscriptions(uri string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscriptions[uri]
}

// CompleteURLElicitation sends notifications/elicitation/complete for the
// URL-mode elicitation id, as visiting its URL does.
func (s *StatefulServer) CompleteURLElicitation(id string) error {
	s.mu.Lock()
	ss := s.urlElicitations[id]
	delete(s.urlElicitations, id)
	s.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("mcptest: no pending URL elicitation %q", id)
	}
	return ss.NotifyElicitationComplete(context.Background(), &mcp.ElicitationCompleteParams{ElicitationID: id})
}

// serveElicitationPage is the page a URL-mode elicitation points at: the
// human "visits" it and the server reports completion.
func (s *StatefulServer) serveElicitationPage(w http.ResponseWriter, r *http.Request) {
	if err := s.CompleteURLElicitation(r.PathValue("id")); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	fmt.Fprintln(w, "elicitation complete")
}

// CustomMethod is a non-standard JSON-RPC method [StatefulServer] answers,
// for "raw request" tests: {"value": V} → {"value": V}.
const CustomMethod = "mcptest/echo"

// CustomParams are the params of CustomMethod.
type CustomParams struct {
	mcp.ParamsBase
	Value any `json:"value"`
}

// CustomResult is the result of CustomMethod.
type CustomResult struct {
	mcp.ResultBase
	Value any `json:"value"`
}

func echoCustom(_ context.Context, _ *mcp.ServerSession, p *CustomParams) (*CustomResult, error) {
	return &CustomResult{Value: p.Value}, nil
}

// keyOnly is the input of tools that take nothing but the optional key.
type keyOnly struct {
	Key string `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
}

type echoIn struct {
	Key  string `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
	Text string `json:"text" jsonschema:"the text to echo"`
}

type addIn struct {
	Key string  `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
	A   float64 `json:"a" jsonschema:"first addend"`
	B   float64 `json:"b" jsonschema:"second addend"`
}

// AddOut is the structured result of the "add" tool.
type AddOut struct {
	Sum float64 `json:"sum" jsonschema:"a + b"`
}

type slowIn struct {
	Key        string `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
	Steps      int    `json:"steps,omitempty" jsonschema:"number of progress steps (default 5)"`
	IntervalMS int    `json:"interval_ms,omitempty" jsonschema:"pause between steps in milliseconds (default 50)"`
}

type sampleIn struct {
	Key    string `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
	Prompt string `json:"prompt,omitempty" jsonschema:"the user message to sample on"`
}

type elicitIn struct {
	Key     string `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
	Message string `json:"message,omitempty" jsonschema:"the question shown to the human"`
}

// ElicitOut is the structured result of the "elicit" tool: what the client
// answered.
type ElicitOut struct {
	Action  string         `json:"action"`
	Content map[string]any `json:"content,omitempty"`
}

type bigIn struct {
	Key  string `json:"key,omitempty" jsonschema:"caller-supplied id recorded by the test server"`
	Size int    `json:"size,omitempty" jsonschema:"size of the text in bytes (default 102400)"`
}

// ElicitSchema is the form the "elicit" tool asks for: a string with a
// default, a single-select enum with a default, an integer with bounds and a
// default, and a boolean with a default.
var ElicitSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"name":      map[string]any{"type": "string", "title": "Name", "default": "Ada"},
		"color":     map[string]any{"type": "string", "title": "Colour", "enum": []any{"red", "green", "blue"}, "default": "green"},
		"count":     map[string]any{"type": "integer", "title": "Count", "minimum": 1, "maximum": 10, "default": 3},
		"subscribe": map[string]any{"type": "boolean", "title": "Subscribe", "default": false},
	},
	"required": []any{"name"},
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func (s *StatefulServer) addTools() {
	mcp.AddTool(s.server, &mcp.Tool{Name: "echo", Description: "echoes text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "add", Description: "adds two numbers (structured output)"},
		func(_ context.Context, _ *mcp.CallToolRequest, in addIn) (*mcp.CallToolResult, AddOut, error) {
			return nil, AddOut{Sum: in.A + in.B}, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "slow", Description: "reports progress, honours cancellation"}, slowTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "sample", Description: "asks the client to sample"}, sampleTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "elicit", Description: "form-mode elicitation"}, elicitTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "elicit_url", Description: "URL-mode elicitation"}, s.elicitURLTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "elicit_url_required", Description: "fails with URLElicitationRequired (-32042)"}, s.elicitURLRequiredTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "roots", Description: "lists the client's roots"}, rootsTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "log", Description: "logs at debug, info, notice, warning and error"}, logTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "image", Description: "image content"},
		func(context.Context, *mcp.CallToolRequest, keyOnly) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{Data: TinyPNG, MIMEType: "image/png"}}}, nil, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "audio", Description: "audio content"},
		func(context.Context, *mcp.CallToolRequest, keyOnly) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.AudioContent{Data: TinyWAV, MIMEType: "audio/wav"}}}, nil, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "resource_link", Description: "a resource_link content block"},
		func(context.Context, *mcp.CallToolRequest, keyOnly) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.ResourceLink{URI: HelloURI, Name: "hello", Title: "Hello", MIMEType: "text/plain"}}}, nil, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "embedded_resource", Description: "an embedded resource content block"},
		func(context.Context, *mcp.CallToolRequest, keyOnly) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: HelloURI, MIMEType: "text/plain", Text: helloText}}}}, nil, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "fail", Description: "a tool error (isError)"},
		func(context.Context, *mcp.CallToolRequest, keyOnly) (*mcp.CallToolResult, any, error) {
			return nil, nil, errors.New("fail: the tool failed on purpose")
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "big", Description: "a large text result"},
		func(_ context.Context, _ *mcp.CallToolRequest, in bigIn) (*mcp.CallToolResult, any, error) {
			size := in.Size
			if size <= 0 {
				size = 100 << 10
			}
			return text(BigText(size)), nil, nil
		})
}

// BigText returns size bytes of printable text, the result of "big".
func BigText(size int) string {
	const line = "0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
	return strings.Repeat(line, size/len(line)+1)[:size]
}

func slowTool(ctx context.Context, req *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, any, error) {
	steps, interval := in.Steps, time.Duration(in.IntervalMS)*time.Millisecond
	if steps <= 0 {
		steps = 5
	}
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	token := req.Params.GetProgressToken()
	for i := range steps {
		if token != nil {
			// A failed notification must not end the call: progress is advisory.
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
				ProgressToken: token,
				Progress:      float64(i + 1),
				Total:         float64(steps),
				Message:       fmt.Sprintf("step %d of %d", i+1, steps),
			})
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("slow: cancelled after %d of %d steps: %w", i+1, steps, ctx.Err())
		case <-time.After(interval):
		}
	}
	return text(fmt.Sprintf("slow: done after %d steps", steps)), nil, nil
}

func sampleTool(ctx context.Context, req *mcp.CallToolRequest, in sampleIn) (*mcp.CallToolResult, any, error) {
	prompt := in.Prompt
	if prompt == "" {
		prompt = "Say hello."
	}
	res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
		Messages:     []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: prompt}}},
		SystemPrompt: "You are a test double.",
		MaxTokens:    64,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sampling failed: %w", err)
	}
	out := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("model=%s role=%s stop=%s", res.Model, res.Role, res.StopReason)}}}
	if res.Content != nil {
		out.Content = append(out.Content, res.Content)
	}
	return out, nil, nil
}

func elicitTool(ctx context.Context, req *mcp.CallToolRequest, in elicitIn) (*mcp.CallToolResult, ElicitOut, error) {
	msg := in.Message
	if msg == "" {
		msg = "Tell us about yourself."
	}
	res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: msg, RequestedSchema: ElicitSchema})
	if err != nil {
		return nil, ElicitOut{}, fmt.Errorf("elicitation failed: %w", err)
	}
	return nil, ElicitOut{Action: res.Action, Content: res.Content}, nil
}

func (s *StatefulServer) newURLElicitation(ss *mcp.ServerSession) (id, url string) {
	id = fmt.Sprintf("el-%d", s.nextElicitation.Add(1))
	s.mu.Lock()
	s.urlElicitations[id] = ss
	s.mu.Unlock()
	return id, s.http.URL + "/elicit/" + id
}

func (s *StatefulServer) elicitURLTool(ctx context.Context, req *mcp.CallToolRequest, _ keyOnly) (*mcp.CallToolResult, any, error) {
	id, url := s.newURLElicitation(req.Session)
	res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{
		Mode:          "url",
		Message:       "Open the link to finish.",
		URL:           url,
		ElicitationID: id,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("elicitation failed: %w", err)
	}
	return text(fmt.Sprintf("action=%s elicitationId=%s url=%s", res.Action, id, url)), nil, nil
}

func (s *StatefulServer) elicitURLRequiredTool(_ context.Context, req *mcp.CallToolRequest, _ keyOnly) (*mcp.CallToolResult, any, error) {
	id, url := s.newURLElicitation(req.Session)
	return nil, nil, mcp.URLElicitationRequiredError([]*mcp.ElicitParams{{
		Mode:          "url",
		Message:       "Authorise at the link, then retry.",
		URL:           url,
		ElicitationID: id,
	}})
}

func rootsTool(ctx context.Context, req *mcp.CallToolRequest, _ keyOnly) (*mcp.CallToolResult, any, error) {
	res, err := req.Session.ListRoots(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("roots/list failed: %w", err)
	}
	var lines []string
	for _, r := range res.Roots {
		lines = append(lines, r.Name+" "+r.URI)
	}
	return text(strings.Join(lines, "\n")), nil, nil
}

// LogLevels are the levels the "log" tool emits, lowest first.
var LogLevels = []mcp.LoggingLevel{"debug", "info", "notice", "warning", "error"}

func logTool(ctx context.Context, req *mcp.CallToolRequest, _ keyOnly) (*mcp.CallToolResult, any, error) {
	for _, level := range LogLevels {
		// The SDK drops messages below the level set by logging/setLevel (and
		// everything before any setLevel).
		if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{
			Level:  level,
			Logger: "mcptest",
			Data:   map[string]any{"level": string(level), "msg": "log tool says " + string(level)},
		}); err != nil {
			return nil, nil, err
		}
	}
	return text("logged"), nil, nil
}

const helloText = "Hello from mcptest."

func (s *StatefulServer) addResources() {
	s.server.AddResource(&mcp.Resource{URI: HelloURI, Name: "hello", Title: "Hello", MIMEType: "text/plain"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: helloText}}}, nil
		})
	s.server.AddResource(&mcp.Resource{URI: BlobURI, Name: "blob", MIMEType: "image/png"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "image/png", Blob: TinyPNG}}}, nil
		})
	s.server.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: ItemTemplate, Name: "item", MIMEType: "application/json"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			id := strings.TrimPrefix(req.Params.URI, "mcptest://items/")
			if !slices.Contains(Items, id) {
				return nil, mcp.ResourceNotFoundError(req.Params.URI)
			}
			data, _ := json.Marshal(map[string]string{"id": id})
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: string(data)}}}, nil
		})
}

func (s *StatefulServer) addPrompts() {
	s.server.AddPrompt(&mcp.Prompt{
		Name:        "greet",
		Description: "a greeting",
		Arguments: []*mcp.PromptArgument{
			{Name: "name", Description: "who to greet", Required: true},
			{Name: "style", Description: "casual, formal or pirate"},
		},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		name, style := req.Params.Arguments["name"], req.Params.Arguments["style"]
		if name == "" {
			return nil, errors.New("greet: argument \"name\" is required")
		}
		if style == "" {
			style = "casual"
		}
		return &mcp.GetPromptResult{
			Description: "greet " + name,
			Messages:    []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: fmt.Sprintf("Greet %s in a %s style.", name, style)}}},
		}, nil
	})
}

func (s *StatefulServer) complete(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	var candidates []string
	switch ref, arg := req.Params.Ref, req.Params.Argument.Name; {
	case ref.Type == "ref/prompt" && ref.Name == "greet" && arg == "style":
		candidates = GreetStyles
	case ref.Type == "ref/resource" && ref.URI == ItemTemplate && arg == "id":
		candidates = Items
	}
	values := []string{}
	for _, c := range candidates {
		if strings.HasPrefix(c, req.Params.Argument.Value) {
			values = append(values, c)
		}
	}
	return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: values, Total: len(values)}}, nil
}

func (s *StatefulServer) subscribe(_ context.Context, req *mcp.SubscribeRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscriptions[req.Params.URI]++
	return nil
}

func (s *StatefulServer) unsubscribe(_ context.Context, req *mcp.UnsubscribeRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subscriptions[req.Params.URI] > 0 {
		s.subscriptions[req.Params.URI]--
	}
	return nil
}
