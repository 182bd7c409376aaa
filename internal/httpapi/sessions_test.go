package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/redistest"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
)

// publicResolver answers every name with one public address, so targets pass the SSRF
// guard without DNS. IP literals (the SSRF cases) never reach it.
type publicResolver struct{}

func (publicResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
}

// cluster is what several api nodes of one test share: PostgreSQL, Redis, key prefixes and
// the two tenants every handler test uses.
type cluster struct {
	pool         *pgxpool.Pool
	rdb          redis.UniversalClient
	tenants      *tenant.Store
	trkPrefix    string
	inspPrefix   string
	a, b         *tenant.BootstrapResult
	guardConfig  netguard.Config
	keepAlive    time.Duration
	commandAfter time.Duration
	// maxLive caps live sessions per tenant (0: the service default).
	maxLive int
	// writeTimeout, when set, is the api servers' http.Server WriteTimeout.
	writeTimeout time.Duration
	// audited makes the api nodes' inspector services record to the audit log, as
	// cmd/api's do.
	audited bool
}

// testSecretKey is the keyring (TAPLINE_SECRET_KEY) of the api nodes under test.
const testSecretKey = "test:" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

// testKeyring parses a TAPLINE_SECRET_KEY value.
func testKeyring(t *testing.T, s string) *secretbox.Keyring {
	t.Helper()
	keys, err := secretbox.ParseKeyring(s)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// apiNode is one api "pod": its own tracker node, inspector service and HTTP server.
type apiNode struct {
	srv      *httptest.Server
	svc      *inspector.Service
	trk      *tracker.Tracker
	draining chan struct{}
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	pool := dbtest.Pool(t)
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
		guardConfig: netguard.Config{Resolver: publicResolver{}},
		keepAlive:   time.Hour, commandAfter: 2 * time.Second,
	}
}

// testInspector starts a tracker node and an inspector service for an api under test, with
// key prefixes of its own; both stop when the test ends.
func testInspector(t *testing.T, pool *pgxpool.Pool, rdb redis.UniversalClient) (*inspector.Service, *tracker.Tracker) {
	t.Helper()
	p := redistest.Prefix(t)
	c := &cluster{pool: pool, rdb: rdb, trkPrefix: p + ":trk", inspPrefix: p + ":insp",
		guardConfig: netguard.Config{Resolver: publicResolver{}}, keepAlive: time.Hour, commandAfter: 2 * time.Second}
	return c.services(t)
}

// services starts a tracker node and an inspector service on the cluster's prefixes.
func (c *cluster) services(t *testing.T) (*inspector.Service, *tracker.Tracker) {
	t.Helper()
	ctx := context.Background()
	trk, err := tracker.New(c.rdb, &tracker.Config{Prefix: c.trkPrefix, NodeName: "api-test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := trk.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(trk.Stop)
	guard, err := netguard.New(&c.guardConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &inspector.ServiceConfig{
		Pool: c.pool, Redis: c.rdb, Tracker: trk, Guard: guard, Keys: testKeyring(t, testSecretKey), Prefix: c.inspPrefix,
		KeepAlive: c.keepAlive, CommandTimeout: c.commandAfter, MaxLiveSessions: c.maxLive,
	}
	if c.audited {
		cfg.Audit = audit.NewRecorder(c.pool, nil)
	}
	svc, err := inspector.NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return svc, trk
}

// node starts one api node; everything it starts stops when the test ends. opts adjust its
// configuration.
func (c *cluster) node(t *testing.T, opts ...func(*httpapi.Config)) *apiNode {
	t.Helper()
	svc, trk := c.services(t)
	draining := make(chan struct{})
	cfg := &httpapi.Config{
		Pool: c.pool, Redis: c.rdb, Tenants: c.tenants, Auth: auth.NewAuthenticator(c.tenants, nil),
		Spec: tapline.OpenAPISpec, Inspector: svc, Tracker: trk, Keys: testKeyring(t, testSecretKey), Draining: draining,
		IdempotencyWait: 10 * time.Second,
	}
	for _, o := range opts {
		o(cfg)
	}
	e, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(e)
	srv.Config.WriteTimeout = c.writeTimeout
	srv.Start()
	// Registered after the services, so it runs before them: streams end first.
	t.Cleanup(func() {
		select {
		case <-draining:
		default:
			close(draining)
		}
		srv.Close()
	})
	return &apiNode{srv: srv, svc: svc, trk: trk, draining: draining}
}

// call sends one request to the node with optional extra headers.
func (n *apiNode) call(t *testing.T, method, path, token string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, _ := json.Marshal(b)
		rd = bytes.NewReader(buf)
	}
	req, _ := http.NewRequest(method, n.srv.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
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

func requireStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.raw)
	}
}

const (
	secretToken  = "sEcReT-bearer-7f3a9c"
	secretHeader = "hdr-value-secret-41d2"
)

// createSession creates a session on the node and returns its id.
func (n *apiNode) createSession(t *testing.T, token, name string) string {
	t.Helper()
	r := n.call(t, "POST", "/v1/sessions", token, map[string]any{
		"name": name,
		"target": map[string]any{
			"url": "https://mcp.example.test/mcp", "bearer_token": secretToken,
			"headers": map[string]string{"X-Api-Key": secretHeader},
		},
	})
	requireStatus(t, r, 201)
	return r.body["id"].(string)
}

// setSessionStatus moves a session as its worker would, for tests without a worker.
func (c *cluster) setSessionStatus(t *testing.T, tenantID, id string, status inspector.Status) {
	t.Helper()
	c.exec(t, tenantID, `update sessions set status = $3, epoch = greatest(epoch, 1)
		where tenant_id = $1 and id = $2`, tenantID, id, status)
}

// exec runs SQL in a transaction of the tenant, as row-level security requires.
func (c *cluster) exec(t *testing.T, tenantID, sql string, args ...any) {
	t.Helper()
	err := db.WithTenantTx(context.Background(), c.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sql, args...)
		if err == nil && tag.RowsAffected() == 0 {
			err = errors.New("no row changed")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// queryRow scans one row read in a transaction of the tenant.
func (c *cluster) queryRow(t *testing.T, tenantID, sql string, args []any, dest ...any) {
	t.Helper()
	err := db.WithTenantTx(context.Background(), c.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, sql, args...).Scan(dest...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSessionsInvalidInputNamesField(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "valid")
	target := func(kv ...any) map[string]any {
		tg := map[string]any{"url": "https://mcp.example.test/mcp"}
		for i := 0; i+1 < len(kv); i += 2 {
			tg[kv[i].(string)] = kv[i+1]
		}
		return map[string]any{"target": tg}
	}
	cases := []struct {
		name, method, path string
		body               any
		headers            []string
		field              string
	}{
		{"URLMissing", "POST", "/v1/sessions", map[string]any{"target": map[string]any{}}, nil, "target.url"},
		{"TargetMissing", "POST", "/v1/sessions", map[string]any{"name": "x"}, nil, "target"},
		{"URLNotHTTP", "POST", "/v1/sessions", target("url", "ftp://mcp.example.test/"), nil, "target.url"},
		{"BadTransport", "POST", "/v1/sessions", target("transport", "stdio"), nil, "target.transport"},
		{"BadProtocolVersion", "POST", "/v1/sessions", target("protocol_version", "2023-01-01"), nil, "target.protocol_version"},
		{"HeaderWithCRLF", "POST", "/v1/sessions", target("headers", map[string]string{"X-Api-Key": "a\r\nInjected: 1"}), nil, "target.headers.X-Api-Key"},
		{"ReservedHeader", "POST", "/v1/sessions", target("headers", map[string]string{"Host": "evil"}), nil, "target.headers.Host"},
		{"BearerWithSpace", "POST", "/v1/sessions", target("bearer_token", "a b"), nil, "target.bearer_token"},
		{"UnknownField", "POST", "/v1/sessions", target("colour", "red"), nil, "target.colour"},
		{"RootNotURI", "POST", "/v1/sessions", map[string]any{"target": map[string]any{"url": "https://mcp.example.test/"}, "roots": []any{map[string]any{"uri": "no scheme"}}}, nil, "roots.0.uri"},
		{"NotJSON", "POST", "/v1/sessions", "{target:", nil, "body"},
		{"LimitTooHigh", "GET", "/v1/sessions?limit=1000", nil, nil, "limit"},
		{"BadStatusFilter", "GET", "/v1/sessions?status=ready,sleeping", nil, nil, "status"},
		{"BadCursor", "GET", "/v1/sessions?cursor=zzz", nil, nil, "cursor"},
		{"WaitTooLong", "POST", "/v1/sessions/" + id + "/calls?wait=61", map[string]any{"name": "echo"}, nil, "wait"},
		{"WaitNegative", "POST", "/v1/sessions/" + id + "/calls?wait=-1", map[string]any{"name": "echo"}, nil, "wait"},
		{"CallNameMissing", "POST", "/v1/sessions/" + id + "/calls", map[string]any{"arguments": map[string]any{}}, nil, "name"},
		{"CallUnknownField", "POST", "/v1/sessions/" + id + "/calls", map[string]any{"name": "echo", "args": map[string]any{}}, nil, "args"},
		{"CallArgumentsNotObject", "POST", "/v1/sessions/" + id + "/calls", map[string]any{"name": "echo", "arguments": []int{1}}, nil, "arguments"},
		{"UnknownEventType", "GET", "/v1/sessions/" + id + "/events?type=frame&type=gossip", nil, nil, "type"},
		{"NegativeAfterSeq", "GET", "/v1/sessions/" + id + "/events?after_seq=-1", nil, nil, "after_seq"},
		{"AfterSeqNotNumber", "GET", "/v1/sessions/" + id + "/events?after_seq=ten", nil, nil, "after_seq"},
		{"EventsLimitTooHigh", "GET", "/v1/sessions/" + id + "/events?limit=1001", nil, nil, "limit"},
		{"StreamBadLastEventID", "GET", "/v1/sessions/" + id + "/events/stream", nil, []string{"Last-Event-ID", "x"}, "Last-Event-ID"},
		{"StreamUnknownType", "GET", "/v1/sessions/" + id + "/events/stream?type=gossip", nil, nil, "type"},
		{"ExportBadFormat", "GET", "/v1/sessions/" + id + "/export?format=csv", nil, nil, "format"},
		{"BadLoggingLevel", "POST", "/v1/sessions/" + id + "/logging-level", map[string]any{"level": "loud"}, nil, "level"},
		{"RootsMissing", "PUT", "/v1/sessions/" + id + "/roots", map[string]any{}, nil, "roots"},
		{"RPCMethodMissing", "POST", "/v1/sessions/" + id + "/rpc", map[string]any{"params": map[string]any{}}, nil, "method"},
		{"CompleteRefTypeBad", "POST", "/v1/sessions/" + id + "/complete", map[string]any{"ref": map[string]any{"type": "ref/tool"}, "argument": map[string]any{"name": "a", "value": ""}}, nil, "ref.type"},
		{"PendingAnswerEmpty", "POST", "/v1/sessions/" + id + "/pending/" + id, map[string]any{}, nil, "body"},
		{"PendingBadAction", "POST", "/v1/sessions/" + id + "/pending/" + id, map[string]any{"action": "maybe"}, nil, "action"},
		{"PendingStatusFilter", "GET", "/v1/sessions/" + id + "/pending?status=open", nil, nil, "status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := n.call(t, tc.method, tc.path, c.a.Secret, tc.body, tc.headers...)
			requireProblem(t, r, 400, tc.field)
			if strings.Contains(r.raw, "Injected") {
				t.Fatalf("problem echoes the header value: %s", r.raw)
			}
		})
	}
}

// TestSessionIDInAnotherSpellingIsNotFound: a session's id in upper case names no session.
// PostgreSQL would find the row, but the worker's lease and the event channels are keyed by
// the id as given out, so a command sent under the other spelling waited for a worker that
// never came and answered 504 after the command timeout.
func TestSessionIDInAnotherSpellingIsNotFound(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "spelling")
	c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)
	upper := strings.ToUpper(id)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/sessions/" + upper},
		{"GET", "/v1/sessions/" + upper + "/tools"},
		{"POST", "/v1/sessions/" + upper + "/ping"},
		{"DELETE", "/v1/sessions/" + upper},
	} {
		t.Run(tc.method+tc.path[len("/v1/sessions/"+upper):], func(t *testing.T) {
			requireProblem(t, n.call(t, tc.method, tc.path, c.a.Secret, nil), 404, "")
		})
	}
	// A stream is read only to its status: under the other spelling it started, following
	// a channel nobody publishes to, and never ended.
	req, _ := http.NewRequest("GET", n.srv.URL+"/v1/sessions/"+upper+"/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+c.a.Secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Errorf("stream status = %d, want 404", res.StatusCode)
	}
	requireStatus(t, n.call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil), 200)
}

func TestSessionsRefuseUnsafeTargets(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	for _, u := range []string{
		"http://169.254.169.254/",
		"http://10.1.2.3/mcp",
		"http://100.64.0.1/",
		"http://[fd00::1]/",
		"http://[::ffff:127.0.0.1]:1234/",
		"http://127.0.0.1:8080/mcp",
		"http://[::1]/",
		"http://0.0.0.0/",
		"http://192.168.1.10/",
	} {
		t.Run(u, func(t *testing.T) {
			r := n.call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{"target": map[string]any{"url": u}})
			requireProblem(t, r, 422, "target.url")
			if r.body["type"] != "urn:tapline:problem:target-refused" {
				t.Fatalf("problem type = %v", r.body["type"])
			}
		})
	}
	list := n.call(t, "GET", "/v1/sessions", c.a.Secret, nil)
	if items := list.body["items"].([]any); len(items) != 0 {
		t.Fatalf("refused targets were stored: %s", list.raw)
	}
}

func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	var bodies []string
	keep := func(r response) response { bodies = append(bodies, r.raw); return r }

	r := keep(n.call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{
		"name": "everything",
		"target": map[string]any{
			"url": "https://mcp.example.test/mcp", "bearer_token": secretToken, "protocol_version": "2025-06-18",
			"headers": map[string]string{"X-Api-Key": secretHeader, "X-Team": secretHeader + "-2"},
		},
		"roots": []any{map[string]any{"uri": "file:///work", "name": "work"}},
	}))
	requireStatus(t, r, 201)
	id := r.body["id"].(string)
	tg := r.body["target"].(map[string]any)
	if r.body["status"] != "connecting" || r.body["name"] != "everything" || tg["transport"] != "streamable_http" ||
		tg["protocol_version"] != "2025-06-18" || tg["has_bearer_token"] != true || tg["url"] != "https://mcp.example.test/mcp" {
		t.Fatalf("created = %s", r.raw)
	}
	if names := fmt.Sprint(tg["header_names"]); names != "[X-Api-Key X-Team]" {
		t.Fatalf("header_names = %s", names)
	}
	if _, ok := tg["headers"]; ok {
		t.Fatal("target shows headers")
	}
	if roots := fmt.Sprint(r.body["roots"]); roots != "[map[name:work uri:file:///work]]" {
		t.Fatalf("roots = %s", roots)
	}
	if r.body["created_by"] != "key:"+c.a.Key.ID {
		t.Fatalf("created_by = %v", r.body["created_by"])
	}

	got := keep(n.call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil))
	requireStatus(t, got, 200)
	if got.body["id"] != id || got.body["last_seq"].(float64) != 0 {
		t.Fatalf("get = %s", got.raw)
	}
	roots := keep(n.call(t, "GET", "/v1/sessions/"+id+"/roots", c.a.Secret, nil))
	if roots.status != 200 || fmt.Sprint(roots.body["roots"]) != "[map[name:work uri:file:///work]]" {
		t.Fatalf("roots = %d %s", roots.status, roots.raw)
	}

	cfg := keep(n.call(t, "GET", "/v1/sessions/"+id+"/config", c.a.Secret, nil))
	requireStatus(t, cfg, 200)
	server := cfg.body["mcpServers"].(map[string]any)["everything"].(map[string]any)
	headers := server["headers"].(map[string]any)
	if server["type"] != "http" || server["url"] != "https://mcp.example.test/mcp" ||
		headers["Authorization"] != "Bearer ${MCP_BEARER_TOKEN}" || headers["X-Api-Key"] != "${X_API_KEY}" {
		t.Fatalf("config = %s", cfg.raw)
	}

	// Closing keeps the session and its history; closing again is fine.
	closed := keep(n.call(t, "DELETE", "/v1/sessions/"+id, c.a.Secret, nil))
	if closed.status != 200 || closed.body["status"] != "closed" || closed.body["closed_at"] == nil {
		t.Fatalf("close = %d %s", closed.status, closed.raw)
	}
	again := keep(n.call(t, "DELETE", "/v1/sessions/"+id, c.a.Secret, nil))
	if again.status != 200 || again.body["status"] != "closed" || again.body["closed_at"] != closed.body["closed_at"] {
		t.Fatalf("close twice = %d %s", again.status, again.raw)
	}
	requireProblem(t, keep(n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{"name": "echo"})), 409, "")
	keep(n.call(t, "GET", "/v1/sessions/"+id+"/events", c.a.Secret, nil))
	keep(n.call(t, "GET", "/v1/sessions/"+id+"/export", c.a.Secret, nil))
	keep(n.call(t, "GET", "/v1/sessions", c.a.Secret, nil))

	for _, b := range bodies {
		if strings.Contains(b, secretToken) || strings.Contains(b, secretHeader) {
			t.Fatalf("a response shows a secret: %s", b)
		}
	}
	// The secrets are stored sealed, not in the clear.
	var sealed []byte
	c.queryRow(t, c.a.Tenant.ID, `select secrets from sessions where id = $1`, []any{id}, &sealed)
	if len(sealed) == 0 || bytes.Contains(sealed, []byte(secretToken)) || bytes.Contains(sealed, []byte(secretHeader)) {
		t.Fatal("target secrets are not sealed at rest")
	}
}

func TestSessionsListFiltersAndPages(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	ids := map[string]bool{}
	var order []string
	for i := range 5 {
		id := n.createSession(t, c.a.Secret, fmt.Sprint("s", i))
		ids[id] = true
		order = append(order, id)
	}
	c.setSessionStatus(t, c.a.Tenant.ID, order[0], inspector.StatusReady)
	c.setSessionStatus(t, c.a.Tenant.ID, order[1], inspector.StatusError)
	requireStatus(t, n.call(t, "DELETE", "/v1/sessions/"+order[2], c.a.Secret, nil), 200)
	n.createSession(t, c.b.Secret, "other tenant")

	count := func(query string) int {
		t.Helper()
		r := n.call(t, "GET", "/v1/sessions"+query, c.a.Secret, nil)
		requireStatus(t, r, 200)
		return len(r.body["items"].([]any))
	}
	for query, want := range map[string]int{
		"":                                5,
		"?status=closed":                  1,
		"?status=connecting":              2,
		"?status=ready,error":             2,
		"?status=ready&status=connecting": 3,
		"?status=ready,error&status=closed&status=connecting": 5,
	} {
		if got := count(query); got != want {
			t.Errorf("list%s = %d sessions, want %d", query, got, want)
		}
	}

	// Pages of two: newest first, every session once, and the last page has no cursor.
	seen := map[string]bool{}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		path := "/v1/sessions?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := n.call(t, "GET", path, c.a.Secret, nil)
		requireStatus(t, r, 200)
		for _, it := range r.body["items"].([]any) {
			id := it.(map[string]any)["id"].(string)
			if seen[id] || !ids[id] {
				t.Fatalf("page repeats or leaks session %s", id)
			}
			seen[id] = true
			got = append(got, id)
		}
		next, _ := r.body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != 5 || got[0] != order[4] || got[4] != order[0] {
		t.Fatalf("paged %v, want newest first of %v", got, order)
	}
}

func TestSessionsAreTenantScoped(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "a's")
	c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)
	call := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{"name": "echo"})
	requireStatus(t, call, 202)
	callID := call.body["call_id"].(string)
	pendingID := insertPending(t, c, c.a.Tenant.ID, id, "elicitation")
	unknown := "0190a3c4-0000-7000-8000-000000000000"

	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/sessions/" + id},
		{"DELETE", "/v1/sessions/" + id},
		{"POST", "/v1/sessions/" + id + "/reconnect"},
		{"GET", "/v1/sessions/" + id + "/config"},
		{"GET", "/v1/sessions/" + id + "/events"},
		{"GET", "/v1/sessions/" + id + "/events/stream"},
		{"GET", "/v1/sessions/" + id + "/export"},
		{"GET", "/v1/sessions/" + id + "/roots"},
		{"PUT", "/v1/sessions/" + id + "/roots"},
		{"GET", "/v1/sessions/" + id + "/calls"},
		{"POST", "/v1/sessions/" + id + "/calls"},
		{"GET", "/v1/sessions/" + id + "/calls/" + callID},
		{"DELETE", "/v1/sessions/" + id + "/calls/" + callID},
		{"GET", "/v1/sessions/" + id + "/pending"},
		{"POST", "/v1/sessions/" + id + "/pending/" + pendingID},
		{"GET", "/v1/sessions/" + id + "/tools"},
		{"POST", "/v1/sessions/" + id + "/resources/read"},
		{"POST", "/v1/sessions/" + id + "/ping"},
		{"POST", "/v1/sessions/" + id + "/rpc"},
		{"GET", "/v1/sessions/" + unknown},
		{"GET", "/v1/sessions/not-a-uuid"},
		{"GET", "/v1/sessions/" + id + "/calls/" + unknown},
	} {
		t.Run(tc.method+" "+strings.ReplaceAll(tc.path, "/", "_"), func(t *testing.T) {
			var body any
			switch {
			case strings.HasSuffix(tc.path, "/roots") && tc.method == "PUT":
				body = map[string]any{"roots": []any{}}
			case strings.HasSuffix(tc.path, "/calls") && tc.method == "POST":
				body = map[string]any{"name": "echo"}
			case strings.Contains(tc.path, "/pending/"):
				body = map[string]any{"action": "decline"}
			case strings.HasSuffix(tc.path, "/read"):
				body = map[string]any{"uri": "file:///x"}
			case strings.HasSuffix(tc.path, "/rpc"):
				body = map[string]any{"method": "tools/list"}
			}
			requireProblem(t, n.call(t, tc.method, tc.path, c.b.Secret, body), 404, "")
		})
	}
	// Tenant a's objects are untouched.
	if r := n.call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil); r.status != 200 || r.body["status"] != "ready" {
		t.Fatalf("a's session after b's attempts = %d %s", r.status, r.raw)
	}
	if r := n.call(t, "GET", "/v1/sessions/"+id+"/calls/"+callID, c.a.Secret, nil); r.body["status"] != "queued" {
		t.Fatalf("a's call after b's attempts = %s", r.raw)
	}
	if r := n.call(t, "GET", "/v1/sessions/"+id+"/pending", c.a.Secret, nil); !strings.Contains(r.raw, `"status":"pending"`) {
		t.Fatalf("a's pending request after b's attempts = %s", r.raw)
	}
}

func TestSessionsRoles(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	mk := func(role string) string {
		r := n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": role})
		requireStatus(t, r, 201)
		return r.body["secret"].(string)
	}
	viewer, member := mk("viewer"), mk("member")
	id := n.createSession(t, member, "by a member")
	requireProblem(t, n.call(t, "POST", "/v1/sessions", viewer, map[string]any{"target": map[string]any{"url": "https://mcp.example.test/"}}), 403, "")
	requireProblem(t, n.call(t, "DELETE", "/v1/sessions/"+id, viewer, nil), 403, "")
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/calls", viewer, map[string]any{"name": "echo"}), 403, "")
	requireProblem(t, n.call(t, "PUT", "/v1/sessions/"+id+"/roots", viewer, map[string]any{"roots": []any{}}), 403, "")
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/rpc", viewer, map[string]any{"method": "ping"}), 403, "")
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/logging-level", viewer, map[string]any{"level": "debug"}), 403, "")
	for _, path := range []string{"", "/events", "/export", "/config", "/roots", "/calls", "/pending"} {
		if r := n.call(t, "GET", "/v1/sessions/"+id+path, viewer, nil); r.status != 200 {
			t.Errorf("viewer GET %s = %d %s", path, r.status, r.raw)
		}
	}
	// Roots of a closed session are kept for its next connection: no worker needed.
	requireStatus(t, n.call(t, "DELETE", "/v1/sessions/"+id, member, nil), 200)
	requireStatus(t, n.call(t, "PUT", "/v1/sessions/"+id+"/roots", member, map[string]any{"roots": []any{map[string]any{"uri": "file:///a"}}}), 200)
}

// insertPending parks a request as a worker would and returns its id.
func insertPending(t *testing.T, c *cluster, tenantID, sessionID, kind string) string {
	t.Helper()
	var id string
	c.queryRow(t, tenantID, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
		values (gen_random_uuid(), $1, $2, $3, '{"message":"pick one"}', 'pending', 1, now() + interval '10 minutes') returning id`,
		[]any{tenantID, sessionID, kind}, &id)
	return id
}

func TestCallsWithoutWorker(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "calls")
	// Connecting: calls wait for ready.
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{"name": "echo"}), 409, "")
	c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)

	r := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{"name": "echo", "arguments": map[string]any{"text": "hi", "n": 12345678901234567}})
	requireStatus(t, r, 202)
	callID, _ := r.body["call_id"].(string)
	if callID == "" || r.body["status"] != "queued" || r.body["name"] != "echo" || !strings.Contains(r.raw, `"n":12345678901234567`) {
		t.Fatalf("start = %s", r.raw)
	}
	// ?wait with nobody to run it: 202 after the wait, still queued.
	start := time.Now()
	w := n.call(t, "POST", "/v1/sessions/"+id+"/calls?wait=1", c.a.Secret, map[string]any{"name": "slow"})
	if w.status != 202 || w.body["status"] != "queued" || time.Since(start) < time.Second {
		t.Fatalf("start with wait = %d after %v: %s", w.status, time.Since(start), w.raw)
	}
	got := n.call(t, "GET", "/v1/sessions/"+id+"/calls/"+callID, c.a.Secret, nil)
	if got.status != 200 || got.body["call_id"] != callID || got.body["status"] != "queued" {
		t.Fatalf("get = %d %s", got.status, got.raw)
	}
	list := n.call(t, "GET", "/v1/sessions/"+id+"/calls?limit=10", c.a.Secret, nil)
	if items := list.body["items"].([]any); len(items) != 2 || items[1].(map[string]any)["call_id"] != callID {
		t.Fatalf("list = %s", list.raw)
	}
	// A queued call is cancelled at once, without a worker; cancelling again changes nothing.
	cancelled := n.call(t, "DELETE", "/v1/sessions/"+id+"/calls/"+callID, c.a.Secret, nil)
	if cancelled.status != 200 || cancelled.body["status"] != "cancelled" || cancelled.body["finished_at"] == nil {
		t.Fatalf("cancel = %d %s", cancelled.status, cancelled.raw)
	}
	if again := n.call(t, "DELETE", "/v1/sessions/"+id+"/calls/"+callID, c.a.Secret, nil); again.status != 200 || again.body["status"] != "cancelled" {
		t.Fatalf("cancel twice = %d %s", again.status, again.raw)
	}
	// A finished call answers ?wait at once with 200.
	c.exec(t, c.a.Tenant.ID, `update session_calls set status = 'succeeded', finished_at = now(),
		result = '{"content":[{"type":"text","text":"ok"}]}' where id = $1`, w.body["call_id"])
	done := n.call(t, "GET", "/v1/sessions/"+id+"/calls/"+w.body["call_id"].(string), c.a.Secret, nil)
	if done.body["status"] != "succeeded" || fmt.Sprint(done.body["result"]) != "map[content:[map[text:ok type:text]]]" {
		t.Fatalf("finished call = %s", done.raw)
	}
	requireProblem(t, n.call(t, "GET", "/v1/sessions/"+id+"/calls/0190a3c4-0000-7000-8000-000000000000", c.a.Secret, nil), 404, "")
}

func TestPendingAnswers(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "pending")
	elicit := insertPending(t, c, c.a.Tenant.ID, id, "elicitation")
	sampling := insertPending(t, c, c.a.Tenant.ID, id, "sampling")

	list := n.call(t, "GET", "/v1/sessions/"+id+"/pending?status=pending", c.a.Secret, nil)
	requireStatus(t, list, 200)
	if items := list.body["items"].([]any); len(items) != 2 || items[0].(map[string]any)["request_id"] != elicit ||
		items[0].(map[string]any)["kind"] != "elicitation" || items[0].(map[string]any)["expires_at"] == nil {
		t.Fatalf("list = %s", list.raw)
	}
	// Wrong shapes for the kind are 400s naming the field.
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/pending/"+sampling, c.a.Secret, map[string]any{"action": "accept"}), 400, "result")
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/pending/"+elicit, c.a.Secret, map[string]any{"action": "decline", "content": map[string]any{"a": 1}}), 400, "content")

	r := n.call(t, "POST", "/v1/sessions/"+id+"/pending/"+elicit, c.a.Secret, map[string]any{"action": "accept", "content": map[string]any{"choice": "b"}})
	if r.status != 200 || r.body["status"] != "answered" || r.body["answered_by"] != "key:"+c.a.Key.ID ||
		!strings.Contains(r.raw, `"choice":"b"`) {
		t.Fatalf("answer = %d %s", r.status, r.raw)
	}
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/pending/"+elicit, c.a.Secret, map[string]any{"action": "decline"}), 409, "")

	s := n.call(t, "POST", "/v1/sessions/"+id+"/pending/"+sampling, c.a.Secret, map[string]any{
		"result": map[string]any{"role": "assistant", "model": "human", "content": map[string]any{"type": "text", "text": "hello"}},
	})
	if s.status != 200 || s.body["status"] != "answered" {
		t.Fatalf("sampling answer = %d %s", s.status, s.raw)
	}
	if after := n.call(t, "GET", "/v1/sessions/"+id+"/pending?status=pending", c.a.Secret, nil); len(after.body["items"].([]any)) != 0 {
		t.Fatalf("still pending: %s", after.raw)
	}
	// An expired request cannot be answered.
	expired := insertPending(t, c, c.a.Tenant.ID, id, "elicitation")
	c.exec(t, c.a.Tenant.ID, `update pending_requests set status = 'expired' where id = $1`, expired)
	requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/pending/"+expired, c.a.Secret, map[string]any{"action": "cancel"}), 409, "")
}

func TestTargetOperationsNeedAConnection(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "closed soon")
	requireStatus(t, n.call(t, "DELETE", "/v1/sessions/"+id, c.a.Secret, nil), 200)
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/tools", nil},
		{"GET", "/resources?cursor=abc", nil},
		{"GET", "/resource-templates", nil},
		{"GET", "/prompts", nil},
		{"POST", "/resources/read", map[string]any{"uri": "file:///a"}},
		{"POST", "/resources/subscribe", map[string]any{"uri": "file:///a"}},
		{"POST", "/prompts/get", map[string]any{"name": "greet", "arguments": map[string]string{"who": "you"}}},
		{"POST", "/complete", map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "greet"}, "argument": map[string]any{"name": "who", "value": "y"}}},
		{"POST", "/logging-level", map[string]any{"level": "debug"}},
		{"POST", "/ping", nil},
		{"POST", "/rpc", map[string]any{"method": "tools/list", "params": map[string]any{}}},
	} {
		r := n.call(t, tc.method, "/v1/sessions/"+id+tc.path, c.a.Secret, tc.body)
		requireProblem(t, r, 409, "")
		if r.body["type"] != "urn:tapline:problem:not-ready" {
			t.Errorf("%s %s: problem %s", tc.method, tc.path, r.raw)
		}
	}
	// Roots of a session nobody holds are kept for its next connection.
	put := n.call(t, "PUT", "/v1/sessions/"+id+"/roots", c.a.Secret, map[string]any{"roots": []any{map[string]any{"uri": "file:///b", "name": "b"}}})
	if put.status != 200 || fmt.Sprint(put.body["roots"]) != "[map[name:b uri:file:///b]]" {
		t.Fatalf("put roots = %d %s", put.status, put.raw)
	}
	if got := n.call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil); fmt.Sprint(got.body["roots"]) != "[map[name:b uri:file:///b]]" {
		t.Fatalf("session roots = %s", got.raw)
	}
}

func TestTargetOperationsWithoutWorkerAre504(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.commandAfter = 500 * time.Millisecond
	n := c.node(t)
	id := n.createSession(t, c.a.Secret, "nobody holds me")
	c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)
	r := n.call(t, "GET", "/v1/sessions/"+id+"/tools", c.a.Secret, nil)
	requireProblem(t, r, 504, "")
	if r.body["type"] != "urn:tapline:problem:no-worker" || r.header.Get("Retry-After") == "" {
		t.Fatalf("no worker = %v %s", r.header, r.raw)
	}
}

func TestLiveSessionLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.maxLive = 2
	n := c.node(t)
	first := n.createSession(t, c.a.Secret, "one")
	n.createSession(t, c.a.Secret, "two")
	body := map[string]any{"target": map[string]any{"url": "https://mcp.example.test/"}}
	r := n.call(t, "POST", "/v1/sessions", c.a.Secret, body)
	requireProblem(t, r, 409, "")
	if r.body["type"] != "urn:tapline:problem:live-session-limit" {
		t.Fatalf("limit problem = %s", r.raw)
	}
	// The limit is per tenant, and a closed session frees its place.
	requireStatus(t, n.call(t, "POST", "/v1/sessions", c.b.Secret, body), 201)
	requireStatus(t, n.call(t, "DELETE", "/v1/sessions/"+first, c.a.Secret, nil), 200)
	requireStatus(t, n.call(t, "POST", "/v1/sessions", c.a.Secret, body), 201)
}
