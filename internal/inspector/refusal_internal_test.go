package inspector

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRefusalTransport: a target's HTTP refusal of one JSON-RPC request becomes that
// request's JSON-RPC error; what concerns the connection, and what the target already said
// in JSON-RPC, passes as it came.
func TestRefusalTransport(t *testing.T) {
	t.Parallel()
	const rpcError = `{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no such method"}}`
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/plain":
			http.Error(w, `method "x" not handled`, http.StatusBadRequest)
		case "/empty":
			w.WriteHeader(http.StatusUnsupportedMediaType)
		case "/jsonrpc":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, rpcError)
		case "/gone":
			http.Error(w, "session not found", http.StatusNotFound)
		case "/denied":
			http.Error(w, "no", http.StatusUnauthorized)
		}
	}))
	t.Cleanup(target.Close)
	var refused []string
	client := &http.Client{Transport: refusalTransport{next: http.DefaultTransport, refused: func(method string) { refused = append(refused, method) }}}
	post := func(path, body string) (int, string, string) {
		t.Helper()
		res, err := client.Post(target.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get("Content-Type"), string(b)
	}
	call := `{"jsonrpc":"2.0","id":"c-1","method":"x","params":{}}`

	status, ct, body := post("/plain", call)
	var got struct {
		ID    string `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || status != 400 || ct != "application/json" {
		t.Fatalf("plain refusal = %d %s %s", status, ct, body)
	}
	if got.ID != "c-1" || got.Error.Code != -32600 ||
		got.Error.Message != `the target refused the request: HTTP 400 Bad Request: method "x" not handled` {
		t.Fatalf("plain refusal = %s", body)
	}
	if _, _, body := post("/empty", `{"jsonrpc":"2.0","id":3,"method":"x"}`); !strings.Contains(body, `"id":3`) ||
		!strings.Contains(body, `"message":"the target refused the request: HTTP 415 Unsupported Media Type"`) {
		t.Fatalf("empty refusal = %s", body)
	}
	for _, tc := range []struct{ path, body, want string }{
		{"/jsonrpc", call, rpcError},
		{"/gone", call, "session not found\n"},
		{"/denied", call, "no\n"},
		{"/plain", `{"jsonrpc":"2.0","method":"notifications/x"}`, "method \"x\" not handled\n"},
		{"/plain", `{"jsonrpc":"2.0","id":1,"result":{}}`, "method \"x\" not handled\n"},
		{"/plain", `[` + call + `]`, "method \"x\" not handled\n"},
	} {
		if _, _, body := post(tc.path, tc.body); !bytes.Equal([]byte(body), []byte(tc.want)) {
			t.Errorf("%s %s = %q, want it as the target sent it", tc.path, tc.body, body)
		}
	}
	// Only the refusals turned into a request's error are told, with the request's method.
	if strings.Join(refused, ",") != "x,x" {
		t.Errorf("refused told of %q, want the two refusals of method x", refused)
	}
}
