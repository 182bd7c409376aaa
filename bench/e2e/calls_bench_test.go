package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkCallOverhead measures what Tapline adds to a tool call. The subject is
// POST /v1/sessions/{id}/calls?wait=10 for the tool echo: the real echo server and
// inspector.Service, the Redis command bus, a worker Runtime holding the session's go-sdk
// connection, PostgreSQL for the call row, the events (committed before they are published)
// and the audit log, and the finished call sent back by the worker over Redis pub/sub. The
// baseline is a go-sdk client calling echo on the same in-process MCP server directly.
// Batches of ten direct and ten REST calls alternate, so load from other processes hits both
// alike.
//
// The api and the worker share this process, with the target server, unless
// TAPLINE_BENCH_WORKER_PROCESS=1 starts the worker in a process of its own, as deployed.
//
// b.N is the number of calls of each kind. It reports the percentiles of both and
// overhead_p50_ms / overhead_p99_ms, the REST percentile minus the direct one.
func BenchmarkCallOverhead(b *testing.B) {
	ctx := context.Background()
	s := newStack(b)
	api := s.api(0)
	if os.Getenv("TAPLINE_BENCH_WORKER_PROCESS") == "1" {
		s.workerProcess()
	} else {
		s.worker()
	}
	target := startTarget(b)
	owner := s.tenant(api.tenants, "calls")

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: time.Minute}
	b.Cleanup(client.CloseIdleConnections)
	rest := func(method, path string, body any) (int, []byte) {
		b.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, method, api.srv.URL+path, bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+owner.Secret)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer res.Body.Close()
		out, err := io.ReadAll(res.Body)
		if err != nil {
			b.Fatal(err)
		}
		return res.StatusCode, out
	}
	status, out := rest("POST", "/v1/sessions", map[string]any{"name": "bench", "target": map[string]any{"url": target}})
	if status != http.StatusCreated {
		b.Fatalf("create session: %d %s", status, out)
	}
	var sess struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(out, &sess)
	s.waitReady(1, 30*time.Second)

	direct := mcp.NewClient(&mcp.Implementation{Name: "bench-direct", Version: "1.0.0"}, nil)
	cs, err := direct.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: target}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()

	callPath := "/v1/sessions/" + sess.ID + "/calls?wait=10"
	callBody := map[string]any{"name": "echo", "arguments": map[string]any{"text": "hello from the benchmark"}}
	restCall := func() time.Duration {
		start := time.Now()
		status, out := rest("POST", callPath, callBody)
		took := time.Since(start)
		var call struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(out, &call)
		if status != http.StatusOK || call.Status != "succeeded" {
			b.Fatalf("REST call: %d %s", status, out)
		}
		return took
	}
	directCall := func() time.Duration {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello from the benchmark"}})
		took := time.Since(start)
		if err != nil || res.IsError {
			b.Fatalf("direct call: %v %+v", err, res)
		}
		return took
	}
	// Warm both paths: connections, prepared statements, the live subscription.
	for range 20 {
		directCall()
		restCall()
	}

	const batch = 10
	directMS := make([]float64, 0, b.N)
	restMS := make([]float64, 0, b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	// The machine's CPU time (every process: PostgreSQL and Redis too) spent during each kind
	// of batch. On a small shared machine a call's latency is mostly the CPU work along its
	// path, and this figure drifts less from run to run than the latency does.
	var directCPU, restCPU time.Duration
	b.ResetTimer()
	for len(restMS) < b.N {
		n := min(batch, b.N-len(restMS))
		c0 := machineCPU(b)
		for range n {
			directMS = append(directMS, ms(directCall()))
		}
		c1 := machineCPU(b)
		for range n {
			restMS = append(restMS, ms(restCall()))
		}
		directCPU += c1 - c0
		restCPU += machineCPU(b) - c1
	}
	b.StopTimer()
	for _, p := range []float64{50, 99} {
		d, r := percentile(directMS, p), percentile(restMS, p)
		b.ReportMetric(d, fmt.Sprintf("direct_p%.0f_ms", p))
		b.ReportMetric(r, fmt.Sprintf("rest_p%.0f_ms", p))
		b.ReportMetric(r-d, fmt.Sprintf("overhead_p%.0f_ms", p))
	}
	// The slowest call shows a call that waited for a fallback (a lost doorbell waits for
	// the worker's 5 s sweep), which the percentiles of a thousand calls would hide.
	b.ReportMetric(percentile(restMS, 100), "rest_max_ms")
	b.ReportMetric(float64(directCPU.Microseconds())/1000/float64(len(directMS)), "direct_cpu_ms/call")
	b.ReportMetric(float64(restCPU.Microseconds())/1000/float64(len(restMS)), "rest_cpu_ms/call")
}

// machineCPU is the CPU time every core of the machine has spent busy since boot, from
// /proc/stat: user, nice, system, irq, softirq and steal (idle and iowait left out).
func machineCPU(tb testing.TB) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		tb.Fatalf("unexpected /proc/stat: %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		ticks += v
	}
	// USER_HZ is 100 on Linux for every architecture Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond
}
