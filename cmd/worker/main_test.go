package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/proctest"
	"github.com/tapline/tapline/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	os.Exit(code)
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
	redisAddr := proctest.FreeAddr(t)
	httpAddr := proctest.FreeAddr(t)
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    "redis://" + redisAddr + "/0",
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    httpAddr,
		"TAPLINE_NODE_NAME":    "wait-" + strconv.Itoa(os.Getpid()),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &proctest.LockedBuffer{}
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

	proctest.StartRedisAt(t, redisAddr)
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
	proctest.Stopped(t, done, 30*time.Second, "the worker", logs)
}

// SIGTERM while the worker still waits for Redis ends it at once and cleanly.
func TestWorkerStopsWhileWaitingForRedis(t *testing.T) {
	httpAddr := proctest.FreeAddr(t)
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    "redis://" + proctest.FreeAddr(t) + "/0",
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    httpAddr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &proctest.LockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return vars[k] }, logs) }()
	redistest.Eventually(t, 10*time.Second, "a retry is logged", func() bool {
		return strings.Contains(logs.String(), "waiting for redis")
	})
	cancel()
	proctest.Stopped(t, done, 10*time.Second, "the worker", logs)
	if got := status("http://" + httpAddr + "/healthz"); got != 0 {
		t.Fatalf("/healthz still answers %d after the worker stopped", got)
	}
}

// Redis refusing the configured password is a configuration error: the worker stops with it
// instead of waiting for a Redis that will never let it in.
func TestWorkerStopsOnRedisAuthError(t *testing.T) {
	redisAddr := proctest.FreeAddr(t)
	proctest.StartRedisAt(t, redisAddr, "--requirepass", "right-password")
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
				"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
				"TAPLINE_HTTP_ADDR":    proctest.FreeAddr(t),
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
