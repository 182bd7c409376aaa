// Package telemetry sets up what every Tapline process reports about itself: JSON logs with
// trace and tenant ids, OpenTelemetry traces (exported over OTLP when configured), and
// metrics through an OpenTelemetry meter served in Prometheus format at /metrics.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Config selects what Setup builds.
type Config struct {
	// ServiceName is "tapline-api" or "tapline-worker".
	ServiceName string
	// NodeName identifies the process instance.
	NodeName string
	// OTLPEndpoint, when set, exports spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT; the
	// exporter reads its other OTEL_* variables itself).
	OTLPEndpoint string
	// SpanExporter overrides the exporter (tests use an in-memory one).
	SpanExporter sdktrace.SpanExporter
}

// Providers owns the process's tracer and meter providers.
type Providers struct {
	Tracer   *sdktrace.TracerProvider
	Meter    *sdkmetric.MeterProvider
	registry *prometheus.Registry
}

// Setup builds the providers and installs them as the OpenTelemetry globals, with W3C trace
// context propagation. Spans are always created (so logs carry trace ids) even when nothing
// exports them.
func Setup(ctx context.Context, cfg Config) (*Providers, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(cfg.ServiceName), semconv.ServiceInstanceID(cfg.NodeName)))
	if err != nil {
		res = resource.Default()
	}
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporter := cfg.SpanExporter
	if exporter == nil && cfg.OTLPEndpoint != "" {
		exporter, err = otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp exporter: %w", err)
		}
	}
	if exporter != nil {
		if cfg.SpanExporter != nil {
			topts = append(topts, sdktrace.WithSyncer(exporter))
		} else {
			topts = append(topts, sdktrace.WithBatcher(exporter))
		}
	}
	tp := sdktrace.NewTracerProvider(topts...)

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExporter, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo())
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(promExporter))

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return &Providers{Tracer: tp, Meter: mp, registry: registry}, nil
}

// MetricsHandler serves every metric in Prometheus text format.
func (p *Providers) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers.
func (p *Providers) Shutdown(ctx context.Context) error {
	return errors.Join(p.Tracer.Shutdown(ctx), p.Meter.Shutdown(ctx))
}

// FlushTimeout bounds the flush of spans at exit, after the drain: a collector that hangs
// must not keep a process past its grace period, which would end it with SIGKILL instead
// of a clean exit. The manifests' grace periods leave room for it after
// TAPLINE_SHUTDOWN_TIMEOUT.
const FlushTimeout = 5 * time.Second

// Flush is Shutdown within timeout (FlushTimeout at exit); spans not exported by then are
// dropped.
func (p *Providers) Flush(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Shutdown(ctx)
}
