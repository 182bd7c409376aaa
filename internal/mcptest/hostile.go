package mcptest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A HostileMode selects how a [HostileServer] endpoint misbehaves. Every mode
// answers server/discover (method not found, so a client falls back),
// initialize, notifications, tools/list and ping correctly, refuses GET with
// 405, and misbehaves only on tools/call.
type HostileMode string

// The misbehaviours of a [HostileServer], one endpoint each.
const (
	// ModeOversized answers with a well-formed application/json response of
	// OversizedBytes (a 5 MiB text result).
	ModeOversized HostileMode = "oversized"
	// ModeOversizedEvent answers with one well-formed SSE event of
	// OversizedBytes.
	ModeOversizedEvent HostileMode = "oversized-event"
	// ModeGarbage answers 200 application/json with a body that is not JSON.
	ModeGarbage HostileMode = "garbage"
	// ModeNotJSONRPC answers 200 application/json with JSON that is not a
	// JSON-RPC message.
	ModeNotJSONRPC HostileMode = "not-jsonrpc"
	// ModeGarbageEvent answers with an SSE event whose data is not JSON.
	ModeGarbageEvent HostileMode = "garbage-event"
	// ModeMalformedSSE answers with an SSE stream holding a line that is not
	// a field.
	ModeMalformedSSE HostileMode = "malformed-sse"
	// ModeDrip starts an SSE response and writes one byte every DripInterval,
	// never finishing the event.
	ModeDrip HostileMode = "drip"
	// ModeHang accepts the request and never sends a status line.
	ModeHang HostileMode = "hang"
	// ModeStatus500 answers 500 with a plain-text body.
	ModeStatus500 HostileMode = "status-500"
	// ModeWrongContentType answers 200 text/html.
	ModeWrongContentType HostileMode = "wrong-content-type"
	// ModeCutJSON promises a JSON body by Content-Length, sends part of it and
	// closes the connection.
	ModeCutJSON HostileMode = "cut-json"
	// ModeCutSSE sends half an SSE event in a chunked response and closes the
	// connection without the final chunk.
	ModeCutSSE HostileMode = "cut-sse"
	// ModeHugeEvent starts one SSE event and streams data without a newline,
	// HugeEventBytes in all, as fast as the client reads.
	ModeHugeEvent HostileMode = "huge-event"
	// ModeSessionGone answers tools/call with 404, as a server that lost the
	// session does.
	ModeSessionGone HostileMode = "session-gone"
)

// HostileModes lists every mode.
var HostileModes = []HostileMode{
	ModeOversized, ModeOversizedEvent, ModeGarbage, ModeNotJSONRPC, ModeGarbageEvent,
	ModeMalformedSSE, ModeDrip, ModeHang, ModeStatus500, ModeWrongContentType,
	ModeCutJSON, ModeCutSSE, ModeHugeEvent, ModeSessionGone,
}

// Sizes and pacing of the hostile modes.
const (
	OversizedBytes = 5 << 20  // ModeOversized, ModeOversizedEvent
	HugeEventBytes = 48 << 20 // ModeHugeEvent: three times go-sdk's DefaultMaxEventSize
	DripInterval   = 100 * time.Millisecond
)

// A HostileServer is a plain net/http server (no go-sdk) that speaks just
// enough Streamable HTTP to be connected to, then misbehaves on tools/call in
// the way its path selects: [HostileServer.URL] of a mode is its endpoint.
// Close never waits on a misbehaving response.
type HostileServer struct {
	t       testing.TB
	http    *httptest.Server
	closing chan struct{}
	once    sync.Once

	mu      sync.Mutex
	written map[HostileMode]*atomic.Int64
	calls   map[HostileMode]int
	open    map[HostileMode]int
}

// NewHostileServer starts a HostileServer on loopback and stops it when the
// test ends.
func NewHostileServer(t testing.TB) *HostileServer {
	t.Helper()
	s := &HostileServer{
		t:       t,
		closing: make(chan struct{}),
		written: make(map[HostileMode]*atomic.Int64),
		calls:   make(map[HostileMode]int),
		open:    make(map[HostileMode]int),
	}
	for _, m := range HostileModes {
		s.written[m] = new(atomic.Int64)
	}
	s.http = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// URL is the MCP endpoint of mode.
func (s *HostileServer) URL(mode HostileMode) string { return s.http.URL + "/" + string(mode) }

// BytesWritten reports how many body bytes the misbehaving tools/call
// responses of mode got onto the wire (accepted by the kernel): how much a
// client read, give or take socket buffers.
func (s *HostileServer) BytesWritten(mode HostileMode) int64 {
	if c := s.written[mode]; c != nil {
		return c.Load()
	}
	return 0
}

// ToolCalls reports how many tools/call requests mode received.
func (s *HostileServer) ToolCalls(mode HostileMode) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[mode]
}

// OpenCalls reports how many tools/call responses of mode are still being
// served. ModeDrip and ModeHang never end theirs on their own: only the client
// closing the request (or Close) does, so a count back at 0 before Close shows
// that the client let go of the connection.
func (s *HostileServer) OpenCalls(mode HostileMode) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[mode]
}

// Close ends every response in progress and stops the server. It is
// idempotent.
func (s *HostileServer) Close() {
	s.once.Do(func() {
		shutdown(s.t, "HostileServer", s.http, func() { close(s.closing) })
	})
}

// hostileRequest is the part of a JSON-RPC request the hostile server reads.
type hostileRequest struct {
	Method string          `json:"method"`
	ID     json.RawMessage `json:"id"`
	Params struct {
		ProtocolVersion string `json:"protocolVersion"`
	} `json:"params"`
}

const hostileSessionPrefix = "hostile-"

func (s *HostileServer) serve(w http.ResponseWriter, r *http.Request) {
	mode := HostileMode(strings.TrimPrefix(r.URL.Path, "/"))
	if s.written[mode] == nil {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
		return
	default: // no standalone GET stream
		w.Header().Set("Allow", "POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var req hostileRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	switch {
	case req.Method == "initialize":
		version := req.Params.ProtocolVersion
		if version == "" || version >= "2026" {
			version = "2025-11-25"
		}
		w.Header().Set("Mcp-Session-Id", hostileSessionPrefix+string(mode))
		writeResult(w, req.ID, map[string]any{
			"protocolVersion": version,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "mcptest-hostile", "version": "1.0.0"},
		})
	case len(req.ID) == 0: // a notification
		w.WriteHeader(http.StatusAccepted)
	case req.Method == "tools/list":
		writeResult(w, req.ID, map[string]any{"tools": []any{map[string]any{
			"name": "boom", "description": "misbehaves", "inputSchema": map[string]any{"type": "object"},
		}}})
	case req.Method == "ping":
		writeResult(w, req.ID, map[string]any{})
	case req.Method == "tools/call":
		s.mu.Lock()
		s.calls[mode]++
		s.open[mode]++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.open[mode]--
			s.mu.Unlock()
		}()
		s.misbehave(mode, w, r, req.ID)
	default: // server/discover among others
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"method not found"}}`, req.ID)
	}
}

func writeResult(w http.ResponseWriter, id json.RawMessage, result any) {
	data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

// toolResultJSON is a complete JSON-RPC response whose text is textBytes long.
func toolResultJSON(id json.RawMessage, textBytes int) []byte {
	data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": map[string]any{
		"content": []any{map[string]any{"type": "text", "text": BigText(textBytes)}},
	}})
	return data
}

func (s *HostileServer) misbehave(mode HostileMode, w http.ResponseWriter, r *http.Request, id json.RawMessage) {
	cw := &countingWriter{w: w, n: s.written[mode]}
	flush := func() { _ = http.NewResponseController(w).Flush() }
	sse := func() {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		flush()
	}
	switch mode {
	case ModeOversized:
		w.Header().Set("Content-Type", "application/json")
		cw.Write(toolResultJSON(id, OversizedBytes))
	case ModeOversizedEvent:
		sse()
		fmt.Fprintf(cw, "event: message\ndata: %s\n\n", toolResultJSON(id, OversizedBytes))
	case ModeGarbage:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(cw, "<<this is not json>> {{{")
	case ModeNotJSONRPC:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(cw, `{"hello":"world","answer":42}`)
	case ModeGarbageEvent:
		sse()
		io.WriteString(cw, "event: message\ndata: definitely not json\n\n")
	case ModeMalformedSSE:
		sse()
		io.WriteString(cw, "this line has no colon\n\n")
	case ModeDrip:
		sse()
		payload := `data: {"jsonrpc":"2.0","id":` + string(id) + `,"result":{"content":[{"type":"text","text":"`
		for i := 0; ; i++ {
			b := byte('z')
			if i < len(payload) {
				b = payload[i]
			}
			if _, err := cw.Write([]byte{b}); err != nil {
				return
			}
			flush()
			if !s.sleep(r.Context(), DripInterval) {
				return
			}
		}
	case ModeHang:
		s.sleep(r.Context(), time.Hour)
	case ModeStatus500:
		http.Error(cw, "internal server error, on purpose", http.StatusInternalServerError)
	case ModeWrongContentType:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(cw, "<html><body>not an MCP server</body></html>")
	case ModeCutJSON:
		body := toolResultJSON(id, 4096)
		s.hijack(w, cw, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body)), body[:len(body)/2])
	case ModeCutSSE:
		event := fmt.Sprintf("id: ev-1\nevent: message\ndata: %s\n\n", toolResultJSON(id, 64))
		half := event[:len(event)/2]
		chunk := fmt.Sprintf("%x\r\n%s\r\n", len(half), half)
		s.hijack(w, cw, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", []byte(chunk))
	case ModeHugeEvent:
		sse()
		io.WriteString(cw, "event: message\ndata: ")
		chunk := []byte(strings.Repeat("x", 64<<10))
		for sent := 0; sent < HugeEventBytes; sent += len(chunk) {
			if _, err := cw.Write(chunk); err != nil {
				return
			}
			select {
			case <-s.closing:
				return
			default:
			}
		}
		flush()
	case ModeSessionGone:
		http.Error(cw, "session not found", http.StatusNotFound)
	}
}

// sleep waits for d, or until the request or the server ends; it reports
// whether the whole d passed.
func (s *HostileServer) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.closing:
	}
	return false
}

// hijack writes a raw response head and part of a body, then closes the
// connection mid-response.
func (s *HostileServer) hijack(w http.ResponseWriter, cw *countingWriter, head string, body []byte) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	bw := bufio.NewWriter(conn)
	bw.WriteString(head)
	bw.Write(body)
	cw.n.Add(int64(len(body)))
	bw.Flush()
	_ = buf
}

// countingWriter counts the body bytes a hostile response got out.
type countingWriter struct {
	w http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Header() http.Header  { return c.w.Header() }
func (c *countingWriter) WriteHeader(code int) { c.w.WriteHeader(code) }
func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
