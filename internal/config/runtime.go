package config

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultGCPercent is the garbage collector's target for Tapline processes when GOGC is not
// set. Their live heaps are small next to what they allocate (the go-sdk decodes every
// JSON-RPC message through a fresh 32 KiB buffer), so at Go's default of 100 the collector
// takes a fifth of the CPU of a tool call; at 400 it runs a quarter as often, for a heap up
// to five times the live one. BenchmarkCallOverhead measured 0.5 ms less CPU per call and a
// lower p99.
const DefaultGCPercent = 400

// memoryLimitShare is the part of a container's memory limit given to the Go heap as a soft
// limit when GOMEMLIMIT is not set: the collector works harder near it instead of letting
// the larger GOGC run the process out of memory.
const memoryLimitShare = 0.9

// RuntimeSettings are the memory settings TuneRuntime applied; zero means left as it was.
type RuntimeSettings struct {
	GCPercent   int
	MemoryLimit int64
}

// TuneRuntime applies Tapline's Go runtime defaults, each only when its environment
// variable is not set: GOGC=DefaultGCPercent, and a GOMEMLIMIT of 90% of the container's
// memory limit when there is one (cgroup v2 memory.max, or v1 memory.limit_in_bytes). cmd/api
// and cmd/worker call it first thing; so do the benchmarks that stand in for them.
func TuneRuntime(getenv func(string) string) RuntimeSettings {
	return tuneRuntime(getenv, "/sys/fs/cgroup")
}

func tuneRuntime(getenv func(string) string, cgroupRoot string) RuntimeSettings {
	var s RuntimeSettings
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
		s.GCPercent = DefaultGCPercent
	}
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
