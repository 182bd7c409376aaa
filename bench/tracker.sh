#!/usr/bin/env bash
# Runs the tracker benchmarks against throw-away Redis servers and prints, last,
# exactly one line:
#
#   claim_ratio=X heartbeat_10k_ms=Y
#
# X = ClaimInFlight throughput / raw SET NX PX throughput through go-redis, at
#     the same parallelism, in the same run, on single-node Redis (goal >= 0.8).
#     It comes from BenchmarkInFlightClaim/Single/Interleaved, which alternates
#     claim and SET NX PX phases 20 times so load from other processes hits
#     both alike; the separate RunParallel ns/op figures are printed for
#     reference but drift too much on a shared 2-core box to divide;
# Y = milliseconds for one node heartbeat while the node holds 10,000 entries,
#     single-node Redis (goal <= 2, and flat in the number of entries).
# Each figure is the median of BENCH_COUNT runs (default 5). Raw output is kept
# in bench/out/tracker.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
count=${BENCH_COUNT:-5}
benchtime=${BENCH_TIME:-1s}
mkdir -p bench/out
out=bench/out/tracker.txt

deploy/local/test-services.sh go test -run '^$' -bench '^Benchmark(InFlightClaim|Heartbeat)$' \
  -benchtime "$benchtime" -count "$count" ./internal/tracker/ >"$out" 2>&1 || {
  cat "$out" >&2
  echo "bench/tracker.sh: benchmarks failed" >&2
  exit 1
}
grep -E '^Benchmark' "$out" >&2

# name (without the -GOMAXPROCS suffix) -> median of ns/op and of claim/setnx
awk '
  /^Benchmark/ {
    name = $1; sub(/-[0-9]+$/, "", name)
    for (i = 4; i <= NF; i++) {
      if ($i == "ns/op") { n[name]++; v[name, n[name]] = $(i - 1) }
      if ($i == "claim/setnx") { rn[name]++; r[name, rn[name]] = $(i - 1) }
    }
  }
  function med(cnt, vals, name,   i, j, k, t, a) {
    k = cnt[name]
    if (k == 0) return 0
    for (i = 1; i <= k; i++) a[i] = vals[name, i] + 0
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  function median(name) { return med(n, v, name) }
  function ratio(name) { return med(rn, r, name) }
  END {
    split("Single Cluster", backends, " ")
    for (b = 1; b <= 2; b++) {
      be = backends[b]
      claim = median("BenchmarkInFlightClaim/" be "/Claim")
      raw = median("BenchmarkInFlightClaim/" be "/RawSetNXPX")
      x = ratio("BenchmarkInFlightClaim/" be "/Interleaved")
      if (claim == 0 || raw == 0 || x == 0) { print "missing claim benchmarks for " be > "/dev/stderr"; exit 1 }
      printf "%s: interleaved claim/setnx %.2f; RunParallel claim %.0f ops/s, SET NX PX %.0f ops/s; heartbeat ms at 0/1k/10k entries: %.3f %.3f %.3f\n", be,
        x, 1e9 / claim, 1e9 / raw,
        median("BenchmarkHeartbeat/" be "/entries=0") / 1e6,
        median("BenchmarkHeartbeat/" be "/entries=1000") / 1e6,
        median("BenchmarkHeartbeat/" be "/entries=10000") / 1e6
    }
    x = ratio("BenchmarkInFlightClaim/Single/Interleaved")
    hb = median("BenchmarkHeartbeat/Single/entries=10000")
    if (hb == 0) { print "missing heartbeat benchmark" > "/dev/stderr"; exit 1 }
    printf "claim_ratio=%.2f heartbeat_10k_ms=%.3f\n", x, hb / 1e6
  }
' "$out"
