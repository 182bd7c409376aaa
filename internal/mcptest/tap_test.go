package mcptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A tappedFrame is one thing a frameTap saw on the wire.
type tappedFrame struct {
	Dir       string // "send" (request), "head" (response status line), "recv" (body or SSE event)
	HTTP      string // "POST", "GET", "DELETE"
	Status    int    // on "head"
	Header    http.Header
	EventID   string // SSE id, on "recv"
	EventName string // SSE event, on "recv"
	Data      []byte // request body, JSON response body, or SSE data
}

// frameTap is the tap a Tapline worker puts under go-sdk's client
// (StreamableClientTransport.HTTPClient.Transport): it sees every request
// body, every response's status and headers, and every SSE event at the
// moment the SDK reads it, including priming events and ids the SDK hides.
// It adds no goroutine: SSE events are cut out of the bytes as the SDK reads
// them.
type frameTap struct {
	next http.RoundTripper

	mu     sync.Mutex
	frames []tappedFrame
}

func (t *frameTap) add(f tappedFrame) {
	t.mu.Lock()
	t.frames = append(t.frames, f)
	t.mu.Unlock()
}

func (t *frameTap) snapshot() []tappedFrame {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.frames)
}

func (t *frameTap) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	t.add(tappedFrame{Dir: "send", HTTP: req.Method, Header: req.Header.Clone(), Data: body})
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	t.add(tappedFrame{Dir: "head", HTTP: req.Method, Status: resp.StatusCode, Header: resp.Header.Clone()})
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	resp.Body = &tappedBody{ReadCloser: resp.Body, tap: t, method: req.Method, sse: mediaType == "text/event-stream"}
	return resp, nil
}

// tappedBody records a response body as it is read: a JSON body whole at EOF,
// an SSE body one event at a time. A production tap also caps buf.
type tappedBody struct {
	io.ReadCloser
	tap    *frameTap
	method string
	sse    bool
	buf    []byte
	done   bool
}

func (b *tappedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.buf = append(b.buf, p[:n]...)
	if b.sse {
		b.cutEvents()
	} else if err == io.EOF && !b.done {
		b.done = true
		b.tap.add(tappedFrame{Dir: "recv", HTTP: b.method, Data: b.buf})
	}
	return n, err
}

// cutEvents records every complete event (terminated by a blank line) in buf.
func (b *tappedBody) cutEvents() {
	for {
		b.buf = bytes.ReplaceAll(b.buf, []byte("\r\n"), []byte("\n"))
		raw, rest, ok := bytes.Cut(b.buf, []byte("\n\n"))
		if !ok {
			return
		}
		b.buf = rest
		f := tappedFrame{Dir: "recv", HTTP: b.method}
		for line := range strings.SplitSeq(string(raw), "\n") {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				f.EventID = value
			case "event":
				f.EventName = value
			case "data":
				if f.Data != nil {
					f.Data = append(f.Data, '\n')
				}
				f.Data = append(f.Data, value...)
			}
		}
		b.tap.add(f)
	}
}

func method(data []byte) string {
	var m struct {
		Method string          `json:"method"`
		ID     json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(data, &m)
	if m.Method == "" && m.ID != nil {
		return "response"
	}
	return m.Method
}

func TestFrameTap(t *testing.T) {
	t.Parallel()
	srv := NewStatefulServer(t, nil)
	ctx := testContext(t)
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	tap := &frameTap{next: base}
	client := mcp.NewClient(testImpl, &mcp.ClientOptions{
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "ok"}}, nil
		},
	})
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL(), HTTPClient: &http.Client{Transport: tap}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 2, "interval_ms": 1}}
	params.SetProgressToken("p")
	if _, err := cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "sample"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}

	var trace []string
	for _, f := range tap.snapshot() {
		switch f.Dir {
		case "send":
			trace = append(trace, "send "+f.HTTP+" "+method(f.Data))
		case "head":
			trace = append(trace, "head "+f.HTTP+" "+http.StatusText(f.Status))
		case "recv":
			s := "recv " + method(f.Data)
			if f.EventName != "" {
				s += " event=" + f.EventName
			}
			if f.EventID != "" {
				s += " id"
			}
			trace = append(trace, s)
		}
	}
	t.Logf("wire trace:\n%s", strings.Join(trace, "\n"))
	// What the tap must show, in order (other frames, such as the standalone
	// GET, interleave).
	want := []string{
		"send POST server/discover", "head POST Bad Request", "recv response", // 2026-07-28 refused by a stateful server
		"send POST initialize", "head POST OK", "recv  event=prime id", "recv response event=message id",
		"send GET ", "head GET OK", // the standalone stream
		"send POST notifications/initialized", "head POST Accepted",
		"send POST tools/call", "head POST OK", "recv  event=prime id",
		"recv notifications/progress event=message id", "recv notifications/progress event=message id",
		"recv response event=message id",
		"send POST tools/call", "recv sampling/createMessage event=message id",
		"send POST response", "recv response event=message id", // our answer, then the tool's result
		"send DELETE ", "head DELETE No Content",
	}
	i := 0
	for _, line := range trace {
		if i < len(want) && line == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("tap missed %q (and what follows)", want[i])
	}
	for _, f := range tap.snapshot() {
		if f.Dir == "head" && f.Header.Get("Mcp-Session-Id") != "" && f.Header.Get("Mcp-Session-Id") != cs.ID() {
			t.Errorf("session header %q, session %q", f.Header.Get("Mcp-Session-Id"), cs.ID())
		}
	}
}
