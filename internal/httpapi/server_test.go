package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/redistest"
	"github.com/tapline/tapline/internal/tenant"
)

func TestMain(m *testing.M) {
	// A client that stops reading is dropped after this; tests of such clients wait it out.
	httpapi.SetStreamWriteTimeout(2 * time.Second)
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop")); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func testRedis(t *testing.T, rawURL string) redis.UniversalClient {
	t.Helper()
	if rawURL == "" {
		t.Fatal("TEST_REDIS_URL is not set: run the tests through `make test`")
	}
	rc, err := config.ParseRedisURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := redisconn.Open(rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type env struct {
	srv     *httptest.Server
	tenants *tenant.Store
	a, b    *tenant.BootstrapResult
	// jwtKey signs tokens the server accepts (kid "test-1"), for crafting hostile ones.
	jwtKey ed25519.PrivateKey
	tokens *auth.TokenService
}

// testJWTSeed is the server's JWT signing seed in tests.
const testJWTSeed = "dGFwbGluZS10ZXN0LWp3dC1zZWVkLTMyLWJ5dGVzISE="

// newEnv serves the API on loopback with two tenants; opts adjust the configuration.
func newEnv(t *testing.T, pool *pgxpool.Pool, rdb redis.UniversalClient, opts ...func(*httpapi.Config)) *env {
	t.Helper()
	tenants := tenant.NewStore(dbtest.Pool(t))
	stamps := auth.NewRedisStamps(rdb, redistest.Prefix(t), nil)
	tenants.OnAuthChange(stamps.Publish)
	insp, trk := testInspector(t, pool, rdb)
	keys, err := auth.ParseJWTKeys("test-1:" + testJWTSeed)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokenService(tenants, &auth.TokenConfig{Keys: keys, Issuer: "tapline", Audience: "tapline-api", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &httpapi.Config{
		Pool: pool, Redis: rdb, Tenants: tenants, Tokens: tokens,
		Auth: auth.NewAuthenticator(tenants, tokens, auth.WithKeyCache(tenants, stamps)), Spec: tapline.OpenAPISpec,
		Inspector: insp, Tracker: trk, Keys: testKeyring(t, testSecretKey),
	}
	for _, o := range opts {
		o(cfg)
	}
	e, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	mk := func(n string) *tenant.BootstrapResult {
		res, err := tenants.Bootstrap(context.Background(), tenant.BootstrapParams{
			TenantName: fmt.Sprintf("%s-%s-%d", n, t.Name(), time.Now().UnixNano()), Email: n + "@example.test",
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	seed, _ := base64.StdEncoding.DecodeString(testJWTSeed)
	return &env{srv: srv, tenants: tenants, a: mk("a"), b: mk("b"), jwtKey: ed25519.NewKeyFromSeed(seed), tokens: tokens}
}

func setup(t *testing.T) *env {
	t.Helper()
	return newEnv(t, dbtest.Pool(t), testRedis(t, os.Getenv("TEST_REDIS_URL")))
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) do(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	return e.send(t, method, path, token, body, nil)
}

// send is do with extra request headers.
func (e *env) send(t *testing.T, method, path, token string, body any, header http.Header) response {
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
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header[k] = v
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

func requireProblem(t *testing.T, r response, status int, field string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type = %q, want application/problem+json", ct)
	}
	for _, k := range []string{"type", "title", "status"} {
		if _, ok := r.body[k]; !ok {
			t.Fatalf("problem lacks %q: %s", k, r.raw)
		}
	}
	if int(r.body["status"].(float64)) != status {
		t.Fatalf("problem status = %v, want %d", r.body["status"], status)
	}
	if field != "" && r.body["field"] != field {
		t.Fatalf("problem field = %v, want %q: %s", r.body["field"], field, r.raw)
	}
}

func TestMe(t *testing.T) {
	t.Parallel()
	t.Run("AnswersPrincipalTenantAndRole", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "GET", "/v1/me", e.a.Secret, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
		tn := r.body["tenant"].(map[string]any)
		if tn["id"] != e.a.Tenant.ID || r.body["role"] != "owner" {
			t.Fatalf("me = %s", r.raw)
		}
		p := r.body["principal"].(map[string]any)
		if p["kind"] != "api_key" || p["key_id"] != e.a.Key.ID {
			t.Fatalf("principal = %v", p)
		}
		// Tenant b's key sees tenant b.
		r = e.do(t, "GET", "/v1/me", e.b.Secret, nil)
		if r.body["tenant"].(map[string]any)["id"] != e.b.Tenant.ID {
			t.Fatalf("tenant b sees %s", r.raw)
		}
	})
	t.Run("BadCredentialsAre401Problems", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		for name, tok := range map[string]string{
			"None":      "",
			"Garbage":   "hello",
			"WrongKey":  mangleLast(e.a.Secret),
			"NotBearer": "",
		} {
			t.Run(name, func(t *testing.T) {
				r := e.do(t, "GET", "/v1/me", tok, nil)
				requireProblem(t, r, 401, "")
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			})
		}
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/me", nil)
		req.Header.Set("Authorization", "Basic "+e.a.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Fatalf("basic auth scheme = %d, want 401", res.StatusCode)
		}
	})
	t.Run("RevokedKeyIs401", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"name": "ci", "role": "member"})
		if r.status != 201 {
			t.Fatalf("create = %d %s", r.status, r.raw)
		}
		secret := r.body["secret"].(string)
		if e.do(t, "GET", "/v1/me", secret, nil).status != 200 {
			t.Fatal("new key does not work")
		}
		if r := e.do(t, "DELETE", "/v1/api-keys/"+r.body["id"].(string), e.a.Secret, nil); r.status != 200 || r.body["revoked_at"] == nil {
			t.Fatalf("revoke = %d %s", r.status, r.raw)
		}
		requireProblem(t, e.do(t, "GET", "/v1/me", secret, nil), 401, "")
	})
}

func TestAPIKeysEndpoints(t *testing.T) {
	t.Parallel()
	t.Run("SecretShownOnceNeverListed", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"role": "viewer"})
		secret, _ := r.body["secret"].(string)
		if r.status != 201 || !strings.HasPrefix(secret, "tpl_") || !strings.HasPrefix(secret, r.body["prefix"].(string)) {
			t.Fatalf("create = %d %s", r.status, r.raw)
		}
		list := e.do(t, "GET", "/v1/api-keys?limit=200", e.a.Secret, nil)
		if list.status != 200 || strings.Contains(list.raw, secret) || strings.Contains(list.raw, "secret") {
			t.Fatalf("list leaks secrets or failed: %d %s", list.status, list.raw)
		}
		if n := len(list.body["items"].([]any)); n != 2 {
			t.Fatalf("listed %d keys, want 2", n)
		}
	})
	t.Run("InvalidInputNamesField", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		cases := []struct {
			name, method, path string
			body               any
			field              string
		}{
			{"MissingRole", "POST", "/v1/api-keys", map[string]any{"name": "x"}, "role"},
			{"UnknownRole", "POST", "/v1/api-keys", map[string]any{"role": "root"}, "role"},
			{"NameTooLong", "POST", "/v1/api-keys", map[string]any{"role": "viewer", "name": strings.Repeat("n", 101)}, "name"},
			{"UnknownField", "POST", "/v1/api-keys", map[string]any{"role": "viewer", "colour": "red"}, "colour"},
			{"BadTimestamp", "POST", "/v1/api-keys", map[string]any{"role": "viewer", "expires_at": "tomorrow"}, "expires_at"},
			{"PastExpiry", "POST", "/v1/api-keys", map[string]any{"role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"},
			{"NotJSON", "POST", "/v1/api-keys", "{role: viewer", "body"},
			{"LimitTooHigh", "GET", "/v1/api-keys?limit=1000", nil, "limit"},
			{"LimitNotNumber", "GET", "/v1/api-keys?limit=ten", nil, "limit"},
			{"BadCursor", "GET", "/v1/api-keys?cursor=zzz", nil, "cursor"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				requireProblem(t, e.do(t, tc.method, tc.path, e.a.Secret, tc.body), 400, tc.field)
			})
		}
	})
	t.Run("RolesAreEnforced", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		mk := func(role string) string {
			r := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"role": role})
			if r.status != 201 {
				t.Fatalf("create %s key: %d %s", role, r.status, r.raw)
			}
			return r.body["secret"].(string)
		}
		admin, member := mk("admin"), mk("member")
		requireProblem(t, e.do(t, "GET", "/v1/api-keys", member, nil), 403, "")
		requireProblem(t, e.do(t, "POST", "/v1/api-keys", member, map[string]any{"role": "viewer"}), 403, "")
		// An admin cannot mint an owner key, or revoke one.
		requireProblem(t, e.do(t, "POST", "/v1/api-keys", admin, map[string]any{"role": "owner"}), 403, "")
		requireProblem(t, e.do(t, "DELETE", "/v1/api-keys/"+e.a.Key.ID, admin, nil), 403, "")
		if r := e.do(t, "POST", "/v1/api-keys", admin, map[string]any{"role": "admin"}); r.status != 201 {
			t.Fatalf("admin minting admin = %d", r.status)
		}
		if r := e.do(t, "GET", "/v1/me", member, nil); r.status != 200 || r.body["role"] != "member" {
			t.Fatalf("member me = %d %s", r.status, r.raw)
		}
	})
	t.Run("RevokedKeyIsRefusedAtOnce", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"role": "member"})
		if r.status != 201 {
			t.Fatalf("create = %d %s", r.status, r.raw)
		}
		secret, id := r.body["secret"].(string), r.body["id"].(string)
		for range 3 { // verified once, then reused from the key cache
			if r := e.do(t, "GET", "/v1/me", secret, nil); r.status != 200 {
				t.Fatalf("me = %d %s", r.status, r.raw)
			}
		}
		if r := e.do(t, "DELETE", "/v1/api-keys/"+id, e.a.Secret, nil); r.status != 200 {
			t.Fatalf("revoke = %d %s", r.status, r.raw)
		}
		requireProblem(t, e.do(t, "GET", "/v1/me", secret, nil), 401, "")
		if r := e.do(t, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
			t.Fatalf("the revoking key = %d %s", r.status, r.raw)
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		requireProblem(t, e.do(t, "DELETE", "/v1/api-keys/"+e.a.Key.ID, e.b.Secret, nil), 404, "")
		requireProblem(t, e.do(t, "DELETE", "/v1/api-keys/nope", e.b.Secret, nil), 404, "")
		if e.do(t, "GET", "/v1/me", e.a.Secret, nil).status != 200 {
			t.Fatal("tenant a's key was touched")
		}
		list := e.do(t, "GET", "/v1/api-keys", e.b.Secret, nil)
		if strings.Contains(list.raw, e.a.Key.ID) {
			t.Fatal("tenant b lists tenant a's key")
		}
	})
}

func TestOperations(t *testing.T) {
	t.Parallel()
	t.Run("HealthReadySpec", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		if r := e.do(t, "GET", "/healthz", "", nil); r.status != 200 || r.body["status"] != "ok" {
			t.Fatalf("healthz = %d %s", r.status, r.raw)
		}
		if r := e.do(t, "GET", "/readyz", "", nil); r.status != 200 || r.body["status"] != "ready" {
			t.Fatalf("readyz = %d %s", r.status, r.raw)
		}
		if r := e.do(t, "GET", "/openapi.yaml", "", nil); r.status != 200 || !strings.HasPrefix(r.raw, "openapi: 3.1") {
			t.Fatalf("openapi.yaml = %d", r.status)
		}
		requireProblem(t, e.do(t, "GET", "/nowhere", "", nil), 404, "")
	})
	t.Run("PagesAnswerHead", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		for path, contentType := range map[string]string{
			"/":               "text/html",
			"/index.html":     "text/html",
			"/assets/app.css": "text/css",
			"/docs":           "text/html",
			"/openapi.yaml":   "application/yaml",
		} {
			get, head := e.do(t, "GET", path, "", nil), e.do(t, "HEAD", path, "", nil)
			if get.status != 200 || head.status != 200 || head.raw != "" ||
				!strings.Contains(head.header.Get("Content-Type"), contentType) ||
				head.header.Get("Content-Security-Policy") != get.header.Get("Content-Security-Policy") {
				t.Errorf("HEAD %s = %d %v %q (GET %d), want 200 with GET's headers and no body", path, head.status, head.header, head.raw, get.status)
			}
		}
	})
	t.Run("ReadyzIs503WhileRedisIsStopped", func(t *testing.T) {
		t.Parallel()
		addr, stop, start := ownRedis(t)
		e := newEnv(t, dbtest.Pool(t), testRedis(t, "redis://"+addr+"/0"))
		if r := e.do(t, "GET", "/readyz", "", nil); r.status != 200 {
			t.Fatalf("readyz before stop = %d %s", r.status, r.raw)
		}
		stop()
		r := e.do(t, "GET", "/readyz", "", nil)
		if r.status != 503 || r.header.Get("Retry-After") == "" || r.body["checks"].(map[string]any)["redis"] == "ok" {
			t.Fatalf("readyz with redis stopped = %d %v %s", r.status, r.header, r.raw)
		}
		start()
		deadline := time.Now().Add(10 * time.Second)
		for e.do(t, "GET", "/readyz", "", nil).status != 200 {
			if time.Now().After(deadline) {
				t.Fatal("readyz did not recover after redis came back")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("ReadyzIs503AndAPIIs503WhilePostgresIsAway", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		dead, err := db.NewPool(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(dead.Close)
		e := newEnv(t, dead, testRedis(t, os.Getenv("TEST_REDIS_URL")))
		r := e.do(t, "GET", "/readyz", "", nil)
		if r.status != 503 || r.header.Get("Retry-After") == "" || r.body["checks"].(map[string]any)["postgres"] == "ok" {
			t.Fatalf("readyz with postgres away = %d %s", r.status, r.raw)
		}
	})
}

// ownRedis starts a private redis-server so the test can stop it without disturbing others.
func ownRedis(t *testing.T) (addr string, stop, start func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	var cmd *exec.Cmd
	start = func() {
		cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", dir)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		for i := 0; c.Ping(context.Background()).Err() != nil; i++ {
			if i > 100 {
				t.Fatal("own redis-server did not start")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop = func() {
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			cmd = nil
		}
	}
	start()
	t.Cleanup(stop)
	return addr, stop, start
}

// mangleLast changes a key's last character to a different valid one.
func mangleLast(key string) string {
	last := key[len(key)-1]
	repl := byte('x')
	if last == repl {
		repl = 'y'
	}
	return key[:len(key)-1] + string(repl)
}
