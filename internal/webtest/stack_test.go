package webtest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/auth"
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

func TestMain(m *testing.M) {
	code := m.Run()
	mcptest.StopEverything()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// tokenTTL is short so a browser test outlives several JWTs and proves the page refreshes
// them before they expire.
const tokenTTL = 15 * time.Second

// stack is the whole of Tapline in one process: an api node served on loopback, one worker,
// a database of its own (workers discover sessions across tenants) and Redis.
type stack struct {
	url    string // the api's base URL, http://127.0.0.1:PORT
	key    string // an owner API key of tenant A
	tenant *tenant.BootstrapResult
	db     *dbtest.Database
	svc    *inspector.Service
}

func newStack(t *testing.T) *stack {
	t.Helper()
	ctx := context.Background()
	database := dbtest.New(t)
	pool := database.AppPool
	rdb := redistest.Single(t, os.Getenv("TEST_REDIS_URL"))
	prefix := redistest.Prefix(t)
	keys, err := secretbox.ParseKeyring("test:" + strings.Repeat("A", 43) + "=")
	if err != nil {
		t.Fatal(err)
	}
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	tenants := tenant.NewStore(pool)
	res, err := tenants.Bootstrap(ctx, tenant.BootstrapParams{
		TenantName: fmt.Sprintf("web-%s-%d", t.Name(), time.Now().UnixNano()), Email: "owner@example.test",
	})
	if err != nil {
		t.Fatal(err)
	}

	apiTrk := startTracker(t, rdb, prefix, "api-web", nil)
	svc, err := inspector.NewService(&inspector.ServiceConfig{
		Pool: pool, Redis: rdb, Tracker: apiTrk, Guard: guard, Keys: keys, Prefix: prefix + ":insp",
		CommandTimeout: 15 * time.Second, KeepAlive: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	startWorker(t, pool, rdb, prefix, guard, keys)

	jwtKeys, err := auth.DeriveJWTKeys("test:" + strings.Repeat("Q", 42) + "A=")
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokenService(tenants, &auth.TokenConfig{Keys: jwtKeys, Issuer: "tapline", Audience: "tapline-api", TTL: tokenTTL})
	if err != nil {
		t.Fatal(err)
	}
	stamps := auth.NewRedisStamps(rdb, prefix, nil)
	tenants.OnAuthChange(stamps.Publish)
	draining := make(chan struct{})
	e, err := httpapi.New(&httpapi.Config{
		Pool: pool, Redis: rdb, Tenants: tenants, Auth: auth.NewAuthenticator(tenants, tokens, auth.WithKeyCache(tenants, stamps)), Tokens: tokens,
		Spec: tapline.OpenAPISpec, Inspector: svc, Tracker: apiTrk, Keys: keys, Draining: draining,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	// Registered after the services, so it runs before them: streams end first.
	t.Cleanup(func() {
		close(draining)
		srv.CloseClientConnections()
		srv.Close()
	})
	return &stack{url: srv.URL, key: res.Secret, tenant: res, db: database, svc: svc}
}

func startTracker(t *testing.T, rdb redis.UniversalClient, prefix, name string, onLost func(*tracker.Lease)) *tracker.Tracker {
	t.Helper()
	trk, err := tracker.New(rdb, &tracker.Config{
		Prefix: prefix + ":trk", NodeName: name, NodeTTL: 2 * time.Second, LeaseTTL: 3 * time.Second, OnLeaseLost: onLost,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := trk.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(trk.Stop)
	return trk
}

func startWorker(t *testing.T, pool *pgxpool.Pool, rdb redis.UniversalClient, prefix string, guard *netguard.Guard, keys *secretbox.Keyring) {
	t.Helper()
	var rt *inspector.Runtime
	trk := startTracker(t, rdb, prefix, "worker-web", func(l *tracker.Lease) {
		if rt != nil {
			rt.LeaseLost(l)
		}
	})
	var err error
	rt, err = inspector.NewRuntime(&inspector.RuntimeConfig{
		Pool: pool, Redis: rdb, Tracker: trk, Guard: guard, Keys: keys, Prefix: prefix + ":insp",
		DiscoveryInterval: 300 * time.Millisecond, ConnectAttempts: 2, PendingTimeout: 5 * time.Minute,
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

// createSession connects a session to target through the service, as POST /v1/sessions does.
func (s *stack) createSession(t *testing.T, name, target string) string {
	t.Helper()
	sess, err := s.svc.CreateSession(context.Background(), s.tenant.Tenant.ID, inspector.CreateSessionParams{
		Name: name, Target: inspector.Target{URL: target, Transport: inspector.TransportStreamableHTTP, ProtocolVersion: "auto"},
		CreatedBy: "key:" + s.tenant.Key.ID,
	})
	if err != nil {
		t.Fatalf("create session: %v", err)
	}
	return sess.ID
}

// waitReady polls the session until it is ready.
func (s *stack) waitReady(t *testing.T, id string) {
	t.Helper()
	s.waitStatus(t, id, inspector.StatusReady, 30*time.Second)
}

// closeSession closes the session and returns it once it is closed, so its history no
// longer grows.
func (s *stack) closeSession(t *testing.T, id string) *inspector.Session {
	t.Helper()
	if _, err := s.svc.CloseSession(context.Background(), s.tenant.Tenant.ID, id); err != nil {
		t.Fatal(err)
	}
	return s.waitStatus(t, id, inspector.StatusClosed, 20*time.Second)
}

// waitStatus polls the session until it has status.
func (s *stack) waitStatus(t *testing.T, id string, status inspector.Status, timeout time.Duration) *inspector.Session {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sess, err := s.svc.GetSession(context.Background(), s.tenant.Tenant.ID, id)
		if err == nil && sess.Status == status {
			return sess
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s not %s: %+v, %v", id, status, sess, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
