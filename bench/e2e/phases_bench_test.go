package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tapline/tapline/internal/telemetry/telemetrytest"
)

// BenchmarkCallPhases shows where a tool call's time goes: it traces b.N calls of
// POST /v1/sessions/{id}/calls?wait=10 (the stack of BenchmarkCallOverhead) into an
// in-memory exporter and logs, for every span of the call's trace, its median start
// (relative to the REST request's) and median duration, in order, with the median total.
// Tracing adds its own cost: the phases are for comparing, the total is not the overhead.
// Not part of make bench; run it when working on the call path:
//
//	deploy/local/test-services.sh go test -run '^$' -bench CallPhases -benchtime 200x -v ./bench/e2e/
//
// TAPLINE_BENCH_PHASES_BAND=97-99.5 keeps only the calls whose total lies between those two
// percentiles, to see which phases a slow call spends its extra time in.
func BenchmarkCallPhases(b *testing.B) {
	t := b
	ctx := context.Background()
	exp := telemetrytest.Spans(b)
	s := newStack(t)
	api := s.api(0)
	s.worker()
	target := startTarget(t)
	owner := s.tenant(api.tenants, "calls")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: time.Minute}
	rest := func(method, path string, body any) (int, []byte) {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, method, api.srv.URL+path, bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+owner.Secret)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		return res.StatusCode, out
	}
	status, out := rest("POST", "/v1/sessions", map[string]any{"name": "bench", "target": map[string]any{"url": target}})
	if status != 201 {
		t.Fatal(status, string(out))
	}
	var sess struct{ ID string }
	_ = json.Unmarshal(out, &sess)
	s.waitReady(1, 30*time.Second)
	call := func() {
		status, out := rest("POST", "/v1/sessions/"+sess.ID+"/calls?wait=10", map[string]any{"name": "echo", "arguments": map[string]any{"text": "x"}})
		if status != http.StatusOK {
			t.Fatalf("call: %d %s", status, out)
		}
	}
	for range 100 {
		call() // warm-up
	}
	time.Sleep(500 * time.Millisecond)
	exp.Reset()
	b.ResetTimer()
	for range b.N {
		call()
	}
	b.StopTimer()
	time.Sleep(500 * time.Millisecond)
	spans := exp.GetSpans().Snapshots()
	byTrace := map[string][]sdktrace.ReadOnlySpan{}
	var roots []sdktrace.ReadOnlySpan
	for _, sp := range spans {
		byTrace[sp.SpanContext().TraceID().String()] = append(byTrace[sp.SpanContext().TraceID().String()], sp)
		if sp.Name() == "POST /v1/sessions/:id/calls" {
			roots = append(roots, sp)
		}
	}
	if band := os.Getenv("TAPLINE_BENCH_PHASES_BAND"); band != "" {
		roots = inBand(b, roots, band)
	}
	type stat struct{ start, dur []float64 }
	stats := map[string]*stat{}
	var order []string
	var totals []float64
	for _, root := range roots {
		t0 := root.StartTime()
		totals = append(totals, float64(root.EndTime().Sub(t0).Microseconds())/1000)
		seen := map[string]int{}
		tr := byTrace[root.SpanContext().TraceID().String()]
		sort.Slice(tr, func(i, j int) bool { return tr[i].StartTime().Before(tr[j].StartTime()) })
		for _, sp := range tr {
			name := sp.Name()
			seen[name]++
			key := fmt.Sprintf("%s#%d", name, seen[name])
			st := stats[key]
			if st == nil {
				st = &stat{}
				stats[key] = st
				order = append(order, key)
			}
			st.start = append(st.start, float64(sp.StartTime().Sub(t0).Microseconds())/1000)
			st.dur = append(st.dur, float64(sp.EndTime().Sub(sp.StartTime()).Microseconds())/1000)
		}
	}
	var lines []string
	med := func(v []float64) float64 { sort.Float64s(v); return v[len(v)/2] }
	sort.Slice(order, func(i, j int) bool { return med(stats[order[i]].start) < med(stats[order[j]].start) })
	for _, k := range order {
		st := stats[k]
		lines = append(lines, fmt.Sprintf("%7.3f %7.3f  n=%-4d %s", med(st.start), med(st.dur), len(st.dur), k))
	}
	if len(totals) == 0 {
		t.Fatal("no call was traced")
	}
	b.Logf("start_ms dur_ms per span of a call's trace (medians), %d calls:\n%s", len(totals), strings.Join(lines, "\n"))
	b.ReportMetric(med(totals), "traced_call_p50_ms")
}

// inBand returns the roots whose duration lies between the percentiles band names
// ("LOW-HIGH"), slowest first.
func inBand(b *testing.B, roots []sdktrace.ReadOnlySpan, band string) []sdktrace.ReadOnlySpan {
	b.Helper()
	lowS, highS, _ := strings.Cut(band, "-")
	low, err1 := strconv.ParseFloat(lowS, 64)
	high, err2 := strconv.ParseFloat(highS, 64)
	if err1 != nil || err2 != nil || low < 0 || high > 100 || low >= high {
		b.Fatalf("TAPLINE_BENCH_PHASES_BAND=%q: want two percentiles such as 97-99.5", band)
	}
	took := func(sp sdktrace.ReadOnlySpan) time.Duration { return sp.EndTime().Sub(sp.StartTime()) }
	sort.Slice(roots, func(i, j int) bool { return took(roots[i]) > took(roots[j]) })
	n := float64(len(roots))
	from := min(int(n*(100-high)/100), len(roots)-1)
	return roots[from:max(from+1, int(n*(100-low)/100))] // at least one, for b.N = 1
}
