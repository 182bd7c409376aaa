package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	os.Exit(code)
}

// lockedBuffer collects a process's log while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRedisAt starts a redis-server on addr, which a process under test already points at.
func startRedisAt(t *testing.T, addr string, extra ...string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	cmd := exec.Command("redis-server", append([]string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}, extra...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func secretKey(t *testing.T) string {
	t.Helper()
	var k [32]byte
	_, _ = rand.Read(k[:])
	return base64.StdEncoding.EncodeToString(k[:])
}

func status(url string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// A worker started while Redis is away waits for it, alive and not ready, and registers its
// node once Redis is up; before, its retry called Start again on the tracker the first
// attempt had used, failed with "Start called twice" forever and served no health endpoint.
func TestWorkerWaitsForRedisAtStart(t *testing.T) {
	redisAddr := freeAddr(t)
	httpAddr := freeAddr(t)
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    "redis://" + redisAddr + "/0",
		"TAPLINE_SECRET_KEY":   secretKey(t),
		"TAPLINE_HTTP_ADDR":    httpAddr,
		"TAPLINE_NODE_NAME":    "wait-" + strconv.Itoa(os.Getpid()),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return vars[k] }, logs) }()

	base := "http://" + httpAddr
	redistest.Eventually(t, 10*time.Second, "/healthz answers while Redis is away", func() bool {
		return status(base+"/healthz") == http.StatusOK
	})
	redistest.Eventually(t, 10*time.Second, "a retry is logged", func() bool {
		return strings.Count(logs.String(), "waiting for redis") >= 2
	})
	if got := status(base + "/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while Redis is away = %d, want 503", got)
	}

	startRedisAt(t, redisAddr)
	redistest.Eventually(t, 20*time.Second, "the worker becomes ready once Redis is up", func() bool {
		return status(base+"/readyz") == http.StatusOK
	})
	if !strings.Contains(logs.String(), "worker node registered") {
		t.Fatalf("no registration logged:\n%s", logs)
	}
	if strings.Contains(logs.String(), "Start called twice") {
		t.Fatalf("the retry reused a tracker:\n%s", logs)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after SIGTERM = %v, want nil\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not drain within 30s")
	}
}

// SIGTERM while the worker still waits for Redis ends it at once and cleanly.
func TestWorkerStopsWhileWaitingForRedis(t *testing.T) {
	httpAddr := freeAddr(t)
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    "redis://" + freeAddr(t) + "/0",
		"TAPLINE_SECRET_KEY":   secretKey(t),
		"TAPLINE_HTTP_ADDR":    httpAddr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return vars[k] }, logs) }()
	redistest.Eventually(t, 10*time.Second, "a retry is logged", func() bool {
		return strings.Contains(logs.String(), "waiting for redis")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not stop")
	}
	if got := status("http://" + httpAddr + "/healthz"); got != 0 {
		t.Fatalf("/healthz still answers %d after the worker stopped", got)
	}
}

// Redis refusing the configured password is a configuration error: the worker stops with it
// instead of waiting for a Redis that will never let it in.
func TestWorkerStopsOnRedisAuthError(t *testing.T) {
	redisAddr := freeAddr(t)
	startRedisAt(t, redisAddr, "--requirepass", "right-password")
	redistest.Eventually(t, 10*time.Second, "redis-server listens", func() bool {
		c, err := net.Dial("tcp", redisAddr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	for name, url := range map[string]string{
		"WrongPassword": "redis://:wrong-password@" + redisAddr + "/0",
		"NoPassword":    "redis://" + redisAddr + "/0",
	} {
		t.Run(name, func(t *testing.T) {
			vars := map[string]string{
				"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
				"TAPLINE_REDIS_URL":    url,
				"TAPLINE_SECRET_KEY":   secretKey(t),
				"TAPLINE_HTTP_ADDR":    freeAddr(t),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := run(ctx, func(k string) string { return vars[k] }, io.Discard)
			if ctx.Err() != nil {
				t.Fatalf("the worker kept waiting for a Redis that refuses its credentials (run = %v)", err)
			}
			if err == nil || !strings.Contains(err.Error(), "WRONGPASS") && !strings.Contains(err.Error(), "NOAUTH") {
				t.Fatalf("run = %v, want Redis's refusal", err)
			}
		})
	}
}
