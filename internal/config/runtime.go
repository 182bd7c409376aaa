package config

import (
	"cmp"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of a container's memory limit given to the Go heap as a soft
// limit when GOMEMLIMIT is not set, so the collector works harder near the limit instead of
// letting the process be killed for going over it.
const memoryLimitShare = 0.9

// RuntimeSettings are the Go runtime's memory settings after TuneRuntime, for its log line.
type RuntimeSettings struct {
	// GOGC is the collector's setting in effect: the variable, or Go's default.
	GOGC string
	// MemoryLimit is the soft limit TuneRuntime set; zero when it left GOMEMLIMIT alone.
	MemoryLimit int64
}

// LogAttrs are s as attributes of the processes' "go runtime" log line.
func (s RuntimeSettings) LogAttrs() []slog.Attr {
	return []slog.Attr{slog.String("gogc", s.GOGC), slog.Int64("memory_limit", s.MemoryLimit)}
}

// TuneRuntime applies Tapline's Go runtime defaults: a GOMEMLIMIT of 90% of the container's
// memory limit when there is one (cgroup v2 memory.max, or v1 memory.limit_in_bytes) and
// GOMEMLIMIT is not set. cmd/api and cmd/worker call it first thing; so do the benchmarks
// that stand in for them.
//
// GOGC is left at Go's default. A larger one buys tool-call latency with memory: at
// GOGC=400, four alternating pairs of BenchmarkCallOverhead ran REST calls with a p99 0.3 to
// 1.4 ms lower and an unchanged p50. But the heap left after a full collection grew from 45
// to 73 KiB per live worker session (Tapline's limit is 64) and from 28 to 32 KiB per SSE
// subscriber (its limit is 30): with fewer collections, live objects end up spread over
// more spans. Operators who want the trade set GOGC themselves (docs/production.md).
func TuneRuntime(getenv func(string) string) RuntimeSettings {
	return tuneRuntime(getenv, "/sys/fs/cgroup")
}

func tuneRuntime(getenv func(string) string, cgroupRoot string) RuntimeSettings {
	s := RuntimeSettings{GOGC: cmp.Or(getenv("GOGC"), "100")}
	if getenv("GOMEMLIMIT") == "" {
		if limit, ok := cgroupMemoryLimit(cgroupRoot); ok {
			s.MemoryLimit = int64(float64(limit) * memoryLimitShare)
			debug.SetMemoryLimit(s.MemoryLimit)
		}
	}
	return s
}

// cgroupMemoryLimit reads the memory limit of the cgroup this process runs in, under root.
func cgroupMemoryLimit(root string) (int64, bool) {
	for _, name := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		raw, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(raw))
		n, err := strconv.ParseInt(v, 10, 64)
		// "max" (v2) and a number near 2^63 (v1) both mean no limit.
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
