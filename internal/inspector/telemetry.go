package inspector

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// tracer and the instruments below use the global providers that cmd/api and cmd/worker
// install (telemetry.Setup); without them they are no-ops.
var tracer = otel.Tracer("github.com/tapline/tapline/internal/inspector") //nolint:gochecknoglobals // otel convention

// metrics are the inspector's instruments.
type metrics struct {
	sessionsHeld   metric.Int64UpDownCounter
	eventsStored   metric.Int64Counter
	batchSeconds   metric.Float64Histogram
	commandSeconds metric.Float64Histogram
	takeovers      metric.Int64Counter
	sseSubscribers metric.Int64UpDownCounter
}

func newMetrics() *metrics {
	m := otel.Meter("github.com/tapline/tapline/internal/inspector")
	out := &metrics{}
	out.sessionsHeld, _ = m.Int64UpDownCounter("tapline_sessions_live", metric.WithDescription("Sessions this worker holds a connection for."))
	out.eventsStored, _ = m.Int64Counter("tapline_events_persisted", metric.WithDescription("Events committed to PostgreSQL and published."))
	out.batchSeconds, _ = m.Float64Histogram("tapline_persist_batch_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time to commit one batch of events."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
	out.commandSeconds, _ = m.Float64Histogram("tapline_command_seconds", metric.WithUnit("s"),
		metric.WithDescription("Round trip of a synchronous api → worker command."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 15))
	out.takeovers, _ = m.Int64Counter("tapline_lease_takeovers", metric.WithDescription("Sessions adopted from another worker."))
	out.sseSubscribers, _ = m.Int64UpDownCounter("tapline_sse_subscribers", metric.WithDescription("Live event followers on this api process."))
	return out
}

var instruments = newMetrics() //nolint:gochecknoglobals // instruments are process-wide

func addSessions(ctx context.Context, n int64) { instruments.sessionsHeld.Add(ctx, n) }
