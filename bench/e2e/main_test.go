package e2e

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/dbtest"
)

// roleEnv makes the test binary, started again by a benchmark, serve one role of a
// multi-process benchmark (see child_test.go) instead of running tests.
const roleEnv = "TAPLINE_BENCH_ROLE"

func TestMain(m *testing.M) {
	// The benchmarks and their child processes stand in for cmd/api and cmd/worker, and run
	// with their runtime settings.
	config.TuneRuntime(os.Getenv)
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runChild(role))
	}
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
