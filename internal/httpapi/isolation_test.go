package httpapi_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
)

// isolation is what tenant a owns in TestTenantIsolation, and what tenant b must never see.
type isolation struct {
	c *cluster
	n *apiNode
	// marker is in every name, email, event and parked request of tenant a: no answer to
	// tenant b may carry it.
	marker string
	// sessA is ready with a queued call, a parked request and events; closedA is closed.
	sessA, closedA, callA, pendA string
	// keyA and memberA are a second key and a viewer of tenant a; keySecretA is keyA's secret.
	keyA, keySecretA, memberA string
	// sessB, callB and pendB are tenant b's own, to mix with tenant a's ids.
	sessB, callB, pendB string
	markerB             string
}

// isolationIdempotencyKey is the Idempotency-Key both tenants send with the same requests.
const isolationIdempotencyKey = "same-key-in-both-tenants"

// secrets are the values that name tenant a's objects.
func (f *isolation) secrets() []string {
	return []string{f.marker, f.c.a.Tenant.ID, f.c.a.Key.ID, f.c.a.User.ID, f.keyA, f.keySecretA, f.memberA,
		f.sessA, f.closedA, f.callA, f.pendA}
}

// requireNoLeak fails when an answer to tenant b names one of tenant a's objects that b did
// not name itself in sent (a problem's instance repeats the path it was asked).
func (f *isolation) requireNoLeak(t *testing.T, raw, sent string, allowed ...string) {
	t.Helper()
	for _, s := range f.secrets() {
		if strings.Contains(raw, s) && !strings.Contains(sent, s) && !slices.Contains(allowed, s) {
			t.Fatalf("tenant b's answer names tenant a's %q: %s", s, raw)
		}
	}
}

// asB sends one request as tenant b (with token), checks its status, and that the answer
// names nothing of tenant a's; a 404 must be a problem. allowed are values of a's that b
// may see in this answer (it sent them in its body).
func (f *isolation) asB(t *testing.T, token, method, path string, body any, want int, allowed ...string) response {
	t.Helper()
	r := f.n.call(t, method, path, token, body)
	if want == 404 {
		requireProblem(t, r, 404, "")
		f.requireLikeUnknown(t, token, method, path, body, r)
	} else {
		requireStatus(t, r, want)
	}
	sent, _ := json.Marshal(body)
	f.requireNoLeak(t, r.raw+fmt.Sprint(r.header), path+string(sent), allowed...)
	return r
}

// requireLikeUnknown checks that a 404 for tenant a's ids in path reads as the 404 for ids
// nobody has: the same problem type, title, detail and field, so it does not tell b that
// they exist.
func (f *isolation) requireLikeUnknown(t *testing.T, token, method, path string, body any, got response) {
	t.Helper()
	unknown := path
	for _, id := range []string{f.sessA, f.closedA, f.callA, f.pendA, f.keyA, f.c.a.Key.ID, f.memberA, f.c.a.User.ID} {
		unknown = strings.ReplaceAll(unknown, id, uuid.NewString())
	}
	if unknown == path {
		return
	}
	want := f.n.call(t, method, unknown, token, body)
	for _, k := range []string{"status", "type", "title", "detail", "field"} {
		if fmt.Sprint(got.body[k]) != fmt.Sprint(want.body[k]) {
			t.Fatalf("%s %s answers %s %v, an unknown id %v: %s", method, path, k, got.body[k], want.body[k], got.raw)
		}
	}
}

// isoAppendMarked writes n events carrying marker to a session, as its owner would, and
// publishes each on the session's live channel.
func isoAppendMarked(t *testing.T, c *cluster, tenantID, sessionID, marker string, n int) {
	t.Helper()
	types, datas := make([]inspector.EventType, n), make([]string, n)
	for i := range n {
		types[i] = inspector.EventNotification
		datas[i] = fmt.Sprintf(`{"method": "notifications/message", "params": {"data": %q, "n": %d}}`, marker, i)
	}
	for _, seq := range appendEventData(t, c, tenantID, sessionID, time.Now(), types, datas) {
		publish(t, c, tenantID, sessionID, seq)
	}
}

// isoParkMarked parks an elicitation carrying marker, as a worker would, and returns its id.
func isoParkMarked(t *testing.T, c *cluster, tenantID, sessionID, marker string) string {
	t.Helper()
	var id string
	c.queryRow(t, tenantID, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
		values (gen_random_uuid(), $1, $2, 'elicitation', jsonb_build_object('message', $3::text), 'pending', 1, now() + interval '10 minutes')
		returning id`, []any{tenantID, sessionID, marker}, &id)
	return id
}

// isoMarker is a random text only who's objects carry.
func isoMarker(t *testing.T, who string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return who + "-only-" + hex.EncodeToString(b)
}

// newIsolation gives tenant a every kind of object the API serves, and tenant b a session
// of its own.
func newIsolation(t *testing.T) *isolation {
	t.Helper()
	c := newCluster(t)
	c.audited = true
	c.commandAfter = 500 * time.Millisecond
	// Tenant a is one live session short of the limit throughout; b's sessions must not
	// count against it.
	c.maxLive = 2
	f := &isolation{c: c, marker: isoMarker(t, "a"), markerB: isoMarker(t, "b")}
	f.n = c.node(t, withTokenExchange(t, c))
	a, b, n := c.a.Tenant.ID, c.b.Tenant.ID, f.n

	f.sessA = n.createSession(t, c.a.Secret, "session "+f.marker)
	c.setSessionStatus(t, a, f.sessA, inspector.StatusReady)
	f.closedA = n.createSession(t, c.a.Secret, "closed "+f.marker)
	requireStatus(t, n.call(t, "DELETE", "/v1/sessions/"+f.closedA, c.a.Secret, nil), 200)
	call := n.call(t, "POST", "/v1/sessions/"+f.sessA+"/calls", c.a.Secret, map[string]any{"name": "tool-" + f.marker})
	requireStatus(t, call, 202)
	f.callA = call.body["call_id"].(string)
	f.pendA = isoParkMarked(t, c, a, f.sessA, f.marker)
	isoAppendMarked(t, c, a, f.sessA, f.marker, 3)
	key := n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"name": "key " + f.marker, "role": "member"},
		"Idempotency-Key", isolationIdempotencyKey)
	requireStatus(t, key, 201)
	f.keyA, f.keySecretA = key.body["id"].(string), key.body["secret"].(string)
	member := n.call(t, "POST", "/v1/members", c.a.Secret, map[string]any{"email": f.marker + "@a.example.test", "role": "viewer"})
	requireStatus(t, member, 201)
	f.memberA = member.body["id"].(string)

	f.sessB = n.createSession(t, c.b.Secret, "session "+f.markerB)
	c.setSessionStatus(t, b, f.sessB, inspector.StatusReady)
	callB := n.call(t, "POST", "/v1/sessions/"+f.sessB+"/calls", c.b.Secret, map[string]any{"name": "tool-" + f.markerB})
	requireStatus(t, callB, 202)
	f.callB = callB.body["call_id"].(string)
	f.pendB = isoParkMarked(t, c, b, f.sessB, f.markerB)
	isoAppendMarked(t, c, b, f.sessB, f.markerB, 2)
	return f
}

// aState is what tenant a can read of its own objects; tenant b's requests must leave it as
// it was.
func (f *isolation) aState(t *testing.T) string {
	t.Helper()
	var parts []string
	for _, path := range []string{
		"/v1/sessions/" + f.sessA, "/v1/sessions/" + f.closedA, "/v1/sessions?limit=200",
		"/v1/sessions/" + f.sessA + "/calls", "/v1/sessions/" + f.sessA + "/pending",
		"/v1/sessions/" + f.sessA + "/events", "/v1/sessions/" + f.sessA + "/roots",
		"/v1/api-keys?limit=200", "/v1/members?limit=200", "/v1/audit?limit=1000", "/v1/audit/verify",
	} {
		r := f.n.call(t, "GET", path, f.c.a.Secret, nil)
		requireStatus(t, r, 200)
		// Time stamps of use move by themselves; the rest must not.
		var v any
		_ = json.Unmarshal([]byte(r.raw), &v)
		isoDropKeys(v, "last_used_at", "updated_at", "checked_at")
		out, _ := json.Marshal(v)
		parts = append(parts, path+" "+string(out))
	}
	return strings.Join(parts, "\n")
}

// isoDropKeys removes keys from every object in a decoded JSON value.
func isoDropKeys(v any, keys ...string) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range keys {
			delete(x, k)
		}
		for _, e := range x {
			isoDropKeys(e, keys...)
		}
	case []any:
		for _, e := range x {
			isoDropKeys(e, keys...)
		}
	}
}

// TestTenantIsolation walks every operation in openapi.yaml as tenant b against tenant a's
// objects: another tenant's id answers 404 (never 403, 409 or 200) whether it is a's
// session, a's call or request inside b's own session, a's key or a's member; b's lists,
// streams, exports and audit log never carry a's rows; b's creations do not count against
// a's quota, and a key b reuses (Idempotency-Key) names b's own request. Afterwards tenant a
// reads everything of its own as it was.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	f := newIsolation(t)
	c, n := f.c, f.n
	bKey := c.b.Secret
	before := f.aState(t)
	var callBWithKey string

	sessA, closedA := "/v1/sessions/"+f.sessA, "/v1/sessions/"+f.closedA
	sessB := "/v1/sessions/" + f.sessB
	uri := map[string]any{"uri": "file:///" + f.marker}
	// targetOp is an operation on a session's live connection: a's session answers 404,
	// open or closed, before anything reaches a worker (a 409 not-ready would tell b that
	// the closed one exists).
	targetOp := func(method, suffix string, body any) func(t *testing.T) {
		return func(t *testing.T) {
			for _, s := range []string{sessA, closedA} {
				f.asB(t, bKey, method, s+suffix, body, 404)
			}
		}
	}

	cases := map[string]func(t *testing.T){
		"getHealthz": func(t *testing.T) { f.asB(t, "", "GET", "/healthz", nil, 200) },
		"getReadyz":  func(t *testing.T) { f.asB(t, "", "GET", "/readyz", nil, 200) },
		"getMe": func(t *testing.T) {
			r := f.asB(t, bKey, "GET", "/v1/me", nil, 200)
			if r.body["tenant"].(map[string]any)["id"] != c.b.Tenant.ID {
				t.Fatalf("me = %s", r.raw)
			}
		},
		"listAPIKeys": func(t *testing.T) {
			r := f.asB(t, bKey, "GET", "/v1/api-keys?limit=200", nil, 200)
			for _, it := range r.body["items"].([]any) {
				if k := it.(map[string]any); k["id"] != c.b.Key.ID && !strings.Contains(fmt.Sprint(k["name"]), f.markerB) {
					t.Fatalf("tenant b lists key %v", k)
				}
			}
		},
		"createAPIKey": func(t *testing.T) {
			// The very request a sent, with a's Idempotency-Key: b's own new key.
			r := n.call(t, "POST", "/v1/api-keys", bKey, map[string]any{"name": "key " + f.markerB, "role": "member"},
				"Idempotency-Key", isolationIdempotencyKey)
			requireStatus(t, r, 201)
			f.requireNoLeak(t, r.raw, "")
			if !strings.Contains(r.raw, f.markerB) {
				t.Fatalf("created = %s", r.raw)
			}
		},
		"revokeAPIKey": func(t *testing.T) {
			for _, id := range []string{f.keyA, c.a.Key.ID} {
				f.asB(t, bKey, "DELETE", "/v1/api-keys/"+id, nil, 404)
			}
		},
		"createToken": func(t *testing.T) {
			r := f.asB(t, "", "POST", "/v1/auth/token", map[string]any{"api_key": bKey}, 200)
			tok := r.body["token"].(string)
			if me := f.asB(t, tok, "GET", "/v1/me", nil, 200); me.body["tenant"].(map[string]any)["id"] != c.b.Tenant.ID {
				t.Fatalf("tenant b's token is for %s", me.raw)
			}
			// A JWT reaches no further than the key it came from.
			for _, req := range []struct{ method, path string }{
				{"GET", sessA}, {"GET", closedA}, {"GET", sessA + "/events"}, {"GET", sessA + "/calls/" + f.callA},
				{"GET", sessB + "/calls/" + f.callA}, {"DELETE", "/v1/api-keys/" + f.keyA},
			} {
				f.asB(t, tok, req.method, req.path, nil, 404)
			}
			f.asB(t, tok, "PATCH", "/v1/members/"+f.memberA, map[string]any{"role": "admin"}, 404)
		},
		"listMembers": func(t *testing.T) {
			r := f.asB(t, bKey, "GET", "/v1/members?limit=200", nil, 200)
			if len(r.body["items"].([]any)) != 1 {
				t.Fatalf("tenant b's members = %s", r.raw)
			}
		},
		"updateMember": func(t *testing.T) {
			for _, id := range []string{f.memberA, c.a.User.ID} {
				f.asB(t, bKey, "PATCH", "/v1/members/"+id, map[string]any{"role": "admin"}, 404)
			}
		},
		"removeMember": func(t *testing.T) {
			for _, id := range []string{f.memberA, c.a.User.ID} {
				f.asB(t, bKey, "DELETE", "/v1/members/"+id, nil, 404)
			}
		},
		"addMember": func(t *testing.T) {
			// Users are shared across tenants: b may add a's member's address and gets its
			// own membership, with nothing of a's (role, time it joined a) attached.
			r := f.asB(t, bKey, "POST", "/v1/members", map[string]any{"email": f.marker + "@a.example.test", "role": "member"}, 201, f.memberA)
			if r.body["role"] != "member" {
				t.Fatalf("added = %s", r.raw)
			}
		},
		"listAudit": func(t *testing.T) {
			for _, q := range []string{"", "?format=jsonl", "?format=csv", "?order=desc&limit=1000",
				"?actor=" + url.QueryEscape("key:"+c.a.Key.ID), "?action=session.*", "?action=tool.*"} {
				f.asB(t, bKey, "GET", "/v1/audit"+q, nil, 200)
			}
		},
		"verifyAudit": func(t *testing.T) {
			if r := f.asB(t, bKey, "GET", "/v1/audit/verify", nil, 200); r.body["ok"] != true {
				t.Fatalf("tenant b's verify = %s", r.raw)
			}
		},
		"createSession": func(t *testing.T) {
			// b reaches the live-session limit; a, one short of it, is checked after the walk.
			body := map[string]any{"name": "second " + f.markerB, "target": map[string]any{"url": "https://mcp.example.test/mcp"}}
			f.asB(t, bKey, "POST", "/v1/sessions", body, 201)
			requireProblem(t, n.call(t, "POST", "/v1/sessions", bKey, body), 409, "")
		},
		"listSessions": func(t *testing.T) {
			first := n.call(t, "GET", "/v1/sessions?limit=1", c.a.Secret, nil)
			requireStatus(t, first, 200)
			cursor := first.body["next_cursor"].(string)
			for _, q := range []string{"?limit=200", "?status=ready,closed,connecting,error", "?limit=1&cursor=" + url.QueryEscape(cursor)} {
				r := f.asB(t, bKey, "GET", "/v1/sessions"+q, nil, 200)
				for _, it := range r.body["items"].([]any) {
					if !strings.Contains(fmt.Sprint(it), f.markerB) {
						t.Fatalf("tenant b lists %v", it)
					}
				}
			}
		},
		"getSession":            targetOp("GET", "", nil),
		"closeSession":          targetOp("DELETE", "", nil),
		"reconnectSession":      targetOp("POST", "/reconnect", nil),
		"getSessionConfig":      targetOp("GET", "/config", nil),
		"listTools":             targetOp("GET", "/tools", nil),
		"listResources":         targetOp("GET", "/resources", nil),
		"listResourceTemplates": targetOp("GET", "/resource-templates", nil),
		"listPrompts":           targetOp("GET", "/prompts", nil),
		"readResource":          targetOp("POST", "/resources/read", uri),
		"subscribeResource":     targetOp("POST", "/resources/subscribe", uri),
		"unsubscribeResource":   targetOp("POST", "/resources/unsubscribe", uri),
		"getPrompt":             targetOp("POST", "/prompts/get", map[string]any{"name": "greet"}),
		"complete": targetOp("POST", "/complete", map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "greet"},
			"argument": map[string]any{"name": "who", "value": "y"}}),
		"setLoggingLevel": targetOp("POST", "/logging-level", map[string]any{"level": "debug"}),
		"pingSession":     targetOp("POST", "/ping", nil),
		"sendRPC":         targetOp("POST", "/rpc", map[string]any{"method": "tools/list"}),
		"getRoots":        targetOp("GET", "/roots", nil),
		"setRoots":        targetOp("PUT", "/roots", map[string]any{"roots": []any{map[string]any{"uri": "file:///b"}}}),
		"startCall": func(t *testing.T) {
			targetOp("POST", "/calls", map[string]any{"name": "echo"})(t)
			// The Idempotency-Key a used for its call names b's own call in b's session.
			r := n.call(t, "POST", sessB+"/calls", bKey, map[string]any{"name": "tool-" + f.markerB}, "Idempotency-Key", isolationIdempotencyKey)
			requireStatus(t, r, 202)
			f.requireNoLeak(t, r.raw, "")
			callBWithKey = r.body["call_id"].(string)
		},
		"listCalls": func(t *testing.T) {
			targetOp("GET", "/calls", nil)(t)
			if r := f.asB(t, bKey, "GET", sessB+"/calls?limit=200", nil, 200); len(r.body["items"].([]any)) == 0 {
				t.Fatalf("tenant b's calls = %s", r.raw)
			}
		},
		"getCall": func(t *testing.T) {
			for _, s := range []string{sessA, closedA, sessB} {
				f.asB(t, bKey, "GET", s+"/calls/"+f.callA, nil, 404)
			}
			f.asB(t, bKey, "GET", sessA+"/calls/"+f.callB, nil, 404)
		},
		"cancelCall": func(t *testing.T) {
			for _, s := range []string{sessA, closedA, sessB} {
				f.asB(t, bKey, "DELETE", s+"/calls/"+f.callA, nil, 404)
			}
		},
		"listPending": func(t *testing.T) {
			targetOp("GET", "/pending", nil)(t)
			if r := f.asB(t, bKey, "GET", sessB+"/pending", nil, 200); len(r.body["items"].([]any)) != 1 {
				t.Fatalf("tenant b's pending = %s", r.raw)
			}
		},
		"answerPending": func(t *testing.T) {
			for _, s := range []string{sessA, closedA, sessB} {
				f.asB(t, bKey, "POST", s+"/pending/"+f.pendA, map[string]any{"action": "decline"}, 404)
			}
			f.asB(t, bKey, "POST", sessA+"/pending/"+f.pendB, map[string]any{"action": "decline"}, 404)
		},
		"listEvents": func(t *testing.T) {
			targetOp("GET", "/events", nil)(t)
			r := f.asB(t, bKey, "GET", sessB+"/events?limit=1000", nil, 200)
			if items := r.body["items"].([]any); len(items) != 2 {
				t.Fatalf("tenant b's events = %s", r.raw)
			}
		},
		"streamEvents": func(t *testing.T) {
			targetOp("GET", "/events/stream", nil)(t)
			s := openStream(t, n, sessB+"/events/stream", bKey)
			// b's two events, then only what b's session adds: a's session's live events,
			// published meanwhile, do not reach b's stream.
			isoAppendMarked(t, c, c.a.Tenant.ID, f.sessA, f.marker, 2)
			isoAppendMarked(t, c, c.b.Tenant.ID, f.sessB, f.markerB, 1)
			for range 3 {
				m := s.nextEvent(t, 5*time.Second)
				if !strings.Contains(m.data, f.markerB) {
					t.Fatalf("tenant b's stream sent %s", m.data)
				}
				f.requireNoLeak(t, m.data, "")
			}
			s.expectQuiet(t, 300*time.Millisecond)
		},
		"exportSession": func(t *testing.T) {
			for _, format := range []string{"json", "jsonl"} {
				targetOp("GET", "/export?format="+format, nil)(t)
				r := f.asB(t, bKey, "GET", sessB+"/export?format="+format, nil, 200)
				if !strings.Contains(r.raw, f.markerB) {
					t.Fatalf("tenant b's export = %s", r.raw)
				}
			}
		},
	}

	// Every operation in openapi.yaml has its case, so a new one cannot skip this walk. The
	// generated spec capitalises operationIds.
	spec, err := apigen.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			id := strings.ToLower(op.OperationID[:1]) + op.OperationID[1:]
			ops = append(ops, id)
			if cases[id] == nil {
				t.Errorf("operation %s has no tenant isolation case", id)
			}
		}
	}
	for op := range cases {
		if !slices.Contains(ops, op) {
			t.Errorf("case %s names no operation in openapi.yaml", op)
		}
	}
	slices.Sort(ops)
	// addMember makes a's member one of b's too (users are shared), so it runs last, after
	// every check that this member is not b's.
	ops = slices.DeleteFunc(ops, func(op string) bool { return op == "addMember" })
	ops = append(ops, "addMember")
	for _, op := range ops {
		if cases[op] != nil {
			t.Run(op, cases[op])
		}
	}

	// Tenant a reads its objects as they were, but for the events added to its session.
	after := f.aState(t)
	if diff := isoChangedLines(before, after, "/v1/sessions?limit=200", sessA, sessA+"/events"); diff != "" {
		t.Fatalf("tenant b's requests changed what tenant a reads:\n%s", diff)
	}
	for _, check := range []struct{ path, want string }{
		{sessA, `"status":"ready"`},
		{closedA, `"status":"closed"`},
		{sessA + "/calls/" + f.callA, `"status":"queued"`},
		{sessA + "/pending", `"status":"pending"`},
		{"/v1/audit/verify", `"ok":true`},
	} {
		if r := n.call(t, "GET", check.path, c.a.Secret, nil); r.status != 200 || !strings.Contains(r.raw, check.want) {
			t.Errorf("tenant a's %s = %d %s, want %s", check.path, r.status, r.raw, check.want)
		}
	}
	if r := n.call(t, "GET", sessA+"/events?limit=1000", c.a.Secret, nil); strings.Contains(r.raw, f.markerB) || len(r.body["items"].([]any)) != 5 {
		t.Fatalf("tenant a's events = %s", r.raw)
	}
	if r := n.call(t, "GET", "/v1/me", f.keySecretA, nil); r.status != 200 {
		t.Fatalf("tenant a's key after b's attempts = %d %s", r.status, r.raw)
	}
	// b's live sessions do not count against a: a, one short of the limit, opens its second.
	body := map[string]any{"target": map[string]any{"url": "https://mcp.example.test/mcp"}}
	requireStatus(t, n.call(t, "POST", "/v1/sessions", c.a.Secret, body), 201)
	// a's Idempotency-Key names a's call, not the one b started with the same key.
	again := n.call(t, "POST", sessA+"/calls", c.a.Secret, map[string]any{"name": "tool-" + f.marker}, "Idempotency-Key", isolationIdempotencyKey)
	requireStatus(t, again, 202)
	if again.body["call_id"] == callBWithKey || strings.Contains(again.raw, f.markerB) {
		t.Fatalf("the same key in two tenants: a's call %s, b's %s", again.raw, callBWithKey)
	}
}

// isoChangedLines names the lines of before (one per path: "<path> <body>") that differ in
// after, but for the paths in skip.
func isoChangedLines(before, after string, skip ...string) string {
	b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
	var out []string
	for i := range b {
		path, _, _ := strings.Cut(b[i], " ")
		switch {
		case slices.Contains(skip, path):
		case i >= len(a):
			out = append(out, "missing: "+b[i])
		case b[i] != a[i]:
			out = append(out, "before: "+b[i]+"\nafter:  "+a[i])
		}
	}
	return strings.Join(out, "\n")
}
