package tracker

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/redistest"
)

// benchParallelism × GOMAXPROCS goroutines claim at once, in both halves of
// BenchmarkInFlightClaim, so the two are compared at the same parallelism.
const benchParallelism = 16

// benchTTL has a millisecond part so go-redis sends PX for both the claim and
// the raw SET, and is long enough that the renew loop never runs mid-benchmark.
const benchTTL = 10*time.Minute + time.Millisecond

// BenchmarkInFlightClaim compares ClaimInFlight with a raw SET NX PX through
// go-redis, at the same parallelism, on fresh keys (every claim wins).
// bench/tracker.sh reports Claim/RawSetNXPX throughput as claim_ratio.
func BenchmarkInFlightClaim(b *testing.B) {
	for _, be := range redistest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			rdb := be.New(b)
			prefix := redistest.Prefix(b)
			tr := startNode(b, rdb, prefix, "bench", func(c *Config) { c.ClaimTTL = benchTTL })
			// fresh empties the keyspace before every round, so both halves
			// insert into a Redis dict of the same size.
			fresh := func(b *testing.B) {
				tr.mu.Lock()
				clear(tr.claims) // they expire on their own; don't renew or release them
				tr.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := redistest.DeletePrefix(ctx, rdb, prefix+":{acme:"); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
			}
			b.Cleanup(func() { fresh(b) })
			var seq atomic.Uint64
			b.Run("Claim", func(b *testing.B) {
				fresh(b)
				b.ReportAllocs()
				b.SetParallelism(benchParallelism)
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						id := strconv.FormatUint(seq.Add(1), 36)
						if _, err := tr.ClaimInFlight(ctx, "acme", "sess-1", id); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			// Interleaved alternates claim and raw phases of equal size many
			// times within one run, so load from other processes on the box
			// hits both alike; it reports both throughputs and their ratio.
			b.Run("Interleaved", func(b *testing.B) {
				fresh(b)
				value := "c|" + tr.NodeID() + "|" + "1abc"
				claim := func(ctx context.Context) error {
					_, err := tr.ClaimInFlight(ctx, "acme", "sess-1", strconv.FormatUint(seq.Add(1), 36))
					return err
				}
				raw := func(ctx context.Context) error {
					key := prefix + ":{acme:sess-1}:raw:" + strconv.FormatUint(seq.Add(1), 36)
					return rdb.SetNX(ctx, key, value, benchTTL).Err()
				}
				const rounds = 20
				per := max(b.N/rounds, 1)
				var claimTime, rawTime time.Duration
				for r := range rounds {
					if r%2 == 0 {
						claimTime += parallelPhase(b, per, claim)
						rawTime += parallelPhase(b, per, raw)
					} else {
						rawTime += parallelPhase(b, per, raw)
						claimTime += parallelPhase(b, per, claim)
					}
				}
				ops := float64(rounds * per)
				b.ReportMetric(ops/claimTime.Seconds(), "claims/s")
				b.ReportMetric(ops/rawTime.Seconds(), "setnx/s")
				b.ReportMetric(rawTime.Seconds()/claimTime.Seconds(), "claim/setnx")
			})
			b.Run("RawSetNXPX", func(b *testing.B) {
				fresh(b)
				b.ReportAllocs()
				b.SetParallelism(benchParallelism)
				value := "c|" + tr.NodeID() + "|" + "1abc"
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						key := prefix + ":{acme:sess-1}:raw:" + strconv.FormatUint(seq.Add(1), 36)
						if ok, err := rdb.SetNX(ctx, key, value, benchTTL).Result(); err != nil || !ok {
							b.Error(ok, err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkHeartbeat measures one node heartbeat while the node holds 0,
// 1,000 and 10,000 entries: it must not grow with them.
func BenchmarkHeartbeat(b *testing.B) {
	for _, be := range redistest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			rdb := be.New(b)
			for _, n := range []int{0, 1000, 10000} {
				// Set up once per size: the sub-benchmark body runs several times.
				tr := startNode(b, rdb, redistest.Prefix(b), "bench", func(c *Config) {
					c.NodeTTL, c.HeartbeatInterval = time.Hour, 20*time.Minute // only the benchmark beats
				})
				trackMany(b, tr, n)
				b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
					ctx := context.Background()
					b.ReportAllocs()
					for b.Loop() {
						lost, err := tr.heartbeat(ctx)
						if err != nil || lost != "" {
							b.Fatal(lost, err)
						}
					}
				})
			}
		})
	}
}

// trackMany tracks n entries (sessions, requests and streams of a few
// tenants) with 32 goroutines.
func trackMany(b *testing.B, tr *node, n int) {
	b.Helper()
	ctx := context.Background()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Value
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				tenant := "tenant-" + strconv.Itoa(i%4)
				session := "s-" + strconv.Itoa(i/3)
				var r Ref
				switch i % 3 {
				case 0:
					r = SessionRef(tenant, session)
				case 1:
					r = RequestRef(tenant, session, "r")
				default:
					r = StreamRef(tenant, session, "x")
				}
				if err := tr.Track(ctx, r, Meta{"i": strconv.Itoa(i)}); err != nil {
					fail.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := fail.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// parallelPhase runs n calls of op on benchParallelism × GOMAXPROCS goroutines
// (as RunParallel would) and returns the wall time.
func parallelPhase(b *testing.B, n int, op func(context.Context) error) time.Duration {
	ctx := context.Background()
	var (
		wg   sync.WaitGroup
		left atomic.Int64
		fail atomic.Value
	)
	left.Store(int64(n))
	start := time.Now()
	for range benchParallelism * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := op(ctx); err != nil {
					fail.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err, _ := fail.Load().(error); err != nil {
		b.Fatal(err)
	}
	return took
}
