package mcptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A ReceivedRequest is one JSON-RPC message that reached a server over HTTP,
// recorded before the SDK handled it (so rejected and duplicate requests are
// counted too).
type ReceivedRequest struct {
	Method          string // JSON-RPC method
	ID              string // raw JSON id, "" for a notification
	Tool            string // params.name of a tools/call
	Key             string // params.arguments.key of a tools/call, if any
	SessionID       string // Mcp-Session-Id header
	ProtocolVersion string // MCP-Protocol-Version header
}

// A Ledger records what a test server received and what it ran. Tools of the
// go-sdk servers accept an optional string argument "key" so that a test can
// follow one logical call through retries and failovers.
//
// All methods are safe for concurrent use.
type Ledger struct {
	mu        sync.Mutex
	received  []ReceivedRequest
	toolCalls map[string]int // tool name -> handler invocations
	keyCalls  map[string]int // key -> handler invocations
	cancelled map[string]int // tool name -> invocations that ended with ctx done
	started   map[string]chan struct{}
}

func newLedger() *Ledger {
	return &Ledger{
		toolCalls: make(map[string]int),
		keyCalls:  make(map[string]int),
		cancelled: make(map[string]int),
		started:   make(map[string]chan struct{}),
	}
}

// Requests returns the JSON-RPC messages received over HTTP, in arrival order.
func (l *Ledger) Requests() []ReceivedRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ReceivedRequest(nil), l.received...)
}

// ToolCallsReceived reports how many tools/call requests for tool arrived over
// HTTP, whether or not the tool ran.
func (l *Ledger) ToolCallsReceived(tool string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.received {
		if r.Method == "tools/call" && r.Tool == tool {
			n++
		}
	}
	return n
}

// ToolCalls reports how many times the handler of tool was invoked.
func (l *Ledger) ToolCalls(tool string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.toolCalls[tool]
}

// KeyCalls reports how many tool handler invocations carried the argument
// key == key.
func (l *Ledger) KeyCalls(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keyCalls[key]
}

// CancelledCalls reports how many invocations of tool returned after their
// context was cancelled (by notifications/cancelled, a closed request stream,
// or Close).
func (l *Ledger) CancelledCalls(tool string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cancelled[tool]
}

// WaitCall blocks until a tool handler invocation with argument key == key
// has started, or ctx is done.
func (l *Ledger) WaitCall(ctx context.Context, key string) error {
	select {
	case <-l.startedChan(key):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Ledger) startedChan(key string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.started[key]
	if !ok {
		ch = make(chan struct{})
		l.started[key] = ch
	}
	return ch
}

// maxTappedBody bounds how much of a request body the HTTP tap parses; the
// SDK handlers enforce their own (smaller) limit.
const maxTappedBody = 8 << 20

// tap wraps next so that every JSON-RPC message POSTed to it is recorded.
func (l *Ledger) tap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxTappedBody))
			r.Body.Close()
			r.Body = io.NopCloser(bytes.NewReader(body))
			if err == nil {
				l.record(r.Header, body)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// wireRequest is the part of a JSON-RPC request the tap looks at.
type wireRequest struct {
	Method string          `json:"method"`
	ID     json.RawMessage `json:"id"`
	Params struct {
		Name      string `json:"name"`
		Arguments struct {
			Key string `json:"key"`
		} `json:"arguments"`
	} `json:"params"`
}

func (l *Ledger) record(h http.Header, body []byte) {
	var msgs []wireRequest
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		if json.Unmarshal(body, &msgs) != nil {
			return
		}
	} else {
		var m wireRequest
		if json.Unmarshal(body, &m) != nil {
			return
		}
		msgs = []wireRequest{m}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		if m.Method == "" {
			continue // a response to a server→client request
		}
		rr := ReceivedRequest{
			Method:          m.Method,
			ID:              string(m.ID),
			SessionID:       h.Get("Mcp-Session-Id"),
			ProtocolVersion: h.Get("Mcp-Protocol-Version"),
		}
		if m.Method == "tools/call" {
			rr.Tool = m.Params.Name
			rr.Key = m.Params.Arguments.Key
		}
		l.received = append(l.received, rr)
	}
}

// middleware counts tool invocations and ties every handler's context to
// stop, so that Close never waits on a handler parked on a client that went
// away.
func (l *Ledger) middleware(stop context.Context) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			unhook := context.AfterFunc(stop, cancel)
			defer unhook()
			p, ok := req.GetParams().(*mcp.CallToolParamsRaw)
			if method != "tools/call" || !ok {
				return next(ctx, method, req)
			}
			var args struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal(p.Arguments, &args)
			l.mu.Lock()
			l.toolCalls[p.Name]++
			if args.Key != "" {
				l.keyCalls[args.Key]++
			}
			l.mu.Unlock()
			if args.Key != "" {
				ch := l.startedChan(args.Key)
				l.mu.Lock()
				select {
				case <-ch:
				default:
					close(ch)
				}
				l.mu.Unlock()
			}
			res, err := next(ctx, method, req)
			if ctx.Err() != nil {
				l.mu.Lock()
				l.cancelled[p.Name]++
				l.mu.Unlock()
			}
			return res, err
		}
	}
}
