package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/tapline/tapline/internal/inspector"
)

// TestBadInputIsNever500 sends input PostgreSQL cannot store (NUL, invalid UTF-8) and audit
// filters an export would refuse: each is a 400 naming the field, never a 500 or a dropped
// connection.
func TestBadInputIsNever500(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "nul")
	c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)
	off := n.createSession(t, c.a.Secret, "off")
	c.setSessionStatus(t, c.a.Tenant.ID, off, inspector.StatusClosed)
	// The audit filters reach PostgreSQL only when the log has events; tenant b has some too.
	requireStatus(t, n.call(t, "POST", "/v1/members", c.a.Secret, map[string]any{"email": "x@example.test", "role": "viewer"}), 201)
	requireStatus(t, n.call(t, "POST", "/v1/members", c.b.Secret, map[string]any{"email": "x@example.test", "role": "viewer"}), 201)
	u := map[string]any{"url": "https://mcp.example.test/mcp"}
	roots := func(name string) map[string]any {
		return map[string]any{"roots": []any{map[string]any{"uri": "file:///a"}, map[string]any{"uri": "file:///b", "name": name}}}
	}
	cases := []struct {
		name, method, path string
		body               any
		headers            []string
		field              string
	}{
		{"SessionNameNUL", "POST", "/v1/sessions", map[string]any{"name": "a\x00b", "target": u}, nil, "name"},
		{"RootNameNUL", "POST", "/v1/sessions", map[string]any{"target": u, "roots": roots("\x00")["roots"]}, nil, "roots.1.name"},
		{"TargetHeaderNUL", "POST", "/v1/sessions", map[string]any{"target": map[string]any{"url": u["url"], "headers": map[string]string{"X-A": "\x00"}}}, nil, "target.headers.X-A"},
		{"TargetHeaderNameNUL", "POST", "/v1/sessions", map[string]any{"target": map[string]any{"url": u["url"], "headers": map[string]string{"X-\x00": "a"}}}, nil, "target.headers"},
		{"SetRootNameNUL", "PUT", "/v1/sessions/" + off + "/roots", roots("\x00"), nil, "roots.1.name"},
		{"CallNameNUL", "POST", "/v1/sessions/" + id + "/calls", map[string]any{"name": "a\x00"}, nil, "name"},
		{"CallArgumentNUL", "POST", "/v1/sessions/" + id + "/calls", map[string]any{"name": "a", "arguments": map[string]any{"x": "\x00"}}, nil, "arguments"},
		{"CallArgumentDeepNUL", "POST", "/v1/sessions/" + id + "/calls", map[string]any{"name": "a", "arguments": map[string]any{"x": []any{1, map[string]any{"\x00": true}}}}, nil, "arguments"},
		{"MemberEmailNUL", "POST", "/v1/members", map[string]any{"email": "y\x00@example.test", "role": "viewer"}, nil, "email"},
		{"APIKeyNameNUL", "POST", "/v1/api-keys", map[string]any{"name": "\x00", "role": "viewer"}, nil, "name"},
		{"SessionIDNUL", "GET", "/v1/sessions/a%00b", nil, nil, "id"},
		{"MemberIDNUL", "PATCH", "/v1/members/a%00b", map[string]any{"role": "viewer"}, nil, "id"},
		{"CursorNUL", "GET", "/v1/sessions?cursor=%00", nil, nil, "cursor"},
		{"AuditActionNUL", "GET", "/v1/audit?action=%00", nil, nil, "action"},
		{"AuditActorNUL", "GET", "/v1/audit?actor=%00", nil, nil, "actor"},
		{"AuditActionNotUTF8", "GET", "/v1/audit?action=%ff", nil, nil, "action"},
		{"AuditExportActionNUL", "GET", "/v1/audit?format=jsonl&action=%00", nil, nil, "action"},
		{"AuditExportActorNUL", "GET", "/v1/audit?format=csv&actor=a%00", nil, nil, "actor"},
		{"AuditExportToBeforeFrom", "GET", "/v1/audit?format=csv&from=2025-01-01T00:00:00Z&to=2024-01-01T00:00:00Z", nil, nil, "to"},
		{"AuditExportByAccept", "GET", "/v1/audit?action=%00", nil, []string{"Accept", "text/csv"}, "action"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireProblem(t, n.call(t, tc.method, tc.path, c.a.Secret, tc.body, tc.headers...), 400, tc.field)
		})
	}
	// A backslash before u0000 is text, not NUL.
	r := n.call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{"name": `\u0000`, "target": u})
	requireStatus(t, r, 201)
	if r.body["name"] != `\u0000` {
		t.Fatalf("name = %q, want the six characters sent", r.body["name"])
	}
}

// TestRefusedAuditExportIsNotRecorded: an export refused for its filter is answered 400
// before anything is recorded, so the log keeps no export that never happened.
func TestRefusedAuditExportIsNotRecorded(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	for _, tok := range []string{c.a.Secret, c.b.Secret} {
		requireStatus(t, n.call(t, "POST", "/v1/members", tok, map[string]any{"email": "x@example.test", "role": "viewer"}), 201)
	}
	for _, q := range []string{
		"format=csv&from=2025-01-01T00:00:00Z&to=2024-01-01T00:00:00Z",
		"format=jsonl&action=%00",
		"format=jsonl&actor=%ff",
	} {
		// A plain client, not call: before the fix the connection dropped mid-response.
		req, _ := http.NewRequest("GET", n.srv.URL+"/v1/audit?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+c.a.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		_, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || res.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s = %d %s, want a 400 problem", q, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
	for _, tok := range []string{c.a.Secret, c.b.Secret} {
		if a := auditActions(t, n.call(t, "GET", "/v1/audit?action=audit.export", tok, nil)); len(a) != 0 {
			t.Fatalf("refused exports left %d audit.export records", len(a))
		}
	}
	// A valid export is still recorded, in its own tenant only.
	requireStatus(t, n.call(t, "GET", "/v1/audit?format=jsonl", c.a.Secret, nil), 200)
	if a := auditActions(t, n.call(t, "GET", "/v1/audit?action=audit.export", c.a.Secret, nil)); len(a) != 1 {
		t.Fatalf("export events = %v, want one", a)
	}
	if a := auditActions(t, n.call(t, "GET", "/v1/audit?action=audit.export", c.b.Secret, nil)); len(a) != 0 {
		t.Fatalf("tenant b's export events = %v, want none", a)
	}
}

// TestBinderErrorsNameTheParameter covers parameters kin-openapi lets through and the
// generated binder refuses: the 400 names the parameter, not the body.
func TestBinderErrorsNameTheParameter(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "params")
	n.createSession(t, c.b.Secret, "params") // the second tenant every handler test has
	cases := []struct {
		name, path string
		headers    []string
		field      string
	}{
		{"AfterSeqTwice", "/v1/sessions/" + id + "/events?after_seq=1&after_seq=2", nil, "after_seq"},
		{"LimitTwice", "/v1/sessions/" + id + "/events?limit=5&limit=6", nil, "limit"},
		{"SessionsLimitTwice", "/v1/sessions?limit=5&limit=6", nil, "limit"},
		{"AuditLimitTwice", "/v1/audit?limit=5&limit=6", nil, "limit"},
		{"FromOffsetOutOfRange", "/v1/audit?from=2024-01-01T00:00:00%2B25:00", nil, "from"},
		{"VerifyToOffsetOutOfRange", "/v1/audit/verify?to=2024-01-01T00:00:00%2B25:00", nil, "to"},
		{"TwoLastEventIDs", "/v1/sessions/" + id + "/events/stream", []string{"Last-Event-ID", "1", "Last-Event-ID", "2"}, "Last-Event-ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", n.srv.URL+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+c.a.Secret)
			for i := 0; i+1 < len(tc.headers); i += 2 {
				req.Header.Add(tc.headers[i], tc.headers[i+1])
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			raw, _ := io.ReadAll(res.Body)
			r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
			_ = json.Unmarshal(raw, &r.body)
			requireProblem(t, r, 400, tc.field)
		})
	}
}
