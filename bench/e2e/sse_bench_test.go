package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// BenchmarkSSEFanout measures one api process serving many SSE subscribers of one session's
// events: GET /v1/sessions/{id}/events/stream through the real echo server, auth, Follow and
// the live hub. The api runs in a child process; the subscribers are this process's HTTP
// clients over loopback. This process plays the owning worker: it commits each event with
// tapline_append_events and then publishes it on the session's Redis channel, as the
// persister does, and notes when it published.
//
// The baseline runs first in the same api process: the same number of subscribers on a bare
// net/http SSE handler (one handler goroutine and a 16-slot channel per stream, one shared
// message written to every stream), the naive design the research anchors measured.
//
// TAPLINE_BENCH_SSE_SUBSCRIBERS sets the number of subscribers (default 20) and
// TAPLINE_BENCH_SSE_ROUNDS the number of broadcast events (default 5), published one at a
// time once every subscriber has the previous one. For each of the two it reports the
// publish → receipt latency over every (event, subscriber) pair, and the api process's heap,
// goroutine stacks and RSS per subscriber: their growth from before the subscribers
// connected, after a full collection, divided by their number. b.N is ignored: run it with
// -benchtime=1x.
func BenchmarkSSEFanout(b *testing.B) {
	n := envInt("TAPLINE_BENCH_SSE_SUBSCRIBERS", 20)
	rounds := envInt("TAPLINE_BENCH_SSE_ROUNDS", 5)
	ctx := context.Background()
	s := newStack(b)
	pool, rdb := s.pool(), s.redis()
	owner := s.tenant(tenant.NewStore(pool), "sse")
	tenantID := owner.Tenant.ID
	sessionID := uuid.Must(uuid.NewV7()).String()
	if _, err := s.db.Pool.Exec(ctx, `insert into sessions (id, tenant_id, transport, url, status, epoch)
		values ($1, $2, 'streamable_http', 'http://127.0.0.1:1/mcp', 'ready', 1)`, sessionID, tenantID); err != nil {
		b.Fatal(err)
	}
	api := startChild(b, "api", "TAPLINE_BENCH_DATABASE_URL="+s.db.AppURL, "TAPLINE_BENCH_REDIS_URL="+s.redisURL,
		"TAPLINE_BENCH_PREFIX="+s.prefix)
	if os.Getenv("TAPLINE_BENCH_HOLD") != "" {
		fmt.Fprintf(os.Stderr, "api child at http://%s/debug/pprof/\n", api.addr)
	}
	pub := &publisher{pool: pool, rdb: rdb, tenantID: tenantID, sessionID: sessionID,
		channel: s.prefix + ":ev:{" + tenantID + ":" + sessionID + "}"} // inspector's eventChannel
	// One kept-alive connection, so a bare publish costs one loopback round trip, as a
	// Redis PUBLISH does.
	bareTransport := &http.Transport{MaxIdleConnsPerHost: 1}
	defer bareTransport.CloseIdleConnections()
	bareClient := &http.Client{Transport: bareTransport, Timeout: time.Minute}

	b.ResetTimer()
	bare := runFanout(b, api, fanout{
		url: "http://" + api.addr + "/bench/bare/stream", n: n, rounds: rounds,
		publish: func(seq int) time.Time {
			at := time.Now()
			res, err := bareClient.Post("http://"+api.addr+"/bench/bare/publish?seq="+strconv.Itoa(seq), "text/plain", nil)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			return at
		},
	})
	tl := runFanout(b, api, fanout{
		url: "http://" + api.addr + "/v1/sessions/" + sessionID + "/events/stream", token: owner.Secret, n: n, rounds: rounds,
		publish: func(seq int) time.Time { return pub.publish(b, seq) },
	})
	b.StopTimer()
	b.ReportMetric(float64(n), "subscribers")
	b.ReportMetric(tl.heapKiB, "heap_KiB/sub")
	b.ReportMetric(tl.idleHeapKiB, "idle_heap_KiB/sub")
	b.ReportMetric(tl.stackKiB, "stack_KiB/sub")
	b.ReportMetric(tl.rssKiB, "rss_KiB/sub")
	b.ReportMetric(tl.goroutines, "goroutines/sub")
	b.ReportMetric(tl.connectsPerS, "connects/s")
	b.ReportMetric(tl.p50, "broadcast_p50_ms")
	b.ReportMetric(tl.p99, "broadcast_p99_ms")
	b.ReportMetric(tl.max, "broadcast_max_ms")
	b.ReportMetric(bare.heapKiB, "bare_heap_KiB/sub")
	b.ReportMetric(bare.stackKiB, "bare_stack_KiB/sub")
	b.ReportMetric(bare.rssKiB, "bare_rss_KiB/sub")
	b.ReportMetric(bare.p50, "bare_p50_ms")
	b.ReportMetric(bare.p99, "bare_p99_ms")
}

// fanout is one fan-out measurement: n subscribers of url, and publish, which makes event
// seq (from 1) reach them and returns when it was published.
type fanout struct {
	url     string
	token   string
	n       int
	rounds  int
	publish func(seq int) time.Time
}

type fanoutResult struct {
	heapKiB, idleHeapKiB, stackKiB, rssKiB, goroutines float64
	connectsPerS                                       float64
	p50, p99, max                                      float64
}

// runFanout connects f.n subscribers (after one warm-up subscriber that stays), broadcasts
// f.rounds events and measures; it disconnects everyone before returning.
func runFanout(b *testing.B, api *child, f fanout) fanoutResult {
	b.Helper()
	n := f.n
	clientCtx, cancelClients := context.WithCancel(context.Background())
	transport := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1, ResponseHeaderTimeout: time.Minute}
	hc := &http.Client{Transport: transport}
	base := time.Now()
	// recv[seq-1][i] is when subscriber i read event seq, in ns since base.
	total := 2 + f.rounds
	recv := make([][]int64, total)
	for i := range recv {
		recv[i] = make([]int64, n+1)
	}
	counts := make([]atomic.Int64, total)
	var readers sync.WaitGroup
	defer func() {
		cancelClients()
		readers.Wait()
		transport.CloseIdleConnections()
	}()
	connect := func(i int) error {
		req, _ := http.NewRequestWithContext(clientCtx, "GET", f.url, nil)
		if f.token != "" {
			req.Header.Set("Authorization", "Bearer "+f.token)
		}
		req.Header.Set("Accept", "text/event-stream")
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			res.Body.Close()
			return fmt.Errorf("subscriber %d: status %d", i, res.StatusCode)
		}
		readers.Go(func() {
			defer res.Body.Close()
			br := bufio.NewReaderSize(res.Body, 1024)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if id, ok := bytes.CutPrefix(line, []byte("id: ")); ok {
					at := time.Since(base).Nanoseconds()
					seq, _ := strconv.Atoi(string(bytes.TrimSpace(id)))
					if seq >= 1 && seq <= total {
						recv[seq-1][i] = at
						counts[seq-1].Add(1)
					}
				}
			}
		})
		return nil
	}
	// waitAll waits until want subscribers have event seq.
	waitAll := func(seq, want int) {
		deadline := time.Now().Add(time.Minute)
		for counts[seq-1].Load() < int64(want) {
			if time.Now().After(deadline) {
				b.Fatalf("event %d reached %d of %d subscribers", seq, counts[seq-1].Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}

	// Warm the api (pools, caches, the hub's subscription) with one subscriber, which then
	// stays: the baseline is an api that already serves this stream.
	if err := connect(n); err != nil {
		b.Fatal(err)
	}
	f.publish(1)
	waitAll(1, 1)
	time.Sleep(500 * time.Millisecond)
	before := childMemStats(b, api)

	start := time.Now()
	sem := make(chan struct{}, 64)
	errs := make(chan error, 1)
	var connecting sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		connecting.Go(func() {
			defer func() { <-sem }()
			if err := connect(i); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	connecting.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	// Every subscriber has event 2 once it follows the live stream (a Tapline subscriber
	// still reading the backlog gets it from PostgreSQL).
	f.publish(2)
	waitAll(2, n+1)
	connectsPerS := float64(n) / time.Since(start).Seconds()
	idle := childMemStats(b, api)

	var latencies []float64
	for r := 3; r <= total; r++ {
		t0 := f.publish(r).Sub(base).Nanoseconds()
		waitAll(r, n+1)
		for i := range n {
			latencies = append(latencies, float64(recv[r-1][i]-t0)/1e6)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := childMemStats(b, api)
	if hold := os.Getenv("TAPLINE_BENCH_HOLD"); hold != "" {
		// Keep the subscribers connected for a look at the api (go tool pprof).
		d, _ := time.ParseDuration(hold)
		fmt.Fprintf(os.Stderr, "holding %d subscribers of %s for %v\n", n, f.url, d)
		time.Sleep(d)
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	out := fanoutResult{
		heapKiB: per(after.HeapInuse, before.HeapInuse), idleHeapKiB: per(idle.HeapInuse, before.HeapInuse),
		stackKiB: per(after.StackInuse, before.StackInuse), rssKiB: per(after.RSS, before.RSS),
		goroutines:   float64(after.Goroutines-before.Goroutines) / float64(n),
		connectsPerS: connectsPerS,
		p50:          percentile(latencies, 50), p99: percentile(latencies, 99), max: percentile(latencies, 100),
	}
	// Disconnect and let the api wind the streams down before the next measurement.
	cancelClients()
	readers.Wait()
	deadline := time.Now().Add(time.Minute)
	for childMemStats(b, api).Goroutines > before.Goroutines+16 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	return out
}

// publisher writes events as the session's owner does: commit, then publish.
type publisher struct {
	pool                *pgxpool.Pool
	rdb                 redis.UniversalClient
	tenantID, sessionID string
	channel             string
}

// publish commits the session's event seq (the next one) and publishes it; it returns when
// it published.
func (p *publisher) publish(tb testing.TB, seq int) time.Time {
	tb.Helper()
	ctx := context.Background()
	data, _ := json.Marshal(map[string]any{"dir": "recv", "message": map[string]any{
		"jsonrpc": "2.0", "method": "notifications/progress",
		"params": map[string]any{"progressToken": "01a2012e-b35c-7c93-9f53-55f24d715636", "progress": seq, "total": 100, "message": "working on it"},
	}})
	at := time.Now().UTC().Truncate(time.Microsecond)
	var first int64
	var refused bool
	err := p.pool.QueryRow(ctx, `select first_seq, refused from tapline_append_events(
		array[$1::uuid], array[$2::uuid], array[1::bigint], array['frame'], array[$3::jsonb], array[$4::timestamptz])`,
		p.tenantID, p.sessionID, data, at).Scan(&first, &refused)
	if err != nil || refused || first != int64(seq) {
		tb.Fatalf("append event %d: seq %d refused %v: %v", seq, first, refused, err)
	}
	body, _ := json.Marshal(inspector.Event{Seq: first, Type: inspector.EventFrame, At: at, Data: data})
	published := time.Now()
	if err := p.rdb.Publish(ctx, p.channel, body).Err(); err != nil {
		tb.Fatal(err)
	}
	return published
}
