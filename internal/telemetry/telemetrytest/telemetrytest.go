// Package telemetrytest gives tests and benchmarks the spans the process records.
package telemetrytest

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tapline/tapline/internal/telemetry"
)

var (
	once sync.Once
	exp  *tracetest.InMemoryExporter
	err  error
)

// Spans returns the in-memory exporter behind the process's global OpenTelemetry providers,
// installing them (telemetry.Setup, spans exported as they end) on first use. The global
// tracer provider can be installed only once: tracers handed out before go on delegating to
// the first one. So every test of the process, and every run of go test -count=N, shares
// this exporter, and a test tells its own spans apart (by trace id) or Resets it first.
func Spans(tb testing.TB) *tracetest.InMemoryExporter {
	tb.Helper()
	once.Do(func() {
		exp = tracetest.NewInMemoryExporter()
		_, err = telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "tapline-test", NodeName: "test", SpanExporter: exp})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return exp
}
