package audit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/dbtest"
)

// seedChain writes n valid, chained events for tenantID straight into audit_events with COPY
// (as the owner: COPY is refused under RLS), far faster than n Record calls.
func seedChain(tb testing.TB, owner *pgxpool.Pool, tenantID string, n int) {
	tb.Helper()
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Microsecond).Add(-time.Duration(n) * time.Microsecond)
	prev := make([]byte, sha256.Size)
	pad := fmt.Sprintf("%0200d", 0)
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		ev := &Event{
			ID: uuid.Must(uuid.NewV7()).String(), TenantID: tenantID, Seq: int64(i), At: base.Add(time.Duration(i) * time.Microsecond),
			Actor:    Actor{Kind: "api_key", ID: "key:0192f0c4-aaaa-7bbb-8ccc-000000000001", Name: "ci"},
			Action:   ActionToolCall,
			Target:   Target{Type: "session", ID: "0192f0c4-aaaa-7bbb-8ccc-000000000002"},
			ClientIP: "192.0.2.10", UserAgent: "tapline-bench/1", RequestID: strconv.Itoa(i),
			Details:  []byte(`{"arguments":{"pad":"` + pad + `","q":"weather in paris"},"call_id":"c-` + strconv.Itoa(i) + `","name":"search"}`),
			PrevHash: prev,
		}
		sum, err := ev.computeHash()
		if err != nil {
			return nil, err
		}
		ev.RowHash, prev = sum, sum
		return []any{ev.TenantID, ev.Seq, ev.ID, ev.At, ev.Actor.Kind, ev.Actor.ID, ev.Actor.Name, ev.Action, ev.Target.Type,
			ev.Target.ID, ev.ClientIP, ev.UserAgent, ev.RequestID, string(ev.Details), ev.PrevHash, ev.RowHash}, nil
	})
	cols := []string{"tenant_id", "seq", "id", "at", "actor_kind", "actor_id", "actor_name", "action", "target_type",
		"target_id", "client_ip", "user_agent", "request_id", "details", "prev_hash", "row_hash"}
	if _, err := owner.CopyFrom(ctx, pgx.Identifier{"audit_events"}, cols, src); err != nil {
		tb.Fatalf("seed %d events: %v", n, err)
	}
}

// heapPeak samples HeapInuse every few milliseconds until stop is called, then returns the
// peak above the level when it started.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		if peak < base {
			return 0
		}
		return peak - base
	}
}

// exportOverHTTP streams the tenant's whole log as JSON lines through a real HTTP server and
// client, the way GET /v1/audit?format=jsonl does, and returns the bytes received.
func exportOverHTTP(tb testing.TB, r *Recorder, tenantID string) (rows, size int64) {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		n, err := r.Export(req.Context(), w, tenantID, Filter{}, ExportOptions{Format: FormatJSONL, Flush: w.(http.Flusher).Flush})
		if err != nil {
			tb.Errorf("export: %v", err)
		}
		rows = n
	}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	size, err = io.Copy(io.Discard, res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return rows, size
}

// TestExportMemoryIsBounded is the small version of BenchmarkExport that make test runs: the
// export's peak heap stays far below its output size. Not parallel, so other tests' garbage
// does not count.
func TestExportMemoryIsBounded(t *testing.T) {
	const n = 30_000
	r := NewRecorder(dbtest.Pool(t), nil)
	tenantID := uuid.NewString()
	seedChain(t, dbtest.OwnerPool(t), tenantID, n)
	stop := heapPeak()
	rows, size := exportOverHTTP(t, r, tenantID)
	peak := stop()
	t.Logf("exported %d rows, %d MiB; peak heap growth %.1f MiB", rows, size>>20, float64(peak)/(1<<20))
	if rows != n {
		t.Fatalf("exported %d rows, want %d", rows, n)
	}
	if peak > 24<<20 || peak > uint64(size)/2 {
		t.Fatalf("peak heap grew %d MiB for a %d MiB export: not streaming", peak>>20, size>>20)
	}
	res, err := r.Verify(context.Background(), tenantID, nil, nil)
	if err != nil || !res.OK || res.Checked != n {
		t.Fatalf("verify = %+v, %v", res, err)
	}
}

// BenchmarkExport exports TAPLINE_BENCH_AUDIT_ROWS events (1,000,000 by default) over HTTP
// and verifies the chain, reporting rows/s and the peak heap growth. Run it with
// `make bench-audit` (-benchtime=1x).
func BenchmarkExport(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TAPLINE_BENCH_AUDIT_ROWS")); err == nil && v > 0 {
		n = v
	}
	r := NewRecorder(dbtest.Pool(b), nil)
	tenantID := uuid.NewString()
	start := time.Now()
	seedChain(b, dbtest.OwnerPool(b), tenantID, n)
	// As in production, the table has been vacuumed: the first reader does not pay for
	// setting hint bits on a million fresh rows.
	if _, err := dbtest.OwnerPool(b).Exec(context.Background(), "vacuum analyze audit_events"); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d events in %s", n, time.Since(start).Round(time.Millisecond))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		stop := heapPeak()
		t0 := time.Now()
		rows, size := exportOverHTTP(b, r, tenantID)
		elapsed := time.Since(t0)
		peak := stop()
		if rows != int64(n) {
			b.Fatalf("exported %d rows, want %d", rows, n)
		}
		b.ReportMetric(float64(rows)/elapsed.Seconds(), "export_rows/s")
		b.ReportMetric(float64(peak)/(1<<20), "export_peak_heap_MiB")
		b.ReportMetric(float64(size)/(1<<20), "export_MiB")

		stop = heapPeak()
		t0 = time.Now()
		res, err := r.Verify(context.Background(), tenantID, nil, nil)
		elapsed = time.Since(t0)
		peak = stop()
		if err != nil || !res.OK || res.Checked != int64(n) {
			b.Fatalf("verify = %+v, %v", res, err)
		}
		b.ReportMetric(float64(n)/elapsed.Seconds(), "verify_rows/s")
		b.ReportMetric(float64(peak)/(1<<20), "verify_peak_heap_MiB")
		fmt.Printf("audit export: %d rows, %.0f MiB, peak heap +%.1f MiB\n", rows, float64(size)/(1<<20), float64(peak)/(1<<20))
	}
}
