package httpapi

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// httpMetrics are the API's instruments; with no meter provider installed they are no-ops.
type httpMetrics struct {
	requestSeconds metric.Float64Histogram
	rateLimited    metric.Int64Counter
}

var instruments = func() *httpMetrics { //nolint:gochecknoglobals // instruments are process-wide
	m := otel.Meter("github.com/tapline/tapline/internal/httpapi")
	out := &httpMetrics{}
	out.requestSeconds, _ = m.Float64Histogram("tapline_http_request_seconds", metric.WithUnit("s"),
		metric.WithDescription("API request latency by route and status."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
	out.rateLimited, _ = m.Int64Counter("tapline_rate_limit_rejections", metric.WithDescription("Requests refused with 429."))
	return out
}()
