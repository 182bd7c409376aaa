#!/usr/bin/env bash
# Runs the inspector benchmarks against throw-away PostgreSQL and Redis on loopback and
# prints, last, exactly one line:
#
#   call_overhead_ms_p50=A call_overhead_ms_p99=B events_per_s=C
#
# A, B = latency of POST /v1/sessions/{id}/calls?wait=10 (tool echo; echo server +
#        inspector.Service + Redis command bus + worker Runtime + PostgreSQL) minus the
#        latency of a direct go-sdk client calling the same in-process MCP server, per
#        percentile; batches of the two alternate in each run (BenchmarkCallOverhead,
#        bench/e2e). Goals: A <= 2, B <= 5.
# C    = events committed and published per second by one worker's persister, flooded with
#        300-byte frames over 16 sessions (BenchmarkPersistVsCopy, internal/inspector), whose
#        rounds alternate with a raw pgx CopyFrom of the same rows as the tables' owner; that
#        ratio is printed above the last line. Goal: C >= 50,000.
#
# api, worker and target server share one process; TAPLINE_BENCH_WORKER_PROCESS=1 runs the
# worker in a process of its own, as it is deployed.
#
# Each figure is the median of BENCH_COUNT runs (default 3). BENCH_CALLS (default 1000) calls
# of each kind per run; BENCH_EVENTS (default 100000) events per side per run. Raw output is
# kept in bench/out/inspector.txt. The test services run PostgreSQL with fsync=off.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib.sh
. bench/lib.sh
count=${BENCH_COUNT:-3}
calls=${BENCH_CALLS:-1000}
events=${BENCH_EVENTS:-100000}
go=${GO:-go}
mkdir -p bench/out
out=bench/out/inspector.txt

deploy/local/test-services.sh bash -c "
  set -e
  $go test -count=$count -run '^\$' -bench '^BenchmarkCallOverhead\$' -benchtime ${calls}x -timeout 20m ./bench/e2e/
  $go test -count=$count -run '^\$' -bench '^BenchmarkPersistVsCopy\$' -benchtime ${events}x -timeout 20m ./internal/inspector/
" >"$out" 2>&1 || {
  cat "$out" >&2
  bench_log "bench/inspector.sh: benchmarks failed"
  exit 1
}
grep -E '^Benchmark' "$out" >&2
bench_metrics "$out" >bench/out/inspector.metrics
m() { bench_get bench/out/inspector.metrics "$@"; }

p50=$(m BenchmarkCallOverhead overhead_p50_ms)
p99=$(m BenchmarkCallOverhead overhead_p99_ms)
eps=$(m BenchmarkPersistVsCopy events/s)
printf 'calls: REST p50 %s ms p99 %s ms max %s ms; direct go-sdk p50 %s ms p99 %s ms\n' \
  "$(m BenchmarkCallOverhead rest_p50_ms)" "$(m BenchmarkCallOverhead rest_p99_ms)" "$(m BenchmarkCallOverhead rest_max_ms)" \
  "$(m BenchmarkCallOverhead direct_p50_ms)" "$(m BenchmarkCallOverhead direct_p99_ms)"
printf 'machine CPU per call (every process): REST %s ms, direct go-sdk %s ms\n' \
  "$(m BenchmarkCallOverhead rest_cpu_ms/call)" "$(m BenchmarkCallOverhead direct_cpu_ms/call)"
printf 'events: persister %s/s, raw CopyFrom %s rows/s, persist/copy %s\n' \
  "$(bench_fmt %.0f "$eps")" "$(bench_fmt %.0f "$(m BenchmarkPersistVsCopy copy_rows/s)")" \
  "$(bench_fmt %.2f "$(m BenchmarkPersistVsCopy persist/copy)")"
printf 'call_overhead_ms_p50=%s call_overhead_ms_p99=%s events_per_s=%s\n' \
  "$(bench_fmt %.2f "$p50")" "$(bench_fmt %.2f "$p99")" "$(bench_fmt %.0f "$eps")"
