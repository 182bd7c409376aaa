package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// BenchmarkLiveSessions measures how many live sessions one worker Runtime holds and what
// each costs it. The MCP server runs in a child process, so this process's heap holds only
// the worker side: the go-sdk client session with its standalone SSE stream, the tapped
// transport, the session runner, the lease and the tracker entry. Sessions are created
// through inspector.Service, spread over tenants of 100, and the worker adopts and connects
// them as it would in production.
//
// TAPLINE_BENCH_SESSIONS sets the number of sessions (default 20). It reports the heap in
// use per session after a full collection (the growth from before the sessions existed
// divided by their number), the same for goroutine stacks and for RSS, goroutines per
// session, and how fast the worker adopted and connected them. The baseline, measured first
// in the same process against the same server, is n bare go-sdk client sessions (sdk_*).
// b.N is ignored: run it with -benchtime=1x.
func BenchmarkLiveSessions(b *testing.B) {
	n := envInt("TAPLINE_BENCH_SESSIONS", 20)
	ctx := context.Background()
	s := newStack(b)
	target := startChild(b, "target")
	url := "http://" + target.addr + "/mcp"
	api := s.api(101)
	const perTenant = 100
	var owners []*tenant.BootstrapResult
	for i := 0; i < n; i += perTenant {
		owners = append(owners, s.tenant(api.tenants, fmt.Sprintf("live%d", i/perTenant)))
	}
	sdk := bareSessions(b, url, n)
	rt, _ := s.worker()
	// The worker is up and holds nothing: this is its fixed cost.
	time.Sleep(time.Second)
	before := readMemStats()

	b.ResetTimer()
	start := time.Now()
	for i := range n {
		_, err := api.svc.CreateSession(ctx, owners[i/perTenant].Tenant.ID, inspector.CreateSessionParams{
			Name: fmt.Sprintf("live-%d", i), Target: inspector.Target{URL: url},
		})
		if err != nil {
			b.Fatalf("create session %d: %v", i, err)
		}
	}
	s.waitReady(n, time.Duration(n)*50*time.Millisecond+time.Minute)
	took := time.Since(start)
	b.StopTimer()
	if got := rt.Sessions(); got != n {
		b.Fatalf("worker holds %d sessions, want %d", got, n)
	}
	// Let the connections' first exchanges and events finish before measuring.
	time.Sleep(2 * time.Second)
	after := readMemStats()
	if path := os.Getenv("TAPLINE_BENCH_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	if got := rt.Sessions(); got != n {
		b.Fatalf("worker holds %d sessions after settling, want %d", got, n)
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	b.ReportMetric(float64(n), "sessions")
	b.ReportMetric(per(after.HeapInuse, before.HeapInuse), "heap_KiB/session")
	b.ReportMetric(per(after.StackInuse, before.StackInuse), "stack_KiB/session")
	b.ReportMetric(per(after.RSS, before.RSS), "rss_KiB/session")
	b.ReportMetric(float64(after.Goroutines-before.Goroutines)/float64(n), "goroutines/session")
	b.ReportMetric(float64(n)/took.Seconds(), "connected/s")
	b.ReportMetric(sdk.heapKiB, "sdk_heap_KiB/session")
	b.ReportMetric(sdk.stackKiB, "sdk_stack_KiB/session")
	b.ReportMetric(sdk.goroutines, "sdk_goroutines/session")
}

type sessionCost struct{ heapKiB, stackKiB, goroutines float64 }

// bareSessions is the baseline: n go-sdk client sessions to url held by this process with
// nothing else (a client with the SDK's defaults, standalone SSE stream included). It
// returns what each cost and closes them.
func bareSessions(b *testing.B, url string, n int) sessionCost {
	b.Helper()
	ctx := context.Background()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport}
	before := readMemStats()
	sessions := make([]*mcp.ClientSession, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c := mcp.NewClient(&mcp.Implementation{Name: "bench-bare", Version: "1.0.0"}, nil)
			cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, nil)
			if err != nil {
				failed.Add(1)
				return
			}
			sessions[i] = cs
		})
	}
	wg.Wait()
	defer func() {
		for _, cs := range sessions {
			if cs != nil {
				wg.Go(func() { _ = cs.Close() })
			}
		}
		wg.Wait()
	}()
	if failed.Load() > 0 {
		b.Fatalf("%d of %d bare sessions failed to connect", failed.Load(), n)
	}
	time.Sleep(time.Second)
	after := readMemStats()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	return sessionCost{heapKiB: per(after.HeapInuse, before.HeapInuse), stackKiB: per(after.StackInuse, before.StackInuse),
		goroutines: float64(after.Goroutines-before.Goroutines) / float64(n)}
}
