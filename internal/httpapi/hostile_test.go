package httpapi_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/mcptest"
)

// hostileSeed makes the hostile requests the same on every run; change it to explore others.
const hostileSeed = 20261205

// hostilePerOperation caps the requests sent to one operation (its cross-tenant requests
// aside), chosen by the seeded generator from every mutation the operation's spec allows.
// Every operation has fewer today (createSession, the largest body, about 360), so all are
// sent, in the generator's order; the cap keeps the test's time bounded as the spec grows.
const hostilePerOperation = 500

// hostileRequest is one request sent by TestHostileInputsNeverFail5xx.
type hostileRequest struct {
	op     string // operationId, or "-" for requests no operation matches
	what   string // the mutation, for the failure message
	method string
	path   string // escaped
	query  string // raw
	header http.Header
	body   []byte
	// crossTenant marks a request naming another tenant's object, which must be 404.
	crossTenant bool
	// first, when set, is sent (and checked) just before this request.
	first *hostileRequest
}

// hostileFixtures are the objects the hostile requests name: the tenant's own, a victim of
// each kind for the operations that destroy what they name, and the other tenant's.
type hostileFixtures struct {
	token                                 string
	session, victimSession, call, pending string
	victimKey, victimUser, removedUser    string
	otherSession, otherKey, otherUser     string
}

// logCapture keeps the warnings and errors the server logs.
type logCapture struct {
	mu      sync.Mutex
	records []string
}

func (l *logCapture) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }

func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, b.String())
	l.mu.Unlock()
	return nil
}

func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }

func (l *logCapture) matching(words ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		for _, w := range words {
			if strings.Contains(r, w) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// withTokenExchange gives a node the JWT exchange (POST /v1/auth/token), which cluster
// nodes are built without.
func withTokenExchange(t *testing.T, c *cluster) func(*httpapi.Config) {
	t.Helper()
	keys, err := auth.ParseJWTKeys("test-1:" + testJWTSeed)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokenService(c.tenants, &auth.TokenConfig{Keys: keys, Issuer: "tapline", Audience: "tapline-api", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return func(cfg *httpapi.Config) {
		cfg.Tokens = tokens
		cfg.Auth = auth.NewAuthenticator(c.tenants, tokens)
	}
}

// TestHostileInputsNeverFail5xx walks every operation in openapi.yaml with requests built to
// break it: bodies that are not JSON or have the wrong type, null, huge, deeply nested,
// unknown or invalid UTF-8 values at each property, numbers out of range, bad query
// parameters and headers, malformed, unknown and other tenants' path ids, wrong content
// types and methods. Whatever comes in, the api answers below 500 without panicking, every
// 4xx is problem+json, a 400 or 422 names the field at fault, another tenant's object is
// 404, and nothing the requests did not name is lost. The requests come from a seeded
// generator, so a failure repeats.
func TestHostileInputsNeverFail5xx(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	logs := &logCapture{}
	n := c.node(t, withTokenExchange(t, c), func(cfg *httpapi.Config) { cfg.Logger = slog.New(logs) })
	c.worker(t)
	fx := hostileSetup(t, c, n, target)

	spec, err := openapi3.NewLoader().LoadFromData(tapline.OpenAPISpec)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(hostileSeed, hostileSeed))
	var reqs []hostileRequest
	paths := spec.Paths.InMatchingOrder()
	sort.Strings(paths)
	for _, p := range paths {
		item := spec.Paths.Value(p)
		ops := item.Operations()
		for _, method := range slices.Sorted(maps.Keys(ops)) {
			op := ops[method]
			all := hostileMutations(t, fx, p, method, item, op)
			// Map iteration built them in no set order: sort them before the seeded shuffle.
			slices.SortFunc(all, func(a, b hostileRequest) int {
				return cmp.Or(strings.Compare(a.what, b.what), strings.Compare(a.path, b.path),
					strings.Compare(a.query, b.query), bytes.Compare(a.body, b.body))
			})
			rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			var kept, cross []hostileRequest
			for _, r := range all {
				switch {
				case r.crossTenant:
					cross = append(cross, r)
				case len(kept) < hostilePerOperation:
					kept = append(kept, r)
				}
			}
			reqs = append(reqs, cross...)
			reqs = append(reqs, kept...)
		}
		reqs = append(reqs, wrongMethods(fx, p, item)...)
	}
	reqs = append(reqs, unroutedRequests(fx)...)

	client := &http.Client{Timeout: 90 * time.Second}
	statuses := map[string]map[int]int{}
	var failures []string
	fail := func(r *hostileRequest, format string, args ...any) {
		failures = append(failures, fmt.Sprintf("%s %s [%s] %s?%.80s: %s", r.op, r.what, r.method, truncateForLog(r.path), r.query, fmt.Sprintf(format, args...)))
	}
	start := time.Now()
	for i := range reqs {
		for _, r := range []*hostileRequest{reqs[i].first, &reqs[i]} {
			if r == nil {
				continue
			}
			status, ct, body, err := sendHostile(client, n.srv.URL, r)
			if err != nil {
				fail(r, "no answer: %v", err)
				continue
			}
			if statuses[r.op] == nil {
				statuses[r.op] = map[int]int{}
			}
			statuses[r.op][status]++
			checkHostileAnswer(r, status, ct, body, fail)
		}
	}
	t.Logf("%d hostile requests in %s", len(reqs), time.Since(start).Round(time.Millisecond))
	for _, op := range slices.Sorted(maps.Keys(statuses)) {
		t.Logf("%-24s %v", op, statuses[op])
	}
	for _, f := range failures {
		t.Error(f)
	}
	for _, rec := range logs.matching("panic", "request failed", "database refused input") {
		// A 502 for the target's own JSON-RPC error is logged too; its answer was checked above.
		if !strings.Contains(rec, "status=502") || !strings.Contains(rec, "target answered error") {
			t.Errorf("server log: %.600s", rec)
		}
	}
	hostileNothingLost(t, c, n, fx)
}

// checkHostileAnswer holds one answer to the rule: below 500, problem+json for every 4xx
// naming the field for 400 and 422, 404 for another tenant's object.
func checkHostileAnswer(r *hostileRequest, status int, ct string, body []byte, fail func(*hostileRequest, string, ...any)) {
	var p struct {
		Type   *string `json:"type"`
		Title  *string `json:"title"`
		Status *int    `json:"status"`
		Field  string  `json:"field"`
		Errors []struct {
			Field string `json:"field"`
		} `json:"errors"`
	}
	if status >= 400 && r.method != http.MethodHead {
		if ct != "application/problem+json" {
			fail(r, "status %d with content type %q: %.300s", status, ct, body)
			return
		}
		if err := json.Unmarshal(body, &p); err != nil || p.Type == nil || p.Title == nil || p.Status == nil || *p.Status != status {
			fail(r, "status %d with a problem lacking type, title or status: %.300s", status, body)
			return
		}
	}
	switch {
	case status == http.StatusBadGateway && p.Type != nil && *p.Type == "urn:tapline:problem:target-error":
		// The target answered the request it was sent with a JSON-RPC error, as the
		// contract says (502 target-error): the api itself did not fail.
	case status >= 500:
		fail(r, "status %d: %.300s", status, body)
	case r.crossTenant && status != http.StatusNotFound:
		fail(r, "another tenant's object answered %d, want 404: %.300s", status, body)
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity:
		if p.Field == "" || p.Field == "request" {
			fail(r, "status %d names no field: %.300s", status, body)
		}
		for _, e := range p.Errors {
			if e.Field == "" {
				fail(r, "status %d lists a problem without a field: %.300s", status, body)
			}
		}
	}
}

// sendHostile sends r and reads its answer; an event stream is closed once it has started.
func sendHostile(client *http.Client, base string, r *hostileRequest) (int, string, []byte, error) {
	u := base + r.path
	if r.query != "" {
		u += "?" + r.query
	}
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, u, rd)
	if err != nil {
		return 0, "", nil, err
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer res.Body.Close()
	ct := res.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "text/event-stream") {
		return res.StatusCode, ct, nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	return res.StatusCode, ct, body, err
}

func truncateForLog(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// hostileSetup makes the objects the requests name: a ready session on a live target with a
// finished call and a parked elicitation, a victim session, key and member for the
// operations that close, revoke and remove, and the other tenant's session.
func hostileSetup(t *testing.T, c *cluster, n *apiNode, target *mcptest.StatefulServer) *hostileFixtures {
	t.Helper()
	fx := &hostileFixtures{token: c.a.Secret, otherKey: c.b.Key.ID, otherUser: c.b.User.ID}
	create := func(token, url string) string {
		r := n.call(t, "POST", "/v1/sessions", token, map[string]any{"target": map[string]any{"url": url}})
		requireStatus(t, r, 201)
		return r.body["id"].(string)
	}
	fx.session = create(c.a.Secret, target.URL())
	fx.victimSession = create(c.a.Secret, "http://127.0.0.1:1/mcp")
	fx.otherSession = create(c.b.Secret, target.URL())
	eventually(t, 30*time.Second, "session ready", func() bool {
		return n.call(t, "GET", "/v1/sessions/"+fx.session, c.a.Secret, nil).body["status"] == "ready"
	})
	call := n.call(t, "POST", "/v1/sessions/"+fx.session+"/calls?wait=10", c.a.Secret, map[string]any{"name": "echo", "arguments": map[string]any{"text": "hi"}})
	requireStatus(t, call, 200)
	fx.call = call.body["call_id"].(string)
	requireStatus(t, n.call(t, "POST", "/v1/sessions/"+fx.session+"/calls", c.a.Secret, map[string]any{"name": "elicit", "arguments": map[string]any{"message": "who?"}}), 202)
	eventually(t, 20*time.Second, "pending elicitation", func() bool {
		items, _ := n.call(t, "GET", "/v1/sessions/"+fx.session+"/pending?status=pending", c.a.Secret, nil).body["items"].([]any)
		if len(items) == 0 {
			return false
		}
		fx.pending = items[0].(map[string]any)["request_id"].(string)
		return true
	})
	key := n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"name": "victim", "role": "viewer"})
	requireStatus(t, key, 201)
	fx.victimKey = key.body["id"].(string)
	member := func(email string) string {
		r := n.call(t, "POST", "/v1/members", c.a.Secret, map[string]any{"email": email, "role": "viewer"})
		requireStatus(t, r, 201)
		return r.body["id"].(string)
	}
	fx.victimUser, fx.removedUser = member("victim@example.test"), member("removed@example.test")
	return fx
}

// hostileNothingLost checks that the requests changed nothing they did not name: the
// caller's key, its session and the other tenant's session are as they were.
func hostileNothingLost(t *testing.T, c *cluster, n *apiNode, fx *hostileFixtures) {
	t.Helper()
	requireStatus(t, n.call(t, "GET", "/v1/me", c.a.Secret, nil), 200)
	sess := n.call(t, "GET", "/v1/sessions/"+fx.session, c.a.Secret, nil)
	if sess.status != 200 || sess.body["status"] != "ready" {
		t.Errorf("the session the requests used is %d %s", sess.status, sess.raw)
	}
	other := n.call(t, "GET", "/v1/sessions/"+fx.otherSession, c.b.Secret, nil)
	if other.status != 200 || other.body["status"] == "closed" {
		t.Errorf("the other tenant's session is %d %s", other.status, other.raw)
	}
	requireStatus(t, n.call(t, "GET", "/v1/me", c.b.Secret, nil), 200)
	members := n.call(t, "GET", "/v1/members", c.b.Secret, nil)
	if !strings.Contains(members.raw, c.b.User.ID) || !strings.Contains(members.raw, `"owner"`) {
		t.Errorf("the other tenant's members are %s", members.raw)
	}
}

// validBody is a body each operation accepts, which the mutations start from. Every
// operation with a body must have one, so a new operation cannot go unchecked.
func validBody(fx *hostileFixtures, op string) (map[string]any, bool) {
	switch op {
	case "createAPIKey":
		return map[string]any{"name": "hostile", "role": "viewer", "expires_at": "2099-01-01T00:00:00Z"}, true
	case "createToken":
		return map[string]any{"api_key": fx.token}, true
	case "addMember":
		return map[string]any{"email": "hostile@example.test", "role": "viewer"}, true
	case "updateMember":
		return map[string]any{"role": "viewer"}, true
	case "createSession":
		return map[string]any{
			"name": "hostile",
			"target": map[string]any{
				"url": "http://127.0.0.1:1/mcp", "transport": "streamable_http", "protocol_version": "auto",
				"bearer_token": "t0ken", "headers": map[string]any{"X-Api-Key": "v"},
			},
			"roots": []any{map[string]any{"uri": "file:///work", "name": "work"}},
		}, true
	case "startCall":
		return map[string]any{"name": "echo", "arguments": map[string]any{"text": "hi"}}, true
	case "readResource", "subscribeResource", "unsubscribeResource":
		return map[string]any{"uri": mcptest.HelloURI}, true
	case "getPrompt":
		return map[string]any{"name": "greet", "arguments": map[string]any{"name": "Ada"}}, true
	case "complete":
		return map[string]any{
			"ref":      map[string]any{"type": "ref/prompt", "name": "greet"},
			"argument": map[string]any{"name": "style", "value": "p"},
			"context":  map[string]any{"arguments": map[string]any{"name": "Ada"}},
		}, true
	case "setLoggingLevel":
		return map[string]any{"level": "debug"}, true
	case "setRoots":
		return map[string]any{"roots": []any{map[string]any{"uri": "file:///work", "name": "work"}}}, true
	case "sendRPC":
		return map[string]any{"method": "ping", "params": map[string]any{}}, true
	case "answerPending":
		return map[string]any{"action": "decline"}, true
	}
	return nil, false
}

// validPathParam is the id an operation's path names: the victims for the operations that
// destroy what they name, the tenant's own objects otherwise; other is the other tenant's.
func validPathParam(fx *hostileFixtures, op, name string) (own, other string) {
	switch name {
	case "call_id":
		return fx.call, ""
	case "request_id":
		return fx.pending, ""
	}
	switch op {
	case "revokeAPIKey":
		return fx.victimKey, fx.otherKey
	case "updateMember":
		return fx.victimUser, fx.otherUser
	case "removeMember":
		return fx.removedUser, fx.otherUser
	case "closeSession", "reconnectSession":
		return fx.victimSession, fx.otherSession
	}
	return fx.session, fx.otherSession
}

// hostileValues are JSON texts that break what a property expects, whatever that is.
func hostileValues() map[string]string {
	deepArray := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	deepObject := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	var wide strings.Builder
	wide.WriteString("{")
	for i := range 2000 {
		if i > 0 {
			wide.WriteString(",")
		}
		fmt.Fprintf(&wide, `"k%d":%d`, i, i)
	}
	wide.WriteString("}")
	return map[string]string{
		"null":             `null`,
		"true":             `true`,
		"zero":             `0`,
		"negative":         `-1`,
		"fraction":         `1.5`,
		"float-overflow":   `1e400`,
		"int64-overflow":   `9223372036854775808`,
		"int64-underflow":  `-9223372036854775809`,
		"huge-integer":     `123456789012345678901234567890123456789`,
		"empty-string":     `""`,
		"string":           `"x"`,
		"huge-string":      `"` + strings.Repeat("x", 300_000) + `"`,
		"over-body-limit":  `"` + strings.Repeat("y", 1_100_000) + `"`,
		"invalid-utf8":     "\"a\xff\xfe\xc3b\"",
		"lone-surrogate":   `"\ud800x"`,
		"nul":              `"a\u0000b"`,
		"control":          `"a\u0001\u001fb"`,
		"crlf":             `"a\r\nX-Injected: 1"`,
		"metadata-url":     `"http://169.254.169.254/latest/meta-data"`,
		"empty-array":      `[]`,
		"array-of-null":    `[null]`,
		"empty-object":     `{}`,
		"empty-key-object": `{"":null}`,
		"deep-array":       deepArray,
		"deep-object":      deepObject,
		"wide-object":      wide.String(),
		"long-array":       "[" + strings.Repeat("1,", 20000) + "1]",
	}
}

// propertyPaths lists the properties a body schema declares, two levels down and through
// array items, as paths into the body ("target", "url"); "*" is an array's first item.
func propertyPaths(s *openapi3.Schema, prefix []string, depth int) [][]string {
	if s == nil || depth > 3 {
		return nil
	}
	var out [][]string
	for _, name := range slices.Sorted(maps.Keys(s.Properties)) {
		p := append(slices.Clone(prefix), name)
		out = append(out, p)
		prop := s.Properties[name].Value
		out = append(out, propertyPaths(prop, p, depth+1)...)
		if prop != nil && prop.Items != nil {
			out = append(out, propertyPaths(prop.Items.Value, append(slices.Clone(p), "*"), depth+1)...)
		}
	}
	for _, sub := range s.AllOf {
		out = append(out, propertyPaths(sub.Value, prefix, depth)...)
	}
	return out
}

// setAt puts the sentinel at path in a copy of body, making the objects on the way.
func setAt(body any, path []string, v any) any {
	if len(path) == 0 {
		return v
	}
	switch b := body.(type) {
	case map[string]any:
		out := make(map[string]any, len(b)+1)
		for k, e := range b {
			out[k] = e
		}
		out[path[0]] = setAt(b[path[0]], path[1:], v)
		return out
	case []any:
		out := slices.Clone(b)
		if len(out) == 0 {
			out = []any{map[string]any{}}
		}
		out[0] = setAt(out[0], path[1:], v)
		return out
	default:
		if path[0] == "*" {
			return []any{setAt(map[string]any{}, path[1:], v)}
		}
		return map[string]any{path[0]: setAt(nil, path[1:], v)}
	}
}

const hostileSentinel = "\u2603hostile\u2603"

// withRaw writes body as JSON with the raw JSON text in place of the sentinel.
func withRaw(body any, raw string) []byte {
	b, _ := json.Marshal(body)
	quoted, _ := json.Marshal(hostileSentinel)
	return bytes.Replace(b, quoted, []byte(raw), 1)
}

// hostileMutations lists every hostile request for one operation, cross-tenant ones marked.
func hostileMutations(t *testing.T, fx *hostileFixtures, path, method string, item *openapi3.PathItem, op *openapi3.Operation) []hostileRequest {
	t.Helper()
	params := slices.Concat(item.Parameters, op.Parameters)
	pathVals := map[string]string{}
	otherVals := map[string]string{}
	for _, ref := range params {
		if p := ref.Value; p.In == openapi3.ParameterInPath {
			pathVals[p.Name], otherVals[p.Name] = validPathParam(fx, op.OperationID, p.Name)
		}
	}
	var body map[string]any
	var bodySchema *openapi3.Schema
	if op.RequestBody != nil {
		var ok bool
		if body, ok = validBody(fx, op.OperationID); !ok {
			t.Fatalf("%s has a request body but no valid body to start from: add one to validBody", op.OperationID)
		}
		bodySchema = op.RequestBody.Value.Content.Get("application/json").Schema.Value
	}
	build := func(what string, vals map[string]string, query string, header http.Header, b []byte) hostileRequest {
		p := path
		for k, v := range vals {
			p = strings.ReplaceAll(p, "{"+k+"}", v)
		}
		h := http.Header{"Authorization": {"Bearer " + fx.token}}
		if b != nil {
			h.Set("Content-Type", "application/json")
		}
		for k, v := range header {
			h[k] = v
		}
		return hostileRequest{op: op.OperationID, what: what, method: method, path: p, query: query, header: h, body: b}
	}
	var validBytes []byte
	if body != nil {
		validBytes, _ = json.Marshal(body)
	}
	var out []hostileRequest
	escaped := func(vals map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range vals {
			m[k] = url.PathEscape(v)
		}
		return m
	}
	own := escaped(pathVals)

	// Another tenant's object is not there.
	for name, other := range otherVals {
		if other == "" {
			continue
		}
		vals := escaped(pathVals)
		vals[name] = url.PathEscape(other)
		r := build("other tenant's "+name, vals, "", nil, validBytes)
		r.crossTenant = true
		out = append(out, r)
	}
	if _, ok := otherVals["call_id"]; ok || otherVals["request_id"] != "" || pathVals["request_id"] != "" {
		vals := escaped(pathVals)
		vals["id"] = url.PathEscape(fx.otherSession)
		r := build("other tenant's session with own sub-id", vals, "", nil, validBytes)
		r.crossTenant = true
		out = append(out, r)
	}

	// Path ids that are malformed, unknown or very long.
	for name := range pathVals {
		for what, v := range map[string]string{
			"not-uuid": "not-a-uuid", "random-uuid": "3f0c1a4e-8b9d-4c1e-9f2a-7d6b5e4c3b2a", "too-long": strings.Repeat("a", 65),
			"very-long": strings.Repeat("b", 8000), "nul": "%00", "invalid-utf8": "%FF%FE", "unicode": url.PathEscape("ß☃"),
			"dot-dot": "..", "slash": "%2F", "space": "%20", "quote": "%27%22", "sql": url.PathEscape("' or 1=1 --"),
			"crlf": "%0D%0A", "uppercase-own": strings.ToUpper(pathVals[name]), "own-with-suffix": url.PathEscape(pathVals[name] + "x"),
		} {
			vals := escaped(pathVals)
			vals[name] = v
			out = append(out, build(name+" "+what, vals, "", nil, validBytes))
		}
	}

	// Query parameters of the wrong type, out of range, malformed, repeated, unknown.
	for _, ref := range params {
		p := ref.Value
		if p.In != openapi3.ParameterInQuery {
			continue
		}
		for _, v := range queryValues(p) {
			out = append(out, build("query "+p.Name+"="+truncateForLog(v), own, p.Name+"="+v, nil, validBytes))
		}
	}
	for _, q := range []string{"unknown=1", "%zz=1", "a=%zz", strings.Repeat("q=1&", 500) + "q=1", "=", "&&&"} {
		out = append(out, build("query "+truncateForLog(q), own, q, nil, validBytes))
	}

	// Header parameters, and headers every request may carry.
	for _, ref := range params {
		p := ref.Value
		if p.In != openapi3.ParameterInHeader {
			continue
		}
		for _, v := range headerValues(p) {
			out = append(out, build("header "+p.Name+"="+truncateForLog(v), own, "", http.Header{http.CanonicalHeaderKey(p.Name): {v}}, validBytes))
		}
	}
	for what, h := range map[string]http.Header{
		"no credentials":        {"Authorization": {""}},
		"bad credentials":       {"Authorization": {"Bearer tpl_nope"}},
		"basic credentials":     {"Authorization": {"Basic dXNlcjpwYXNz"}},
		"non-ascii credentials": {"Authorization": {"Bearer t\xc3\xa9"}},
		"huge credentials":      {"Authorization": {"Bearer " + strings.Repeat("z", 20000)}},
		"accept garbage":        {"Accept": {"no/such;;q=x"}},
		"last-event-id garbage": {"Last-Event-Id": {"zzz"}},
		"request id garbage":    {"X-Request-Id": {strings.Repeat("\xff", 300)}},
		"forwarded-for garbage": {"X-Forwarded-For": {"::::, 999.1.1.1, [x]"}},
		"traceparent garbage":   {"Traceparent": {"00-zz-zz-zz"}},
		"content encoding gzip": {"Content-Encoding": {"gzip"}},
	} {
		out = append(out, build(what, own, "", h, validBytes))
	}

	if body == nil {
		// A body where none is expected is ignored or refused, never a fault.
		out = append(out, build("unexpected body", own, "", nil, []byte(`{"x":`)))
		return out
	}

	// Bodies that are not JSON, or not the JSON object the operation takes.
	members := strings.TrimSuffix(strings.TrimPrefix(string(validBytes), "{"), "}")
	for what, b := range map[string]string{
		"empty": "", "truncated": `{"a":`, "garbage": "\x00\x01\x02\xff", "xml": "<a/>", "null": "null",
		"string": `"x"`, "number": "1", "array": "[]", "array-of-body": "[" + string(validBytes) + "]",
		"trailing-data": string(validBytes) + "{}", "two-objects": string(validBytes) + string(validBytes),
		"bom": "\ufeff" + string(validBytes), "duplicate-keys": "{" + members + "," + members + "}",
		"comment": "/* c */" + string(validBytes), "deep": strings.Repeat("[", 100000), "utf16": "\xff\xfe{\x00}\x00",
		"invalid-utf8-key": "{\"\xff\":1}", "nul-key": `{"a\u0000":1}`,
	} {
		out = append(out, build("body "+what, own, "", nil, []byte(b)))
	}
	// An Idempotency-Key used again for another request.
	if slices.ContainsFunc(params, func(p *openapi3.ParameterRef) bool { return p.Value.Name == "Idempotency-Key" }) {
		key := http.Header{"Idempotency-Key": {"hostile-" + op.OperationID}}
		first := build("idempotency key first use", own, "", key, validBytes)
		again := build("idempotency key reused for another request", own, "unknown=1", key, validBytes)
		again.first = &first
		out = append(out, again)
	}
	// The right body under the wrong content type.
	for _, ct := range []string{"", "text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
		"application/json; charset=latin1", "application/json-patch+json", "////", "application/problem+json", "application/json\xff"} {
		out = append(out, build("content type "+ct, own, "", http.Header{"Content-Type": {ct}}, validBytes))
	}
	// Each property given what it does not expect, and properties nobody declared.
	values := hostileValues()
	for _, prop := range propertyPaths(bodySchema, nil, 0) {
		for what, raw := range values {
			out = append(out, build("body "+strings.Join(prop, ".")+" "+what, own, "", nil, withRaw(setAt(body, prop, hostileSentinel), raw)))
		}
		unknown := append(slices.Clone(prop[:len(prop)-1]), "no_such_field")
		out = append(out, build("body unknown at "+strings.Join(unknown, "."), own, "", nil, withRaw(setAt(body, unknown, hostileSentinel), "1")))
	}
	for what, raw := range values {
		out = append(out, build("body whole "+what, own, "", nil, []byte(raw)))
	}
	return out
}

// queryValues are hostile values for a query parameter, after its schema.
func queryValues(p *openapi3.Parameter) []string {
	vals := []string{"", "%00", "%FF", "%zz", strings.Repeat("w", 10000), url.QueryEscape("☃"), "a&" + p.Name + "=b", "x&" + p.Name + "=y&" + p.Name + "=z"}
	s := p.Schema.Value
	if s.Type.Is("integer") || s.Type.Is("number") {
		vals = append(vals, "abc", "-1", "-5", "0", "1.5", "1e3", "99999999999999999999", "-9223372036854775809", "9223372036854775807", "0x10", "+1", "%201", "NaN", "Infinity")
	}
	if s.Type.Is("array") {
		vals = append(vals, "a,b,,c", ",", strings.Repeat("x,", 100)+"x")
		for i := range 12 {
			vals = append(vals, strings.Repeat(fmt.Sprintf("%s=v%d&", p.Name, i), 1)+p.Name+"=w")
		}
	}
	if s.Format == "date-time" {
		vals = append(vals, "yesterday", "2026-13-45T99:99:99Z", "0000-00-00T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
			url.QueryEscape("9999-12-31T23:59:59-23:59"), url.QueryEscape("2026-01-01T00:00:00+99:00"), "2026-01-01T00:00:00.1234567891234Z",
			"-1", "2026-01-01", "1e9")
	}
	if p.Name == "cursor" {
		// Cursors in the shapes the listings issue, holding what they never would.
		const id = "01a24663-133b-7c5f-92c5-61fd5beabff8"
		for _, c := range []string{
			"0001-01-01T00:00:00Z|" + id, "9999-12-31T23:59:59.999999999-23:59|" + id, "2026-01-01T00:00:00Z|" + strings.ToUpper(id),
			"2026-01-01T00:00:00Z|", "|", "seq:0", "seq:-1", "seq:9223372036854775807", "seq:99999999999999999999",
			`{"at":"0001-01-01T00:00:00Z","id":"` + id + `"}`, `{"at":"9999-12-31T23:59:59.999999999-23:59","id":"` + id + `"}`,
			`{"at":null,"id":"` + id + `"}`, `{"at":"2026-01-01T00:00:00Z","id":1}`, `[]`, "\x00",
		} {
			vals = append(vals, base64.RawURLEncoding.EncodeToString([]byte(c)), url.QueryEscape(base64.StdEncoding.EncodeToString([]byte(c))))
		}
	}
	if len(s.Enum) > 0 {
		vals = append(vals, "garbage", "JSON", url.QueryEscape(fmt.Sprint(s.Enum[0])+" "))
	}
	return vals
}

// headerValues are hostile values for a header parameter, after its schema.
func headerValues(p *openapi3.Parameter) []string {
	vals := []string{"", " ", strings.Repeat("k", 201), strings.Repeat("k", 5000), "\xc3\xa9\xe2\x98\x83", "\xff\xfe", "a b", "\"quoted\""}
	s := p.Schema.Value
	if s.Type.Is("integer") {
		vals = append(vals, "abc", "-1", "99999999999999999999", "1.5", "0x1", "+1", "1, 2")
	}
	return vals
}

// wrongMethods sends each path the methods it does not have.
func wrongMethods(fx *hostileFixtures, path string, item *openapi3.PathItem) []hostileRequest {
	p := strings.NewReplacer("{id}", fx.session, "{call_id}", fx.call, "{request_id}", fx.pending).Replace(path)
	var out []hostileRequest
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodOptions, http.MethodTrace, http.MethodConnect, "BREW"} {
		if item.GetOperation(m) != nil {
			continue
		}
		out = append(out, hostileRequest{op: "-", what: "method not allowed", method: m, path: p,
			header: http.Header{"Authorization": {"Bearer " + fx.token}, "Content-Type": {"application/json"}}, body: []byte("{}")})
	}
	return out
}

// unroutedRequests are paths no operation has.
func unroutedRequests(fx *hostileFixtures) []hostileRequest {
	var out []hostileRequest
	for _, p := range []string{"/v1", "/v1/", "/v1/nope", "/v1/me/", "/v1/sessions/", "/V1/me", "/v1/me;x=1", "/v1/me%00", "/v1/sessions/" + fx.session + "/nope", "/v1/sessions/" + fx.session + "/calls/" + fx.call + "/x",
		"/v1/sessions//tools", "/v1//sessions", "/v1/sessions/%2e%2e/tools", "/v1/" + strings.Repeat("x/", 2000)} {
		out = append(out, hostileRequest{op: "-", what: "no such path", method: http.MethodGet, path: p,
			header: http.Header{"Authorization": {"Bearer " + fx.token}}})
	}
	return out
}
