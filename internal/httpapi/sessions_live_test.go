package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/redistest"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
)

// liveCluster is a cluster with a database of its own (workers discover sessions across
// tenants and must not find another test's) and loopback targets allowed, as in dev mode.
func liveCluster(t *testing.T) *cluster {
	t.Helper()
	pool := dbtest.New(t).AppPool
	tenants := tenant.NewStore(pool)
	mk := func(n string) *tenant.BootstrapResult {
		res, err := tenants.Bootstrap(context.Background(), tenant.BootstrapParams{
			TenantName: fmt.Sprintf("%s-%s-%d", n, t.Name(), time.Now().UnixNano()), Email: n + "@example.test",
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	p := redistest.Prefix(t)
	return &cluster{
		pool: pool, rdb: testRedis(t, os.Getenv("TEST_REDIS_URL")), tenants: tenants,
		trkPrefix: p + ":trk", inspPrefix: p + ":insp", a: mk("a"), b: mk("b"),
		guardConfig: netguard.Config{AllowLoopback: true},
		keepAlive:   time.Hour, commandAfter: 10 * time.Second,
	}
}

// worker starts a worker runtime on the cluster's database and Redis prefixes; it stops
// when the test ends.
func (c *cluster) worker(t *testing.T) {
	t.Helper()
	var rt *inspector.Runtime
	trk, err := tracker.New(c.rdb, &tracker.Config{
		Prefix: c.trkPrefix, NodeName: "worker-test", NodeTTL: 2 * time.Second, LeaseTTL: 3 * time.Second,
		OnLeaseLost: func(l *tracker.Lease) {
			if rt != nil {
				rt.LeaseLost(l)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := trk.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(trk.Stop)
	guard, err := netguard.New(&c.guardConfig)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secretbox.ParseKeyring("test:" + strings.Repeat("A", 43) + "=")
	if err != nil {
		t.Fatal(err)
	}
	rt, err = inspector.NewRuntime(&inspector.RuntimeConfig{
		Pool: c.pool, Redis: c.rdb, Tracker: trk, Guard: guard, Keys: keys, Prefix: c.inspPrefix,
		DiscoveryInterval: 300 * time.Millisecond, ConnectAttempts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Stop(ctx)
	})
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSessionAgainstALiveTarget drives every session operation through the api, a worker
// runtime and a real go-sdk MCP server.
func TestSessionAgainstALiveTarget(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	n := c.node(t)
	c.worker(t)
	var bodies []string
	call := func(method, path string, body any) response {
		t.Helper()
		r := n.call(t, method, "/v1/sessions"+path, c.a.Secret, body)
		bodies = append(bodies, r.raw)
		return r
	}

	created := call("POST", "", map[string]any{
		"name": "live",
		"target": map[string]any{"url": target.URL(), "bearer_token": secretToken,
			"headers": map[string]string{"X-Api-Key": secretHeader}},
		"roots": []any{map[string]any{"uri": "file:///work", "name": "work"}},
	})
	requireStatus(t, created, 201)
	id := created.body["id"].(string)
	stream := openStream(t, n, "/v1/sessions/"+id+"/events/stream", c.a.Secret)
	var sess response
	eventually(t, 20*time.Second, "session ready", func() bool {
		sess = call("GET", "/"+id, nil)
		return sess.body["status"] == "ready"
	})
	if sess.body["protocol_version"] == "" || !strings.Contains(fmt.Sprint(sess.body["server_info"]), "mcptest-stateful") {
		t.Fatalf("ready session = %s", sess.raw)
	}

	t.Run("Lists", func(t *testing.T) {
		tools := call("GET", "/"+id+"/tools", nil)
		requireStatus(t, tools, 200)
		if !strings.Contains(tools.raw, `"name":"echo"`) || strings.Contains(tools.raw, "nextCursor") {
			t.Fatalf("tools = %s", tools.raw)
		}
		for path, want := range map[string]string{
			"/resources":          mcptest.HelloURI,
			"/resource-templates": `"uriTemplate"`,
			"/prompts":            `"name":"greet"`,
		} {
			r := call("GET", "/"+id+path, nil)
			if r.status != 200 || !strings.Contains(r.raw, want) {
				t.Errorf("%s = %d %s", path, r.status, r.raw)
			}
		}
	})
	t.Run("ReadsPromptsCompletion", func(t *testing.T) {
		read := call("POST", "/"+id+"/resources/read", map[string]any{"uri": mcptest.HelloURI})
		if read.status != 200 || !strings.Contains(read.raw, `"contents"`) {
			t.Fatalf("read = %d %s", read.status, read.raw)
		}
		missing := call("POST", "/"+id+"/resources/read", map[string]any{"uri": "mcptest://nope"})
		requireProblem(t, missing, 502, "")
		if missing.body["type"] != "urn:tapline:problem:target-error" || !strings.Contains(missing.body["detail"].(string), "JSON-RPC error") {
			t.Fatalf("remote error = %s", missing.raw)
		}
		prompt := call("POST", "/"+id+"/prompts/get", map[string]any{"name": "greet", "arguments": map[string]string{"name": "Ada"}})
		if prompt.status != 200 || !strings.Contains(prompt.raw, "Ada") {
			t.Fatalf("prompt = %d %s", prompt.status, prompt.raw)
		}
		comp := call("POST", "/"+id+"/complete", map[string]any{
			"ref": map[string]any{"type": "ref/prompt", "name": "greet"}, "argument": map[string]any{"name": "style", "value": "p"},
		})
		if comp.status != 200 || !strings.Contains(comp.raw, "pirate") {
			t.Fatalf("complete = %d %s", comp.status, comp.raw)
		}
	})
	t.Run("PingLoggingRPC", func(t *testing.T) {
		ping := call("POST", "/"+id+"/ping", nil)
		if ping.status != 200 || ping.body["ms"].(float64) <= 0 {
			t.Fatalf("ping = %d %s", ping.status, ping.raw)
		}
		lvl := call("POST", "/"+id+"/logging-level", map[string]any{"level": "debug"})
		if lvl.status != 200 || lvl.body["level"] != "debug" {
			t.Fatalf("logging level = %d %s", lvl.status, lvl.raw)
		}
		rpc := call("POST", "/"+id+"/rpc", map[string]any{"method": mcptest.CustomMethod, "params": map[string]any{"value": "round trip"}})
		if rpc.status != 200 || !strings.Contains(rpc.raw, "round trip") || rpc.body["error"] != nil {
			t.Fatalf("rpc = %d %s", rpc.status, rpc.raw)
		}
		// A JSON-RPC error from the target is a normal answer on /rpc.
		bad := call("POST", "/"+id+"/rpc", map[string]any{"method": "tools/call", "params": map[string]any{"name": "no_such_tool"}})
		if bad.status != 200 || bad.body["error"] == nil || bad.body["error"].(map[string]any)["code"].(float64) >= 0 || bad.body["result"] != nil {
			t.Fatalf("rpc error = %d %s", bad.status, bad.raw)
		}
	})
	t.Run("SubscribeAndRoots", func(t *testing.T) {
		sub := call("POST", "/"+id+"/resources/subscribe", map[string]any{"uri": mcptest.HelloURI})
		if sub.status != 200 || sub.body["subscribed"] != true {
			t.Fatalf("subscribe = %d %s", sub.status, sub.raw)
		}
		eventually(t, 5*time.Second, "target subscription", func() bool { return target.Subscriptions(mcptest.HelloURI) == 1 })
		if r := call("POST", "/"+id+"/resources/unsubscribe", map[string]any{"uri": mcptest.HelloURI}); r.status != 200 || r.body["subscribed"] != false {
			t.Fatalf("unsubscribe = %d %s", r.status, r.raw)
		}
		roots := call("PUT", "/"+id+"/roots", map[string]any{"roots": []any{map[string]any{"uri": "file:///other"}}})
		if roots.status != 200 || fmt.Sprint(roots.body["roots"]) != "[map[uri:file:///other]]" {
			t.Fatalf("put roots = %d %s", roots.status, roots.raw)
		}
		asked := call("POST", "/"+id+"/calls?wait=10", map[string]any{"name": "roots"})
		if asked.status != 200 || !strings.Contains(asked.raw, "file:///other") {
			t.Fatalf("the target sees roots %s", asked.raw)
		}
	})
	t.Run("Calls", func(t *testing.T) {
		echo := call("POST", "/"+id+"/calls?wait=10", map[string]any{"name": "echo", "arguments": map[string]any{"text": "hello there"}})
		if echo.status != 200 || echo.body["status"] != "succeeded" || !strings.Contains(echo.raw, "hello there") {
			t.Fatalf("echo = %d %s", echo.status, echo.raw)
		}
		fail := call("POST", "/"+id+"/calls?wait=10", map[string]any{"name": "fail"})
		if fail.status != 200 || fail.body["status"] != "failed" {
			t.Fatalf("fail = %d %s", fail.status, fail.raw)
		}
		slow := call("POST", "/"+id+"/calls", map[string]any{"name": "slow", "arguments": map[string]any{"steps": 100, "interval_ms": 100}})
		requireStatus(t, slow, 202)
		callID := slow.body["call_id"].(string)
		eventually(t, 10*time.Second, "progress", func() bool {
			r := call("GET", "/"+id+"/calls/"+callID, nil)
			return r.body["progress"] != nil
		})
		cancelled := call("DELETE", "/"+id+"/calls/"+callID, nil)
		requireStatus(t, cancelled, 200)
		eventually(t, 10*time.Second, "cancelled", func() bool {
			return call("GET", "/"+id+"/calls/"+callID, nil).body["status"] == "cancelled"
		})
	})
	t.Run("PendingElicitationAndSampling", func(t *testing.T) {
		el := call("POST", "/"+id+"/calls", map[string]any{"name": "elicit", "arguments": map[string]any{"message": "who?"}})
		requireStatus(t, el, 202)
		var pend []any
		eventually(t, 10*time.Second, "pending elicitation", func() bool {
			pend = call("GET", "/"+id+"/pending?status=pending", nil).body["items"].([]any)
			return len(pend) == 1
		})
		p := pend[0].(map[string]any)
		if p["kind"] != "elicitation" || !strings.Contains(fmt.Sprint(p["params"]), "who?") {
			t.Fatalf("pending = %v", p)
		}
		ans := call("POST", "/"+id+"/pending/"+p["request_id"].(string), map[string]any{"action": "accept", "content": map[string]any{"name": "Grace", "color": "blue"}})
		if ans.status != 200 || ans.body["status"] != "answered" {
			t.Fatalf("answer = %d %s", ans.status, ans.raw)
		}
		requireProblem(t, call("POST", "/"+id+"/pending/"+p["request_id"].(string), map[string]any{"action": "decline"}), 409, "")
		eventually(t, 10*time.Second, "elicit call done", func() bool {
			r := call("GET", "/"+id+"/calls/"+el.body["call_id"].(string), nil)
			return r.body["status"] == "succeeded" && strings.Contains(r.raw, "Grace")
		})

		sm := call("POST", "/"+id+"/calls", map[string]any{"name": "sample", "arguments": map[string]any{"prompt": "say hi"}})
		requireStatus(t, sm, 202)
		eventually(t, 10*time.Second, "pending sampling", func() bool {
			pend = call("GET", "/"+id+"/pending?status=pending", nil).body["items"].([]any)
			return len(pend) == 1
		})
		p = pend[0].(map[string]any)
		ans = call("POST", "/"+id+"/pending/"+p["request_id"].(string), map[string]any{"result": map[string]any{
			"role": "assistant", "model": "a-person", "content": map[string]any{"type": "text", "text": "hi from a human"},
		}})
		if ans.status != 200 || p["kind"] != "sampling" {
			t.Fatalf("sampling answer = %d %s (pending %v)", ans.status, ans.raw, p)
		}
		eventually(t, 10*time.Second, "sample call done", func() bool {
			r := call("GET", "/"+id+"/calls/"+sm.body["call_id"].(string), nil)
			return r.body["status"] == "succeeded" && strings.Contains(r.raw, "hi from a human") && strings.Contains(r.raw, "model=a-person")
		})
	})
	t.Run("OtherTenantSeesNothing", func(t *testing.T) {
		for _, path := range []string{"/tools", "/prompts", "/events", "/pending", "/calls"} {
			requireProblem(t, n.call(t, "GET", "/v1/sessions/"+id+path, c.b.Secret, nil), 404, "")
		}
		requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/ping", c.b.Secret, nil), 404, "")
	})

	// The stream saw it all in order: gapless seqs from 1 up to the session's last_seq.
	last := int64(0)
	types := map[string]int{}
	eventually(t, 15*time.Second, "the stream to catch up", func() bool {
		for {
			select {
			case m, ok := <-stream.msgs:
				if !ok {
					t.Fatal("stream ended early")
				}
				if m.event == "" {
					continue
				}
				var e inspector.Event
				if err := json.Unmarshal([]byte(m.data), &e); err != nil {
					t.Fatal(err)
				}
				if e.Seq != last+1 {
					t.Fatalf("stream seq %d after %d", e.Seq, last)
				}
				last = e.Seq
				types[m.event]++
			default:
				return last > 0 && float64(last) == call("GET", "/"+id, nil).body["last_seq"]
			}
		}
	})
	if types["frame"] == 0 || types["call_result"] < 5 || types["pending_request"] != 2 || types["progress"] == 0 {
		t.Fatalf("stream event types = %v", types)
	}
	page := n.call(t, "GET", fmt.Sprintf("/v1/sessions/%s/events?after_seq=%d", id, last-1), c.a.Secret, nil)
	if items := page.body["items"].([]any); len(items) == 0 || int64(items[0].(map[string]any)["seq"].(float64)) != last {
		t.Fatalf("events page after the stream = %s", page.raw)
	}
	closed := call("DELETE", "/"+id, nil)
	if closed.status != 200 || closed.body["status"] != "closed" {
		t.Fatalf("close = %d %s", closed.status, closed.raw)
	}
	requireProblem(t, call("GET", "/"+id+"/tools", nil), 409, "")
	// Nothing recorded from the session shows the target's secrets either.
	bodies = append(bodies, n.call(t, "GET", "/v1/sessions/"+id+"/export?format=jsonl", c.a.Secret, nil).raw)
	for _, b := range bodies {
		if strings.Contains(b, secretToken) || strings.Contains(b, secretHeader) {
			t.Fatalf("a response shows a target secret: %s", b)
		}
	}
}

// TestRPCTheTargetRefusesKeepsTheSession: a method the target does not handle, which
// go-sdk's server refuses with a plain-text HTTP 400, is answered as that request's JSON-RPC
// error. go-sdk's client took such an answer for a broken connection and closed it: the
// request answered 502 and the session dropped its connection and the calls running on it.
func TestRPCTheTargetRefusesKeepsTheSession(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	n := c.node(t)
	c.worker(t)
	id := n.readySession(t, c.a.Secret, target.URL())
	slow := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{
		"name": "slow", "arguments": map[string]any{"steps": 10, "interval_ms": 100},
	})
	requireStatus(t, slow, 202)

	for _, method := range []string{"no/such/method", "ping ", "é"} {
		rpc := n.call(t, "POST", "/v1/sessions/"+id+"/rpc", c.a.Secret, map[string]any{"method": method})
		requireStatus(t, rpc, 200)
		e, _ := rpc.body["error"].(map[string]any)
		if e == nil || e["code"] != float64(-32600) || !strings.Contains(fmt.Sprint(e["message"]), "HTTP 400") || rpc.body["result"] != nil {
			t.Fatalf("rpc %q = %s", method, rpc.raw)
		}
		// The connection stayed: the next request goes through at once.
		requireStatus(t, n.call(t, "POST", "/v1/sessions/"+id+"/ping", c.a.Secret, nil), 200)
	}
	var call response
	eventually(t, 20*time.Second, "slow call finished", func() bool {
		call = n.call(t, "GET", "/v1/sessions/"+id+"/calls/"+slow.body["call_id"].(string), c.a.Secret, nil)
		return call.body["finished_at"] != nil
	})
	if call.body["status"] != "succeeded" {
		t.Fatalf("the call running meanwhile = %s", call.raw)
	}
	events := n.call(t, "GET", "/v1/sessions/"+id+"/events?type=status", c.a.Secret, nil)
	if got := strings.Count(events.raw, `"state":"connecting"`); got > 1 {
		t.Fatalf("the session reconnected: %s", events.raw)
	}
}

// TestResourceURIWithControlCharacterIsRefused: a resource URI holding a control character
// is a 400 naming the field. Sent on, go-sdk's server answered a resources/read of one by
// tearing down the session's streams: the request answered 502 and the session lost its
// connection.
func TestResourceURIWithControlCharacterIsRefused(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	n := c.node(t)
	c.worker(t)
	id := n.readySession(t, c.a.Secret, target.URL())
	const bad = `mcptest://static/a\u0001b` // JSON's escape, in the bodies below
	for _, tc := range []struct{ path, body, field string }{
		{"/resources/read", `{"uri":"` + bad + `"}`, "uri"},
		{"/resources/subscribe", `{"uri":"mcptest://static/\u007f"}`, "uri"},
		{"/resources/unsubscribe", `{"uri":"\t"}`, "uri"},
		{"/complete", `{"ref":{"type":"ref/resource","uri":"` + bad + `"},"argument":{"name":"id","value":""}}`, "ref.uri"},
		{"/rpc", `{"method":"resources/read","params":{"uri":"` + bad + `"}}`, "params.uri"},
		{"/rpc", `{"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"` + bad + `"},"argument":{"name":"id","value":""}}}`, "params.ref.uri"},
	} {
		requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+tc.path, c.a.Secret, tc.body), 400, tc.field)
	}
	// Nothing reached the target: the session is connected as it was.
	requireStatus(t, n.call(t, "POST", "/v1/sessions/"+id+"/ping", c.a.Secret, nil), 200)
	read := n.call(t, "POST", "/v1/sessions/"+id+"/resources/read", c.a.Secret, map[string]any{"uri": mcptest.HelloURI})
	requireStatus(t, read, 200)
}

// TestDuplicateCallOnTwoNodesRunsOnce: a proxy retrying POST …/calls onto another api node
// with the same Idempotency-Key dispatches one tool call, and both replies carry it.
func TestDuplicateCallOnTwoNodesRunsOnce(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	pods := []*apiNode{c.node(t), c.node(t)}
	c.worker(t)
	r := pods[0].call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{"target": map[string]any{"url": target.URL()}})
	requireStatus(t, r, 201)
	id := r.body["id"].(string)
	eventually(t, 20*time.Second, "session ready", func() bool {
		return pods[1].call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil).body["status"] == "ready"
	})
	body := map[string]any{"name": "echo", "arguments": map[string]any{"text": "once", "key": "dup-1"}}
	replies := make([]response, 6)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Go(func() {
			replies[i] = pods[i%2].call(t, "POST", "/v1/sessions/"+id+"/calls?wait=5", c.a.Secret, body, "Idempotency-Key", "retry-me")
		})
	}
	wg.Wait()
	for i, r := range replies {
		if r.status != 200 || r.body["call_id"] != replies[0].body["call_id"] || r.body["status"] != "succeeded" {
			t.Fatalf("reply %d = %d %s, want the first %s", i, r.status, r.raw, replies[0].raw)
		}
	}
	if n := target.KeyCalls("dup-1"); n != 1 {
		t.Fatalf("the target ran the call %d times", n)
	}
	list := pods[0].call(t, "GET", "/v1/sessions/"+id+"/calls", c.a.Secret, nil)
	if n := len(list.body["items"].([]any)); n != 1 {
		t.Fatalf("%d calls stored, want 1: %s", n, list.raw)
	}
}

// TestRetriedRPCWithSameKeyDispatchesOnce: a forwarded request that outlives the command
// timeout answers 504, which is not stored for replays; the retry with the same
// Idempotency-Key reaches the same command on the worker instead of the target again.
func TestRetriedRPCWithSameKeyDispatchesOnce(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	c.commandAfter = 3 * time.Second
	target := mcptest.NewStatefulServer(t, nil)
	n := c.node(t)
	c.worker(t)
	id := n.readySession(t, c.a.Secret, target.URL())
	body := map[string]any{"method": "tools/call", "params": map[string]any{
		"name": "slow", "arguments": map[string]any{"steps": 5, "interval_ms": 1000, "key": "rpc-idem"}}}
	// The tool outlives the command timeout: the worker did not answer in time, and says so.
	first := n.call(t, "POST", "/v1/sessions/"+id+"/rpc", c.a.Secret, body, "Idempotency-Key", "rpc-once")
	requireProblem(t, first, 504, "")
	if first.body["type"] != "urn:tapline:problem:worker-timeout" {
		t.Fatalf("slow target = %s, want a worker-timeout problem", first.raw)
	}
	time.Sleep(500 * time.Millisecond)
	after1 := target.KeyCalls("rpc-idem")
	retry := n.call(t, "POST", "/v1/sessions/"+id+"/rpc", c.a.Secret, body, "Idempotency-Key", "rpc-once")
	time.Sleep(500 * time.Millisecond)
	if after2 := target.KeyCalls("rpc-idem"); after1 != 1 || after2 != after1 {
		t.Fatalf("the retry with the same Idempotency-Key dispatched again (%d -> %d): %d %s", after1, after2, retry.status, retry.raw)
	}
}

// TestRetryAfterServerFaultIsAuditedOnce: a forwarded operation the worker carried out but
// that answered 5xx (here the target refused a subscription: 502) is not stored for replays,
// so its retry with the same Idempotency-Key runs again and gets the worker's cached reply.
// The action happened once, so it is in the audit log once, and the chain still verifies;
// another tenant using the same key has its own entry.
func TestRetryAfterServerFaultIsAuditedOnce(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	c.audited = true
	// The target answers resources/subscribe "method not found".
	target := mcptest.NewHostileServer(t)
	pods := []*apiNode{c.node(t), c.node(t)}
	c.worker(t)
	rpcEntries := func(tenantID string) int {
		var n int
		c.queryRow(t, tenantID, `select count(*) from audit_events where tenant_id = $1 and action = $2`,
			[]any{tenantID, audit.ActionRPC}, &n)
		return n
	}
	for _, tn := range []struct {
		name          string
		secret, tenID string
	}{{"TenantA", c.a.Secret, c.a.Tenant.ID}, {"TenantB", c.b.Secret, c.b.Tenant.ID}} {
		id := pods[0].readySession(t, tn.secret, target.URL(mcptest.ModeStatus500))
		body := map[string]any{"uri": "test://subscribe-once"}
		// Both pods: the second attempt may land on another api pod.
		for i, pod := range pods {
			res := pod.call(t, "POST", "/v1/sessions/"+id+"/resources/subscribe", tn.secret, body, "Idempotency-Key", "sub-once")
			requireProblem(t, res, 502, "")
			if res.header.Get("Idempotent-Replayed") != "" {
				t.Fatalf("%s attempt %d was replayed, want it run: %s", tn.name, i, res.raw)
			}
		}
		if n := rpcEntries(tn.tenID); n != 1 {
			t.Fatalf("%s: %d %s entries after a retry with the same Idempotency-Key, want 1", tn.name, n, audit.ActionRPC)
		}
		// Another key is another request: recorded again.
		res := pods[1].call(t, "POST", "/v1/sessions/"+id+"/resources/subscribe", tn.secret, body, "Idempotency-Key", "sub-twice")
		requireProblem(t, res, 502, "")
		if n := rpcEntries(tn.tenID); n != 2 {
			t.Fatalf("%s: %d %s entries after a second key, want 2", tn.name, n, audit.ActionRPC)
		}
		v := pods[1].call(t, "GET", "/v1/audit/verify", tn.secret, nil)
		if v.status != 200 || v.body["ok"] != true {
			t.Fatalf("%s: verify = %d %s", tn.name, v.status, v.raw)
		}
	}
}

// A 502 is the target's doing, its own JSON-RPC error or a failed request to it: it is
// logged as a warning naming the target, never at error level, where Tapline's own faults go.
func TestTargetErrorsAreWarningsNotErrors(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	logs := &logCapture{}
	n := c.node(t, func(cfg *httpapi.Config) { cfg.Logger = slog.New(logs) })
	c.worker(t)
	id := n.readySession(t, c.a.Secret, target.URL())
	got := n.call(t, "POST", "/v1/sessions/"+id+"/prompts/get", c.a.Secret, map[string]any{"name": "no-such-prompt"})
	requireStatus(t, got, 502)
	if got.body["type"] != "urn:tapline:problem:target-error" {
		t.Fatalf("answer = %s", got.raw)
	}
	warned := false
	for _, rec := range logs.matching("request failed") {
		if strings.HasPrefix(rec, "ERROR") {
			t.Errorf("a target's error logged as Tapline's: %.400s", rec)
		}
		warned = warned || strings.HasPrefix(rec, "WARN target request failed") && strings.Contains(rec, "status=502")
	}
	if !warned {
		t.Errorf("no warning for the target's error in %q", logs.matching(""))
	}
}

// readySession creates a session of token's tenant with its target at url and waits until
// it is ready.
func (n *apiNode) readySession(t *testing.T, token, url string) string {
	t.Helper()
	r := n.call(t, "POST", "/v1/sessions", token, map[string]any{"target": map[string]any{"url": url}})
	requireStatus(t, r, 201)
	id := r.body["id"].(string)
	eventually(t, 20*time.Second, "session ready", func() bool {
		return n.call(t, "GET", "/v1/sessions/"+id, token, nil).body["status"] == "ready"
	})
	return id
}
