package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	rpprof "runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
)

// A multi-process benchmark starts this test binary again with TAPLINE_BENCH_ROLE set:
//
//	target  the echo MCP server (a worker's heap then holds only the client side)
//	api     httpapi + inspector.Service, as cmd/api wires them, plus GET /bench/memstats
//	worker  an inspector.Runtime, as cmd/worker wires it, plus GET /bench/memstats
//
// The child prints "LISTEN host:port" once it serves, and exits when its stdin closes (the
// parent ended, however) or on SIGTERM.

// child is a running child process.
type child struct {
	addr string
	cmd  *exec.Cmd
}

// startChild starts a child in role with extra environment (KEY=value) and waits until it
// listens. It is stopped when the benchmark ends.
func startChild(tb testing.TB, role string, env ...string) *child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				lines <- addr
			}
		}
	}()
	select {
	case addr := <-lines:
		return &child{addr: addr, cmd: cmd}
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s child did not start", role)
		return nil
	}
}

// runChild serves role until the parent goes away.
func runChild(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		// The parent holds our stdin: EOF means it is gone.
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	var h http.Handler
	var cleanup func()
	var err error
	switch role {
	case "target":
		h, cleanup = targetHandler(targetServer()), func() {}
	case "api":
		h, cleanup, err = apiChild(ctx)
	case "worker":
		h, cleanup, err = workerChild(ctx)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	defer cleanup()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("LISTEN %s\n", ln.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = srv.Close()
	return 0
}

// childEnv is what a child process shares with its parent: the application-role pool
// (TAPLINE_BENCH_DATABASE_URL), Redis (TAPLINE_BENCH_REDIS_URL) and the key prefix
// (TAPLINE_BENCH_PREFIX), with the loopback-allowing guard every bench process uses.
type childEnv struct {
	pool   *pgxpool.Pool
	rdb    redis.UniversalClient
	prefix string
	guard  *netguard.Guard
}

func openChildEnv(ctx context.Context) (*childEnv, error) {
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		return nil, err
	}
	pool, err := db.NewPool(ctx, os.Getenv("TAPLINE_BENCH_DATABASE_URL"), nil)
	if err != nil {
		return nil, err
	}
	rdb, err := openRedis(os.Getenv("TAPLINE_BENCH_REDIS_URL"))
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &childEnv{pool: pool, rdb: rdb, prefix: os.Getenv("TAPLINE_BENCH_PREFIX"), guard: guard}, nil
}

func (e *childEnv) close() {
	_ = e.rdb.Close()
	e.pool.Close()
}

// apiChild wires an api process from the childEnv, with production defaults otherwise.
func apiChild(ctx context.Context) (http.Handler, func(), error) {
	env, err := openChildEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	pool, rdb, prefix, guard := env.pool, env.rdb, env.prefix, env.guard
	bg := context.WithoutCancel(ctx)
	trk, err := tracker.New(rdb, &tracker.Config{Prefix: prefix + ":trk", NodeName: "bench-api"})
	if err != nil {
		return nil, nil, err
	}
	if err := trk.Start(bg); err != nil {
		return nil, nil, err
	}
	k, _ := secretbox.GenerateKey()
	keys, err := secretbox.ParseKeyring(k)
	if err != nil {
		return nil, nil, err
	}
	svc, err := inspector.NewService(&inspector.ServiceConfig{Pool: pool, Redis: rdb, Tracker: trk, Guard: guard, Keys: keys, Prefix: prefix})
	if err != nil {
		return nil, nil, err
	}
	if err := svc.Start(bg); err != nil {
		return nil, nil, err
	}
	tenants := tenant.NewStore(pool)
	stamps := auth.NewRedisStamps(rdb, prefix, nil)
	tenants.OnAuthChange(stamps.Publish)
	draining := make(chan struct{})
	e, err := httpapi.New(&httpapi.Config{
		Pool: pool, Redis: rdb, Tenants: tenants, Auth: auth.NewAuthenticator(tenants, nil, auth.WithKeyCache(tenants, stamps)),
		Spec: tapline.OpenAPISpec, Inspector: svc, Tracker: trk, Keys: keys, Draining: draining,
	})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bench/memstats", serveMemStats)
	bare := &bareHub{subs: map[chan []byte]struct{}{}}
	mux.HandleFunc("GET /bench/bare/stream", bare.stream)
	mux.HandleFunc("POST /bench/bare/publish", bare.publish)
	// Profiles of the api under load, for finding where its memory goes (loopback only).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/", e)
	cleanup := func() {
		close(draining)
		svc.Stop()
		trk.Stop()
		env.close()
	}
	return mux, cleanup, nil
}

// workerChild wires a worker process from the childEnv and TAPLINE_BENCH_SECRET_KEY (the
// parent's key, so that both read the same target secrets).
func workerChild(ctx context.Context) (http.Handler, func(), error) {
	env, err := openChildEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	keys, err := secretbox.ParseKeyring(os.Getenv("TAPLINE_BENCH_SECRET_KEY"))
	if err != nil {
		return nil, nil, err
	}
	rt, trk, err := startWorker(context.WithoutCancel(ctx), env.pool, env.rdb, env.prefix, env.guard, keys)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bench/memstats", serveMemStats)
	cleanup := func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rt.Stop(sctx)
		trk.Stop()
		env.close()
	}
	return mux, cleanup, nil
}

// bareHub is the naive SSE fan-out the SSE benchmark compares Tapline with: one handler
// goroutine and a 16-slot channel per stream, one message written to every stream, nothing
// stored, no auth.
type bareHub struct {
	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

func (h *bareHub) stream(w http.ResponseWriter, r *http.Request) {
	ch := make(chan []byte, 16)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("retry: 2000\n: connected\n\n")); err != nil || rc.Flush() != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case msg := <-ch:
			if _, err := w.Write(msg); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

func (h *bareHub) publish(w http.ResponseWriter, r *http.Request) {
	seq := r.URL.Query().Get("seq")
	msg := []byte("id: " + seq + "\nevent: frame\ndata: {\"seq\":" + seq + `,"type":"frame","at":"` +
		time.Now().UTC().Format(time.RFC3339Nano) + `","data":{"dir":"recv","message":{"jsonrpc":"2.0",` +
		`"method":"notifications/progress","params":{"progressToken":"01a2012e-b35c-7c93-9f53-55f24d715636",` +
		`"progress":` + seq + `,"total":100,"message":"working on it"}}}}` + "\n\n")
	h.mu.Lock()
	for ch := range h.subs {
		select {
		case ch <- msg:
		default:
		}
	}
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// memStats is a process's memory after a full collection.
type memStats struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

func readMemStats() memStats {
	runtime.GC()
	// Return freed memory to the OS too, so RSS is comparable between measurements.
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memStats{HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, Sys: m.Sys, RSS: rss(), Goroutines: runtime.NumGoroutine()}
}

// writeHeapProfile writes this process's heap profile to path (for go tool pprof).
func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := rpprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
}

// rss reads the process's resident set size from /proc (0 where there is none).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func serveMemStats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(readMemStats())
}

// childMemStats asks an api child for its memory.
func childMemStats(tb testing.TB, c *child) memStats {
	tb.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	res, err := client.Get("http://" + c.addr + "/bench/memstats")
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	var m memStats
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		tb.Fatal(err)
	}
	return m
}
