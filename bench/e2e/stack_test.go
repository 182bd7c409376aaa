package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/ratelimit"
	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/redistest"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
)

// envInt reads a positive integer size from the environment, or returns def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// stack is a fresh database, a Redis key prefix and the pieces of Tapline a benchmark
// assembles from them. Each api or worker node gets its own pool and Redis client, as it
// would in its own process. Everything stops when the benchmark ends.
type stack struct {
	tb       testing.TB
	db       *dbtest.Database
	redisURL string
	prefix   string
	keys     *secretbox.Keyring
	key      string // keys' one key, for child processes
	guard    *netguard.Guard
}

func newStack(tb testing.TB) *stack {
	tb.Helper()
	redisURL := os.Getenv("TEST_REDIS_URL")
	if redisURL == "" {
		tb.Fatal("TEST_REDIS_URL is not set: run through deploy/local/test-services.sh")
	}
	// A database of its own: workers discover live sessions across tenants.
	d := dbtest.New(tb)
	k, err := secretbox.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	keys, err := secretbox.ParseKeyring(k)
	if err != nil {
		tb.Fatal(err)
	}
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		tb.Fatal(err)
	}
	return &stack{tb: tb, db: d, redisURL: redisURL, prefix: redistest.Prefix(tb), keys: keys, key: k, guard: guard}
}

// pool opens an application-role pool (under row-level security) with production defaults.
func (s *stack) pool() *pgxpool.Pool {
	s.tb.Helper()
	p, err := db.NewPool(context.Background(), s.db.AppURL, nil)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(p.Close)
	return p
}

func (s *stack) redis() redis.UniversalClient {
	s.tb.Helper()
	rdb, err := openRedis(s.redisURL)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func openRedis(url string) (redis.UniversalClient, error) {
	rc, err := config.ParseRedisURL(url)
	if err != nil {
		return nil, err
	}
	return redisconn.Open(rc, nil)
}

func (s *stack) tracker(rdb redis.UniversalClient, name string, onLost func(*tracker.Lease)) *tracker.Tracker {
	s.tb.Helper()
	trk, err := tracker.New(rdb, &tracker.Config{Prefix: s.prefix + ":trk", NodeName: name, OnLeaseLost: onLost})
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := trk.Start(context.Background()); err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(trk.Stop)
	return trk
}

// apiNode is the api side: a Service and the real echo server on a loopback port.
type apiNode struct {
	svc     *inspector.Service
	srv     *httptest.Server
	tenants *tenant.Store
}

func (s *stack) api(maxLive int) *apiNode {
	s.tb.Helper()
	pool, rdb := s.pool(), s.redis()
	trk := s.tracker(rdb, "bench-api", nil)
	// As cmd/api wires it: tool calls and session actions are audited, requests rate limited.
	auditLog := audit.NewRecorder(pool, nil)
	svc, err := inspector.NewService(&inspector.ServiceConfig{
		Pool: pool, Redis: rdb, Tracker: trk, Guard: s.guard, Keys: s.keys, Prefix: s.prefix, MaxLiveSessions: maxLive,
		Audit: auditLog,
	})
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(svc.Stop)
	tenants := tenant.NewStore(pool)
	stamps := auth.NewRedisStamps(rdb, s.prefix, nil)
	tenants.OnAuthChange(stamps.Publish)
	draining := make(chan struct{})
	e, err := httpapi.New(&httpapi.Config{
		Pool: pool, Redis: rdb, Tenants: tenants, Auth: auth.NewAuthenticator(tenants, nil, auth.WithKeyCache(tenants, stamps)), Audit: auditLog,
		RateLimiter: ratelimit.New(rdb, s.prefix+":rl"),
		// A limit the benchmarks never reach: the check's round trip is measured, not a 429.
		TenantRate: ratelimit.PerSecond(1_000_000, 1_000_000),
		Spec:       tapline.OpenAPISpec, Inspector: svc, Tracker: trk, Keys: s.keys, Draining: draining,
	})
	if err != nil {
		s.tb.Fatal(err)
	}
	srv := httptest.NewServer(e)
	s.tb.Cleanup(func() {
		close(draining)
		srv.CloseClientConnections()
		srv.Close()
	})
	return &apiNode{svc: svc, srv: srv, tenants: tenants}
}

// worker starts a worker Runtime and returns it with its node id.
func (s *stack) worker() (*inspector.Runtime, string) {
	s.tb.Helper()
	rt, trk, err := startWorker(context.Background(), s.pool(), s.redis(), s.prefix, s.guard, s.keys)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rt.Stop(ctx)
		trk.Stop()
	})
	return rt, trk.NodeID()
}

// startWorker starts a worker Runtime and its tracker, wired as cmd/worker wires them; the
// caller stops both, the Runtime first.
func startWorker(ctx context.Context, pool *pgxpool.Pool, rdb redis.UniversalClient, prefix string, guard *netguard.Guard, keys *secretbox.Keyring) (*inspector.Runtime, *tracker.Tracker, error) {
	var rt *inspector.Runtime
	trk, err := tracker.New(rdb, &tracker.Config{Prefix: prefix + ":trk", NodeName: "bench-worker", OnLeaseLost: func(l *tracker.Lease) {
		if rt != nil {
			rt.LeaseLost(l)
		}
	}})
	if err != nil {
		return nil, nil, err
	}
	if err := trk.Start(ctx); err != nil {
		return nil, nil, err
	}
	rt, err = inspector.NewRuntime(&inspector.RuntimeConfig{
		Pool: pool, Redis: rdb, Tracker: trk, Guard: guard, Keys: keys, Prefix: prefix, Version: "bench",
	})
	if err == nil {
		err = rt.Start(ctx)
	}
	if err != nil {
		trk.Stop()
		return nil, nil, err
	}
	return rt, trk, nil
}

// workerProcess starts a worker Runtime in a child process, as it is deployed: apart from
// the api, with its own heap, collector and scheduler.
func (s *stack) workerProcess() {
	s.tb.Helper()
	startChild(s.tb, "worker", "TAPLINE_BENCH_DATABASE_URL="+s.db.AppURL, "TAPLINE_BENCH_REDIS_URL="+s.redisURL,
		"TAPLINE_BENCH_PREFIX="+s.prefix, "TAPLINE_BENCH_SECRET_KEY="+s.key)
}

// tenant creates a tenant with an owner API key.
func (s *stack) tenant(tenants *tenant.Store, name string) *tenant.BootstrapResult {
	s.tb.Helper()
	res, err := tenants.Bootstrap(context.Background(), tenant.BootstrapParams{
		TenantName: fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), Email: name + "@bench.test",
	})
	if err != nil {
		s.tb.Fatal(err)
	}
	return res
}

// waitReady waits until want sessions are ready, at most timeout.
func (s *stack) waitReady(want int, timeout time.Duration) {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var n, failed int
		err := s.db.Pool.QueryRow(context.Background(),
			`select count(*) filter (where status = 'ready'), count(*) filter (where status = 'error') from sessions`).Scan(&n, &failed)
		if err != nil {
			s.tb.Fatal(err)
		}
		if n >= want {
			return
		}
		if failed > 0 || time.Now().After(deadline) {
			s.tb.Fatalf("%d of %d sessions ready, %d failed, after %v", n, want, failed, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// targetServer is the MCP server the benchmarks call: go-sdk's Streamable HTTP handler with
// one tool, echo {text}, as small as a real server gets.
func targetServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "tapline-bench-target", Version: "1.0.0"}, nil)
	type echoIn struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	return s
}

func targetHandler(s *mcp.Server) http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
}

// startTarget serves a target in this process on loopback and returns its URL.
func startTarget(tb testing.TB) string {
	tb.Helper()
	s := targetServer()
	srv := httptest.NewServer(targetHandler(s))
	tb.Cleanup(func() {
		for ss := range s.Sessions() {
			_ = ss.Close()
		}
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL + "/mcp"
}

// percentile returns the p-th percentile (0..100) of xs by nearest rank.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median(xs []float64) float64 { return percentile(xs, 50) }
