package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// StatusURI is the resource every chaos session subscribes to, so the runner can check that a
// new owner restored the subscription.
const StatusURI = "chaos://status"

// Target is the MCP server the chaos sessions connect to: one go-sdk server exposed as a
// 2025-11-25 stateful endpoint (/mcp, resumable, sessions) and as a 2026-07-28 stateless one
// (/mcp26). Its Ledger records every tool invocation by the unique "key" argument, and what
// each MCP session set up (subscriptions, logging level), so the runner can compare what the
// target received with what Tapline stored.
type Target struct {
	srv       *http.Server
	ln        net.Listener
	server    *mcp.Server
	stop      context.CancelFunc
	stopCtx   context.Context
	done      chan struct{}
	Ledger    *Ledger
	Stateful  string // URL of the 2025-era endpoint
	Stateless string // URL of the 2026-07-28 endpoint
}

// Ledger is what the target received.
type Ledger struct {
	mu sync.Mutex
	// invocations counts tool handler runs per key; completed counts runs that returned a
	// result to the transport (the client may still have died before reading it).
	invocations map[string]int
	completed   map[string]int
	started     map[string]time.Time
	mcpSession  map[string]string // key -> Mcp-Session-Id it arrived on ("" for stateless)
	// setup per MCP session id: subscribed and logging level set.
	subscribed map[string]bool
	levelSet   map[string]bool
	calledOn   map[string]int // tool calls per MCP session id
	initialize int
	waiters    map[string][]chan struct{}
}

func newLedger() *Ledger {
	return &Ledger{
		invocations: map[string]int{}, completed: map[string]int{}, started: map[string]time.Time{},
		mcpSession: map[string]string{}, subscribed: map[string]bool{}, levelSet: map[string]bool{},
		calledOn: map[string]int{}, waiters: map[string][]chan struct{}{},
	}
}

// Invocations returns how often the tool ran for key.
func (l *Ledger) Invocations(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.invocations[key]
}

// Keys returns every key the target ran, with its invocation count.
func (l *Ledger) Keys() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.invocations))
	for k, v := range l.invocations {
		out[k] = v
	}
	return out
}

// Completed reports whether the target finished running key.
func (l *Ledger) Completed(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.completed[key] > 0
}

// SessionOf returns the MCP session id a key's call arrived on.
func (l *Ledger) SessionOf(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mcpSession[key]
}

// UnrestoredSessions counts stateful MCP sessions that received tool calls without having been
// given the subscription and the logging level first: a takeover that did not restore them.
func (l *Ledger) UnrestoredSessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id, calls := range l.calledOn {
		if id == "" || calls == 0 {
			continue
		}
		if !l.subscribed[id] || !l.levelSet[id] {
			n++
		}
	}
	return n
}

// Running returns the keys whose handler is running now.
func (l *Ledger) Running() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, n := range l.invocations {
		if n > l.completed[k] {
			out = append(out, k)
		}
	}
	return out
}

// WaitStarted blocks until the tool runs for key or ctx ends.
func (l *Ledger) WaitStarted(ctx context.Context, key string) error {
	l.mu.Lock()
	if l.invocations[key] > 0 {
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters[key] = append(l.waiters[key], ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type workIn struct {
	Key        string `json:"key"`
	Steps      int    `json:"steps,omitempty"`
	IntervalMS int    `json:"interval_ms,omitempty"`
}

// NewTarget starts the target on a free loopback port.
func NewTarget() (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	stopCtx, stop := context.WithCancel(context.Background())
	t := &Target{ln: ln, stop: stop, stopCtx: stopCtx, done: make(chan struct{}), Ledger: newLedger()}
	t.server = mcp.NewServer(&mcp.Implementation{Name: "chaos-target", Version: "1.0.0"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	t.server.AddReceivingMiddleware(t.middleware)
	t.server.AddResource(&mcp.Resource{URI: StatusURI, Name: "status", MIMEType: "text/plain"},
		func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: StatusURI, Text: "ok"}}}, nil
		})
	mcp.AddTool(t.server, &mcp.Tool{Name: "work", Description: "reports progress for a while, then answers its key"}, t.work)

	stateful := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return t.server },
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})
	stateless := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return t.server },
		&mcp.StreamableHTTPOptions{Stateless: true})
	mux := http.NewServeMux()
	mux.Handle("/mcp", t.tap(stateful))
	mux.Handle("/mcp26", t.tap(stateless))
	t.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return stopCtx }}
	go func() {
		defer close(t.done)
		_ = t.srv.Serve(ln)
	}()
	base := "http://" + ln.Addr().String()
	t.Stateful, t.Stateless = base+"/mcp", base+"/mcp26"
	return t, nil
}

// Close stops the target; running handlers are cancelled.
func (t *Target) Close() {
	t.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = t.srv.Shutdown(ctx)
	_ = t.srv.Close()
	<-t.done
}

type sessionIDKey struct{}

// tap records the Mcp-Session-Id of each request so handlers know it, and counts initialize.
func (t *Target) tap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body.Close()
			r.Body = io.NopCloser(bytes.NewReader(body))
			if err == nil && bytes.Contains(body, []byte(`"initialize"`)) {
				t.Ledger.mu.Lock()
				t.Ledger.initialize++
				t.Ledger.mu.Unlock()
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (t *Target) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		sid := ""
		if ss, ok := req.GetSession().(*mcp.ServerSession); ok && ss != nil {
			sid = ss.ID()
		}
		l := t.Ledger
		switch method {
		case "resources/subscribe":
			l.mu.Lock()
			l.subscribed[sid] = true
			l.mu.Unlock()
		case "logging/setLevel":
			l.mu.Lock()
			l.levelSet[sid] = true
			l.mu.Unlock()
		case "tools/call":
			l.mu.Lock()
			l.calledOn[sid]++
			l.mu.Unlock()
		}
		// Handlers end when the target stops, so Close never waits on a parked call.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		unhook := context.AfterFunc(t.stopCtx, cancel)
		defer unhook()
		return next(ctx, method, req)
	}
}

func (t *Target) work(ctx context.Context, req *mcp.CallToolRequest, in workIn) (*mcp.CallToolResult, any, error) {
	if in.Key == "" {
		return nil, nil, errors.New("work: key is required")
	}
	sid := ""
	if req.Session != nil {
		sid = req.Session.ID()
	}
	l := t.Ledger
	l.mu.Lock()
	l.invocations[in.Key]++
	l.started[in.Key] = time.Now()
	l.mcpSession[in.Key] = sid
	ws := l.waiters[in.Key]
	delete(l.waiters, in.Key)
	l.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
	steps, interval := max(in.Steps, 1), time.Duration(max(in.IntervalMS, 1))*time.Millisecond
	token := req.Params.GetProgressToken()
	for i := range steps {
		if token != nil {
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
				ProgressToken: token, Progress: float64(i + 1), Total: float64(steps), Message: fmt.Sprintf("%s %d/%d", in.Key, i+1, steps),
			})
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(interval):
		}
	}
	l.mu.Lock()
	l.completed[in.Key]++
	l.mu.Unlock()
	out, _ := json.Marshal(map[string]string{"key": in.Key})
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(out)}}}, nil, nil
}
