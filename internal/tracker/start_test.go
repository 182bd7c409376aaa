package tracker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/redistest"
)

// StartRetrying waits for a Redis that is away, and the tracker it starts runs under runCtx,
// not under the context that ends the wait: a process that gets SIGTERM (the wait's context
// ends) keeps its node alive and its leases renewed while it drains, until Stop. A worker whose
// tracker stopped beating at SIGTERM lost its leases to other nodes mid-drain.
func TestStartRetryingRunsPastTheWaitsEnd(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	prefix := redistest.Prefix(t)
	rdb := redistest.Single(t, os.Getenv("TEST_REDIS_URL"))
	other := startNode(t, rdb, prefix, "other")

	waitCtx, signal := context.WithCancel(context.Background())
	defer signal()
	trk, err := StartRetrying(waitCtx, context.WithoutCancel(waitCtx), func() (*Tracker, error) {
		return New(rdb, &Config{Prefix: prefix, NodeName: "draining", NodeTTL: testNodeTTL, HeartbeatInterval: testHeartbeat,
			LeaseTTL: testLeaseTTL, ClaimTTL: testClaimTTL, ReapInterval: testReap, Logger: logger})
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer trk.Stop()
	ctx := ctxT(t)
	lease, err := trk.ClaimLease(ctx, "acme", "session-1", 0)
	if err != nil {
		t.Fatal(err)
	}

	signal() // SIGTERM: the process drains for longer than its node's and its lease's TTLs.
	deadline := time.Now().Add(3 * max(testNodeTTL, testLeaseTTL))
	for time.Now().Before(deadline) {
		if n, err := rdb.Exists(ctx, trk.k.node(trk.NodeID())).Result(); err != nil || n != 1 {
			t.Fatalf("the draining node's key is gone (%d, %v): its heartbeat stopped with the wait's context", n, err)
		}
		if holder, _, err := other.LeaseHolder(ctx, "acme", "session-1"); err != nil || holder != trk.NodeID() {
			t.Fatalf("lease holder while draining = %q, %v; want the draining node %q", holder, err, trk.NodeID())
		}
		if _, err := other.ClaimLease(ctx, "acme", "session-1", 0); err == nil {
			t.Fatal("another node took the lease of a node still draining")
		}
		time.Sleep(testHeartbeat)
	}
	if !lease.Valid() {
		t.Fatal("the draining node's lease is no longer valid")
	}
}

// A Redis that refuses the configured credentials, or is away once the wait ends, stops
// StartRetrying with the error; Redis away is waited for until then.
func TestStartRetryingWaitsOnlyForAnOutage(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer down.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	attempts := 0
	_, err := StartRetrying(ctx, context.Background(), func() (*Tracker, error) {
		attempts++
		return New(down, &Config{NodeName: "waiting", Logger: logger})
	}, logger)
	if !errors.Is(err, ErrUnavailable) || attempts < 2 {
		t.Fatalf("StartRetrying against a Redis that is away = %v after %d attempts, want ErrUnavailable after retries", err, attempts)
	}

	srv := redistest.StartServer(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	if err := admin.ConfigSet(context.Background(), "requirepass", "right").Err(); err != nil {
		t.Fatal(err)
	}
	wrong := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: "wrong", MaxRetries: -1})
	defer wrong.Close()
	attempts = 0
	_, err = StartRetrying(context.Background(), context.Background(), func() (*Tracker, error) {
		attempts++
		return New(wrong, &Config{NodeName: "refused", Logger: logger})
	}, logger)
	if err == nil || attempts != 1 {
		t.Fatalf("StartRetrying with a wrong password = %v after %d attempts, want the error at once", err, attempts)
	}
}
