package mcptest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// StatelessOptions configures a [StatelessServer]. The zero value propagates
// cancellation: closing a request's HTTP stream cancels its handler, as the
// 2026-07-28 spec defines cancellation.
type StatelessOptions struct {
	// NoCancelPropagation leaves handlers running when the client closes the
	// request stream (go-sdk's default, StreamableHTTPOptions.
	// PropagateRequestCancellation = false).
	NoCancelPropagation bool
}

// A StatelessServer is a go-sdk MCP server in the 2026-07-28 era: a stateless
// Streamable HTTP handler, so no Mcp-Session-Id, no initialize (clients use
// server/discover and per-request _meta), no GET stream, and no
// server→client requests: input is asked for with multi round-trip results
// (resultType "input_required").
//
// Tools (each accepts an optional string argument "key", see [Ledger]):
//
//	echo {text}                  text content
//	slow {steps, interval_ms}    progress notifications on the request stream; honours cancellation
//	confirm {}                   first answers input_required with an elicitation ("approve"),
//	                             a sampling request ("summary") and a roots request ("roots");
//	                             completes when retried with inputResponses and the requestState
//
// A 2025-era client may connect too (initialize is served on a temporary
// session), but "confirm" then fails: a stateless server cannot send the
// server→client requests go-sdk falls back to.
type StatelessServer struct {
	*Ledger

	t      testing.TB
	server *mcp.Server
	http   *httptest.Server
	stop   context.CancelFunc

	closeOnce sync.Once
	stateKey  []byte

	mu            sync.Mutex
	inputRequired int             // input_required results returned
	spentStates   map[string]bool // requestState values already redeemed
}

// NewStatelessServer starts a StatelessServer on loopback and stops it when
// the test ends. opts may be nil.
func NewStatelessServer(t testing.TB, opts *StatelessOptions) *StatelessServer {
	t.Helper()
	if opts == nil {
		opts = &StatelessOptions{}
	}
	stopCtx, stop := context.WithCancel(context.Background())
	s := &StatelessServer{
		Ledger:      newLedger(),
		t:           t,
		stop:        stop,
		stateKey:    []byte(rand.Text()),
		spentStates: make(map[string]bool),
	}
	s.server = mcp.NewServer(&mcp.Implementation{Name: "mcptest-stateless", Title: "Tapline stateless test server", Version: "1.0.0"},
		&mcp.ServerOptions{Instructions: "Tapline's stateless (2026-07-28) test server."})
	s.server.AddReceivingMiddleware(s.Ledger.middleware(stopCtx))
	mcp.AddTool(s.server, &mcp.Tool{Name: "echo", Description: "echoes text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	mcp.AddTool(s.server, &mcp.Tool{Name: "slow", Description: "reports progress, honours cancellation"}, slowTool)
	mcp.AddTool(s.server, &mcp.Tool{Name: "confirm", Description: "multi round-trip: asks for input, then completes"}, s.confirmTool)

	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.server },
		&mcp.StreamableHTTPOptions{Stateless: true, PropagateRequestCancellation: !opts.NoCancelPropagation})
	mux := http.NewServeMux()
	mux.Handle("/mcp", s.Ledger.tap(handler))
	s.http = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// URL is the Streamable HTTP endpoint, http://127.0.0.1:PORT/mcp.
func (s *StatelessServer) URL() string { return s.http.URL + "/mcp" }

// Server is the underlying go-sdk server.
func (s *StatelessServer) Server() *mcp.Server { return s.server }

// Close stops the server; running handlers are cancelled. It is idempotent.
func (s *StatelessServer) Close() {
	s.closeOnce.Do(func() {
		shutdown(s.t, "StatelessServer", s.http, func() {
			s.stop()
			closeSessions(s.server)
		})
	})
}

// InputRequired reports how many input_required results "confirm" returned.
func (s *StatelessServer) InputRequired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inputRequired
}

// ConfirmApproveSchema is the form "confirm" asks for in its "approve" input
// request.
var ConfirmApproveSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"approve": map[string]any{"type": "boolean", "title": "Approve?", "default": false},
	},
	"required": []any{"approve"},
}

func (s *StatelessServer) confirmTool(_ context.Context, req *mcp.CallToolRequest, in keyOnly) (*mcp.CallToolResult, any, error) {
	p := req.Params
	if p.RequestState == "" {
		nonce := rand.Text()
		s.mu.Lock()
		s.inputRequired++
		s.mu.Unlock()
		return &mcp.CallToolResult{
			InputRequests: mcp.InputRequestMap{
				"approve": &mcp.ElicitParams{Message: "Approve the change?", RequestedSchema: ConfirmApproveSchema},
				"summary": &mcp.CreateMessageParams{
					Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "Summarise the change."}}},
					MaxTokens: 64,
				},
				"roots": &mcp.ListRootsParams{},
			},
			// requestState comes back from the client: never trust it unsigned.
			RequestState: nonce + "." + s.sign(nonce, in.Key),
		}, nil, nil
	}

	nonce, mac, ok := strings.Cut(p.RequestState, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(s.sign(nonce, in.Key))) {
		return nil, nil, errors.New("confirm: requestState is forged or belongs to another call")
	}
	s.mu.Lock()
	spent := s.spentStates[nonce]
	s.spentStates[nonce] = true
	s.mu.Unlock()
	if spent {
		return nil, nil, errors.New("confirm: requestState already redeemed")
	}

	approve, _ := p.InputResponses["approve"].(*mcp.ElicitResult)
	if approve == nil {
		return nil, nil, errors.New("confirm: missing input response \"approve\"")
	}
	var summary string
	switch r := p.InputResponses["summary"].(type) {
	case *mcp.CreateMessageWithToolsResult:
		for _, c := range r.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				summary += tc.Text
			}
		}
	case *mcp.CreateMessageResult:
		if tc, ok := r.Content.(*mcp.TextContent); ok {
			summary = tc.Text
		}
	}
	var roots []string
	if r, ok := p.InputResponses["roots"].(*mcp.ListRootsResult); ok {
		for _, root := range r.Roots {
			roots = append(roots, root.URI)
		}
	}
	return text(fmt.Sprintf("action=%s approve=%v summary=%q roots=%s",
		approve.Action, approve.Content["approve"], summary, strings.Join(roots, ","))), nil, nil
}

// sign binds a requestState nonce to the call's key.
func (s *StatelessServer) sign(nonce, key string) string {
	m := hmac.New(sha256.New, s.stateKey)
	m.Write([]byte("confirm\x00" + nonce + "\x00" + key))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
