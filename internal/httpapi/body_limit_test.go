package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bodyLimit is the api's default request body limit ("1M").
const bodyLimit = 1 << 20

// chunked sends body with Transfer-Encoding: chunked, so no Content-Length tells the server
// its size up front; the limit can only be found while reading.
func (n *apiNode) chunked(t *testing.T, method, path, token, body string, headers ...string) response {
	t.Helper()
	// A reader net/http cannot size: the request goes out chunked.
	req, err := http.NewRequest(method, n.srv.URL+path, io.MultiReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.TransferEncoding = []string{"chunked"}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// oversized is a JSON object of the given shape whose string member text makes it just over
// the body limit: valid JSON, had it been allowed in.
func oversized(prefix, suffix string) string {
	pad := bodyLimit + 1024 - len(prefix) - len(suffix)
	return prefix + strings.Repeat("a", pad) + suffix
}

// TestChunkedBodyOverLimitIs413: a body sent chunked (no Content-Length) that exceeds the
// limit is refused as too large on every route that reads a body, not as a 400 naming
// "body", for either tenant; one under the limit still goes through.
func TestChunkedBodyOverLimitIs413(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	for _, tn := range []struct {
		name          string
		secret, tenID string
	}{{"TenantA", c.a.Secret, c.a.Tenant.ID}, {"TenantB", c.b.Secret, c.b.Tenant.ID}} {
		id := n.createSession(t, tn.secret, "limits")
		pending := insertPending(t, c, tn.tenID, id, "elicitation")
		s := "/v1/sessions/" + id
		cases := []struct {
			name, method, path, body string
			headers                  []string
		}{
			{"CreateAPIKey", "POST", "/v1/api-keys", oversized(`{"role":"viewer","name":"`, `"}`), nil},
			{"AddMember", "POST", "/v1/members", oversized(`{"role":"viewer","email":"x@example.test","name":"`, `"}`), nil},
			{"CreateSession", "POST", "/v1/sessions", oversized(`{"target":{"url":"https://mcp.example.test/mcp"},"name":"`, `"}`), nil},
			{"TokenExchange", "POST", "/v1/auth/token", oversized(`{"api_key":"`, `"}`), nil},
			{"CallTool", "POST", s + "/calls", oversized(`{"name":"echo","arguments":{"text":"`, `"}}`), nil},
			{"RPC", "POST", s + "/rpc", oversized(`{"method":"tools/list","params":{"pad":"`, `"}}`), nil},
			{"RPCWithIdempotencyKey", "POST", s + "/rpc", oversized(`{"method":"tools/list","params":{"pad":"`, `"}}`), []string{"Idempotency-Key", "big-1"}},
			{"AnswerPending", "POST", s + "/pending/" + pending, oversized(`{"action":"accept","content":{"pad":"`, `"}}`), nil},
			{"ReadResource", "POST", s + "/resources/read", oversized(`{"uri":"file:///`, `"}`), nil},
			{"SetRoots", "PUT", s + "/roots", oversized(`{"roots":[{"uri":"file:///`, `"}]}`), nil},
			// No body in the contract: only the Idempotency-Key handling reads it.
			{"ReconnectWithIdempotencyKey", "POST", s + "/reconnect", oversized(`{"pad":"`, `"}`), []string{"Idempotency-Key", "big-2"}},
		}
		for _, tc := range cases {
			t.Run(tn.name+"/"+tc.name, func(t *testing.T) {
				r := n.chunked(t, tc.method, tc.path, tn.secret, tc.body, tc.headers...)
				requireProblem(t, r, http.StatusRequestEntityTooLarge, "")
				if r.body["type"] != "urn:tapline:problem:too-large" || r.body["field"] != nil {
					t.Fatalf("problem = %s, want too-large naming no field", r.raw)
				}
			})
		}
		// Under the limit, chunked bodies are read as usual.
		ok := n.chunked(t, "POST", "/v1/api-keys", tn.secret, `{"role":"viewer","name":"`+strings.Repeat("a", 100)+`"}`)
		requireStatus(t, ok, http.StatusCreated)
		answered := n.chunked(t, "POST", s+"/pending/"+pending, tn.secret, `{"action":"accept","content":{"choice":"b"}}`)
		requireStatus(t, answered, http.StatusOK)
	}
}
