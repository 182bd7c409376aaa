# shellcheck shell=bash
# Helpers for the benchmark scripts in bench/. Sourced, never executed.

bench_log() { printf '%s\n' "$*" >&2; }

# bench_metrics FILE... prints one line "name unit median runs" per benchmark metric found in
# `go test -bench` output, the median taken over every run (-count) of that benchmark. Names
# lose their -GOMAXPROCS suffix.
bench_metrics() {
  awk '
    /^Benchmark/ {
      name = $1; sub(/-[0-9]+$/, "", name)
      for (i = 3; i + 1 <= NF; i += 2) {
        key = name SUBSEP $(i + 1)
        if (!(key in n)) order[++keys] = key
        v[key, ++n[key]] = $i + 0
      }
    }
    END {
      for (k = 1; k <= keys; k++) {
        key = order[k]; c = n[key]
        for (i = 1; i <= c; i++) a[i] = v[key, i]
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        m = (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
        split(key, parts, SUBSEP)
        printf "%s %s %.6g %d\n", parts[1], parts[2], m, c
      }
    }' "$@"
}

# bench_get METRICS NAME UNIT prints the median of one metric from bench_metrics output, or
# fails naming what is missing.
bench_get() {
  awk -v n="$2" -v u="$3" '$1 == n && $2 == u { print $3; found = 1 } END { exit !found }' "$1" ||
    { bench_log "bench: no $3 from $2 in $1"; return 1; }
}

# bench_fmt FORMAT VALUE prints VALUE with a printf format (awk, so "1e+06" reads fine).
bench_fmt() { awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'; }

# bench_raise_nofile raises the open-files limit to its hard limit: the scale benchmarks hold
# thousands of loopback connections.
bench_raise_nofile() {
  local hard
  hard=$(ulimit -Hn)
  if [ "$hard" = unlimited ]; then hard=1048576; fi
  ulimit -n "$hard" 2>/dev/null || true
}
