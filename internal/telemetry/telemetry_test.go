package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Flush gives up on a collector that does not answer once its timeout has passed, so a
// process's exit is bounded by it rather than by the exporter's own timeouts and retries
// (10 s per attempt, retried for a minute by default).
func TestFlushIsBoundedWhenTheCollectorHangs(t *testing.T) {
	hung := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hung)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	p, err := Setup(context.Background(), Config{ServiceName: "flush-test", NodeName: "n1", OTLPEndpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer.Tracer("test").Start(context.Background(), "exported at exit")
	span.End()

	const timeout = 300 * time.Millisecond
	start := time.Now()
	if err := p.Flush(timeout); err == nil {
		t.Error("Flush to a collector that never answers reported success")
	}
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("Flush took %v with a %v timeout", took, timeout)
	}
}
