package inspector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// refusalDetail caps how much of a refusal's body its JSON-RPC error quotes.
const refusalDetail = 512

// refusalTransport sits between go-sdk's streamable HTTP client and the tap. When the
// target refuses one JSON-RPC request with a 4xx whose body is not a JSON-RPC response
// (go-sdk's own server answers a method it does not handle with a plain-text 400), it gives
// the client that request's JSON-RPC error instead: Invalid Request, naming the HTTP status
// and quoting the body. go-sdk's client takes such an answer for a broken connection and
// closes it, so one mistyped method sent through POST …/rpc answered 502 and dropped the
// session's connection, and every call running on it. The tap under it records the
// target's answer as it came.
//
// 401 and 403 (credentials), 404 (the target ended its session) and 429 (go-sdk retries it)
// are passed on as they are: they concern the connection, not the one request.
//
// A target that refuses one request may also be refusing them all: some servers answer a
// session they no longer know with a 400 rather than a 404. refused, when set, is told the
// method of every request turned into an error here, so the owner can ask the target for a
// ping, which every server must answer: a refused ping means the connection is unusable.
type refusalTransport struct {
	next    http.RoundTripper
	refused func(method string)
}

func (t refusalTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || !refusesOneRequest(resp.StatusCode) {
		return resp, err
	}
	// Only a refusal reads the request again: a call that succeeds pays nothing here.
	id, method, isCall := callID(req)
	if !isCall {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if msg, derr := jsonrpc.DecodeMessage(body); derr == nil {
		if r, ok := msg.(*jsonrpc.Response); ok && r.Error != nil {
			// The target said why in JSON-RPC itself; go-sdk reads that as the request's error.
			resp.Body = io.NopCloser(bytes.NewReader(body))
			return resp, nil
		}
	}
	refusal, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error":   map[string]any{"code": jsonrpc.CodeInvalidRequest, "message": refusalMessage(resp, body)},
	})
	if err != nil {
		return nil, err
	}
	out := *resp
	out.Header = resp.Header.Clone()
	out.Header.Set("Content-Type", "application/json")
	out.Header.Del("Content-Encoding")
	out.Body = io.NopCloser(bytes.NewReader(refusal))
	out.ContentLength = int64(len(refusal))
	if t.refused != nil {
		t.refused(method)
	}
	return &out, nil
}

// refusesOneRequest reports whether an HTTP status refuses the request it answers rather than
// the connection.
func refusesOneRequest(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// callID returns the id and method of the JSON-RPC request a POST carries, leaving its body
// to be read again; false for anything else (a notification, a response, a batch, a GET).
func callID(req *http.Request) (json.RawMessage, string, bool) {
	if req.Method != http.MethodPost || req.GetBody == nil {
		return nil, "", false
	}
	rc, err := req.GetBody()
	if err != nil {
		return nil, "", false
	}
	defer rc.Close()
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.NewDecoder(io.LimitReader(rc, maxBodySize)).Decode(&msg) != nil || msg.Method == "" ||
		len(msg.ID) == 0 || string(msg.ID) == "null" {
		return nil, "", false
	}
	return msg.ID, msg.Method, true
}

// refusalMessage says how the target refused: its HTTP status and the start of its body.
func refusalMessage(resp *http.Response, body []byte) string {
	msg := fmt.Sprintf("the target refused the request: HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	text := strings.TrimSpace(strings.ToValidUTF8(string(body), "\uFFFD"))
	if text == "" {
		return msg
	}
	if len(text) > refusalDetail {
		text = strings.ToValidUTF8(text[:refusalDetail], "") + "…"
	}
	return msg + ": " + text
}
