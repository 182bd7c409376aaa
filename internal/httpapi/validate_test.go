package httpapi_test

import (
	"testing"

	"github.com/tapline/tapline/internal/inspector"
)

// TestBadInputIsNever500 sends input PostgreSQL cannot store (NUL, invalid UTF-8): each is a
// 400 naming the field, never a 500 or a dropped connection.
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
