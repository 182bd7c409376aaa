package config

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestTuneRuntime(t *testing.T) {
	prevGC := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(prevGC)
		debug.SetMemoryLimit(prevLimit)
	})
	cgroup := func(files map[string]string) string {
		root := t.TempDir()
		for name, body := range files {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, tc := range []struct {
		name  string
		env   map[string]string
		files map[string]string
		want  RuntimeSettings
	}{
		{"No container limit", nil, map[string]string{"memory.max": "max\n"}, RuntimeSettings{GOGC: "100"}},
		{"Cgroup v2 limit", nil, map[string]string{"memory.max": "1073741824\n"}, RuntimeSettings{GOGC: "100", MemoryLimit: 966367641}},
		{"Cgroup v1 limit", nil, map[string]string{"memory/memory.limit_in_bytes": "2147483648\n"}, RuntimeSettings{GOGC: "100", MemoryLimit: 1932735283}},
		{"Cgroup v1 without a limit", nil, map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, RuntimeSettings{GOGC: "100"}},
		{"No cgroup files", nil, nil, RuntimeSettings{GOGC: "100"}},
		{"Operator's setting wins", map[string]string{"GOMEMLIMIT": "512MiB"}, map[string]string{"memory.max": "1073741824"}, RuntimeSettings{GOGC: "100"}},
		{"Operator's GOGC is reported", map[string]string{"GOGC": "150"}, nil, RuntimeSettings{GOGC: "150"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			got := tuneRuntime(env(tc.env), cgroup(tc.files))
			if got != tc.want {
				t.Fatalf("settings %+v, want %+v", got, tc.want)
			}
			// GOGC stays Go's (see TuneRuntime).
			if gc := debug.SetGCPercent(100); gc != 100 {
				t.Fatalf("GC percent %d, want 100", gc)
			}
			wantLimit := tc.want.MemoryLimit
			if wantLimit == 0 {
				wantLimit = math.MaxInt64
			}
			if limit := debug.SetMemoryLimit(-1); limit != wantLimit {
				t.Fatalf("memory limit %d, want %d", limit, wantLimit)
			}
		})
	}
}
