package chaos_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/chaos"
)

// TestChaosShort is the CI form of make chaos: real api and worker processes (built with the
// race detector), real PostgreSQL and Redis of its own, every fault at least once. It checks
// takeover after SIGKILL and after SIGSTOP (zombie fencing: nothing written after waking),
// drain on SIGTERM, Redis restarted empty, an api process killed under SSE readers, duplicate
// POSTs with one Idempotency-Key on both apis and a PostgreSQL restart, by accounting for
// every event and every tool run.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos runs real processes; not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cfg := chaos.Short()
	// A longer lease than make chaos uses leaves room for a loaded CI machine: a drain must
	// still hand over well before a lease could have lapsed.
	cfg.LeaseTTL = 5 * time.Second
	cfg.Race = true
	var out strings.Builder
	cfg.Out = &out
	rep, err := chaos.Run(ctx, cfg)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.Summary() + rep.Line())
	if !rep.OK() {
		t.Errorf("the failure model did not hold:\n%s", strings.Join(rep.Problems, "\n"))
	}
	// Timing on a shared CI machine is looser than make chaos's goal (TTL + 2s).
	for _, ms := range rep.TakeoverMS {
		if limit := (cfg.LeaseTTL + 8*time.Second).Milliseconds(); ms > limit {
			t.Errorf("a takeover took %dms; limit %dms", ms, limit)
		}
	}
	if len(rep.TakeoverMS) == 0 || len(rep.HandoverMS) == 0 || len(rep.RecoveryMS) == 0 {
		t.Errorf("faults did not run: %d takeovers, %d hand-overs, %d Redis recoveries", len(rep.TakeoverMS), len(rep.HandoverMS), len(rep.RecoveryMS))
	}
	if rep.HTTP500 != 0 || rep.NoRetryAfter503 != 0 {
		t.Errorf("%d answers were 500 and %d were 503 without Retry-After", rep.HTTP500, rep.NoRetryAfter503)
	}
	_ = os.Stderr
}
