package inspector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/dbtest"
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

// stack is one api node and any number of worker nodes on real PostgreSQL and Redis.
type stack struct {
	t       *testing.T
	pool    *pgxpool.Pool
	owner   *pgxpool.Pool // the tables' owner, for arranging what the API cannot
	audit   *audit.Recorder
	rdb     redis.UniversalClient
	prefix  string
	keys    *secretbox.Keyring
	guard   *netguard.Guard
	svc     *inspector.Service
	a, b    *tenant.BootstrapResult
	workers []*worker
	opts    stackOptions
}

type stackOptions struct {
	// apiGuard and workerGuard replace the loopback-allowing guard on either side.
	apiGuard, workerGuard *netguard.Guard
	leaseTTL              time.Duration
	pendingTimeout        time.Duration
	devMode               bool
}

type worker struct {
	rt      *inspector.Runtime
	trk     *tracker.Tracker
	stopped bool
}

func newStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	if opts.leaseTTL == 0 {
		opts.leaseTTL = 3 * time.Second
	}
	ctx := context.Background()
	rdb := redistest.Single(t, os.Getenv("TEST_REDIS_URL"))
	prefix := redistest.Prefix(t)
	k, err := secretbox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secretbox.ParseKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	// Each stack has a database of its own: workers discover sessions across tenants, and
	// must not find another test's.
	database := dbtest.New(t)
	pool := database.AppPool
	apiTrk := newTracker(t, rdb, prefix, "api", opts.leaseTTL, nil)
	apiGuard := guard
	if opts.apiGuard != nil {
		apiGuard = opts.apiGuard
	}
	auditLog := audit.NewRecorder(pool, nil)
	svc, err := inspector.NewService(&inspector.ServiceConfig{
		Pool: pool, Redis: rdb, Tracker: apiTrk, Guard: apiGuard, Keys: keys, Prefix: prefix,
		CommandTimeout: 10 * time.Second, KeepAlive: 200 * time.Millisecond, Audit: auditLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	s := &stack{t: t, pool: pool, owner: database.Pool, audit: auditLog, rdb: rdb, prefix: prefix, keys: keys, guard: guard, svc: svc, opts: opts}
	tenants := tenant.NewStore(pool)
	mk := func(n string) *tenant.BootstrapResult {
		res, err := tenants.Bootstrap(ctx, tenant.BootstrapParams{TenantName: fmt.Sprintf("%s-%s-%d", n, t.Name(), time.Now().UnixNano()), Email: n + "@example.test"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	s.a, s.b = mk("a"), mk("b")
	return s
}

func newTracker(t *testing.T, rdb redis.UniversalClient, prefix, name string, leaseTTL time.Duration, onLost func(*tracker.Lease)) *tracker.Tracker {
	t.Helper()
	trk, err := tracker.New(rdb, &tracker.Config{
		Prefix: prefix + ":trk", NodeName: name, NodeTTL: 2 * time.Second, LeaseTTL: leaseTTL, OnLeaseLost: onLost,
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

// addWorker starts a worker node.
func (s *stack) addWorker() *worker {
	s.t.Helper()
	w := &worker{}
	w.trk = newTracker(s.t, s.rdb, s.prefix, fmt.Sprintf("worker-%d", len(s.workers)+1), s.opts.leaseTTL,
		func(l *tracker.Lease) {
			if w.rt != nil {
				w.rt.LeaseLost(l)
			}
		})
	guard := s.guard
	if s.opts.workerGuard != nil {
		guard = s.opts.workerGuard
	}
	rt, err := inspector.NewRuntime(&inspector.RuntimeConfig{
		Pool: s.pool, Redis: s.rdb, Tracker: w.trk, Guard: guard, Keys: s.keys, Prefix: s.prefix,
		PendingTimeout: s.opts.pendingTimeout, DiscoveryInterval: 300 * time.Millisecond, ConnectAttempts: 2,
		Logger: testLogger(s.t),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	w.rt = rt
	if err := rt.Start(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { w.stop() })
	s.workers = append(s.workers, w)
	return w
}

func (w *worker) stop() {
	if w.stopped {
		return
	}
	w.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.rt.Stop(ctx)
}

func (s *stack) create(url string, target inspector.Target) *inspector.Session {
	s.t.Helper()
	target.URL = url
	sess, err := s.svc.CreateSession(context.Background(), s.a.Tenant.ID, inspector.CreateSessionParams{Name: "test", Target: target, CreatedBy: "key:test"})
	if err != nil {
		s.t.Fatalf("create session: %v", err)
	}
	return sess
}

func (s *stack) waitStatus(sessionID string, want inspector.Status) *inspector.Session {
	s.t.Helper()
	var got *inspector.Session
	eventually(s.t, 20*time.Second, "session status "+string(want), func() bool {
		var err error
		got, err = s.svc.GetSession(context.Background(), s.a.Tenant.ID, sessionID)
		return err == nil && got.Status == want
	})
	return got
}

func (s *stack) events(sessionID string) []inspector.Event {
	s.t.Helper()
	var all []inspector.Event
	err := s.svc.ExportEvents(context.Background(), s.a.Tenant.ID, sessionID, func(e inspector.Event) error {
		all = append(all, e)
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return all
}

func (s *stack) waitEvent(sessionID string, match func(inspector.Event) bool) inspector.Event {
	s.t.Helper()
	var found inspector.Event
	eventually(s.t, 20*time.Second, "event", func() bool {
		for _, e := range s.events(sessionID) {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// waitReadyAfter waits for the session's owner to report it ready after seq: after a move,
// the new owner has connected once it has.
func (s *stack) waitReadyAfter(sessionID string, seq int64) {
	s.t.Helper()
	s.waitEvent(sessionID, func(e inspector.Event) bool {
		return e.Type == inspector.EventStatus && dataOf(e)["state"] == string(inspector.StatusReady) && e.Seq > seq
	})
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requireGapless(t *testing.T, events []inspector.Event) {
	t.Helper()
	for i, e := range events {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: seqs are not gapless from 1", i, e.Seq)
		}
	}
}

func dataOf(e inspector.Event) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(e.Data, &m)
	return m
}

func callText(t *testing.T, c *inspector.Call) string {
	t.Helper()
	var res struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(c.Result, &res); err != nil || len(res.Content) == 0 {
		t.Fatalf("call result %s: %v", c.Result, err)
	}
	return res.Content[0].Text
}

func (s *stack) call(sessionID, name string, args map[string]any) *inspector.Call {
	s.t.Helper()
	raw, _ := json.Marshal(args)
	c, err := s.svc.StartCall(context.Background(), s.a.Tenant.ID, sessionID, inspector.StartCallParams{Name: name, Arguments: raw, CreatedBy: "key:test"})
	if err != nil {
		s.t.Fatalf("start call %s: %v", name, err)
	}
	return c
}

// readyWithoutOwner creates a session of tenantID whose target nothing serves and marks it
// ready, as if a worker that died since had connected it: calls queue on it and stay queued.
func (s *stack) readyWithoutOwner(tenantID, name string) *inspector.Session {
	s.t.Helper()
	ctx := context.Background()
	sess, err := s.svc.CreateSession(ctx, tenantID, inspector.CreateSessionParams{Name: name,
		Target: inspector.Target{URL: "http://127.0.0.1:9/mcp"}, CreatedBy: "key:test"})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.owner.Exec(ctx, `update sessions set status = 'ready' where id = $1`, sess.ID); err != nil {
		s.t.Fatal(err)
	}
	return sess
}

// queueEcho starts a call of echo in a session of tenantID.
func (s *stack) queueEcho(tenantID, sessionID string) *inspector.Call {
	s.t.Helper()
	c, err := s.svc.StartCall(context.Background(), tenantID, sessionID, inspector.StartCallParams{Name: "echo", CreatedBy: "key:test"})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func (s *stack) wait(sessionID, callID string) *inspector.Call {
	s.t.Helper()
	c, err := s.svc.WaitCall(context.Background(), s.a.Tenant.ID, sessionID, callID, 20*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	if !c.Status.Finished() {
		s.t.Fatalf("call %s still %s", callID, c.Status)
	}
	return c
}

// testLogger sends worker logs to the test log (shown on failure or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test ended
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ = slices.Contains[[]string]
var _ sync.Mutex
var _ = strings.Contains

// waitParked waits until the session has exactly one request waiting for a person, and
// returns its id.
func (s *stack) waitParked(sessionID string) string {
	s.t.Helper()
	var id string
	eventually(s.t, 10*time.Second, "a parked request", func() bool {
		list, _ := s.svc.ListPending(context.Background(), s.a.Tenant.ID, sessionID, []inspector.PendingStatus{inspector.PendingWaiting})
		if len(list) == 1 {
			id = list[0].RequestID
		}
		return id != ""
	})
	return id
}

// connects counts the times the session started connecting, from its status events.
func (s *stack) connects(sessionID string) int {
	n := 0
	for _, e := range s.events(sessionID) {
		if e.Type == inspector.EventStatus && dataOf(e)["state"] == string(inspector.StatusConnecting) {
			n++
		}
	}
	return n
}

// newReadySession is a stack with one worker and a session, ready, on a stateful go-sdk
// server of its own.
func newReadySession(t *testing.T) (*stack, *inspector.Session) {
	t.Helper()
	s, sess, _ := newReadySessionServer(t)
	return s, sess
}

// newReadySessionServer is newReadySession with the server, for tests that look at what it
// received.
func newReadySessionServer(t *testing.T) (*stack, *inspector.Session, *mcptest.StatefulServer) {
	t.Helper()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	return s, sess, srv
}
