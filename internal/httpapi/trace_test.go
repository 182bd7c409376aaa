package httpapi_test

import (
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tapline/tapline/internal/mcptest"
	"github.com/tapline/tapline/internal/telemetry/telemetrytest"
)

// TestToolCallTraceSpansEveryHop follows one tool call in the traces: the REST request,
// the command through Redis, the worker that receives it, the MCP request and the HTTP
// request to the target, all one trace with each hop the child of the one before.
//
// It installs the process's global OpenTelemetry providers, so it does not run in parallel;
// other tests' spans land in the exporter too and are filtered out by trace id.
func TestToolCallTraceSpansEveryHop(t *testing.T) {
	exp := telemetrytest.Spans(t)

	c := liveCluster(t) // after Setup, so Redis commands are traced too
	target := mcptest.NewStatefulServer(t, nil)
	n := c.node(t)
	c.worker(t)
	r := n.call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{"target": map[string]any{"url": target.URL()}})
	if r.status != 201 {
		t.Fatalf("create = %d %s", r.status, r.raw)
	}
	id := r.body["id"].(string)
	eventually(t, 20*time.Second, "session ready", func() bool {
		return n.call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil).body["status"] == "ready"
	})
	r = n.call(t, "POST", "/v1/sessions/"+id+"/calls?wait=10", c.a.Secret, map[string]any{"name": "echo", "arguments": map[string]any{"text": "traced"}})
	if r.status != 200 {
		t.Fatalf("call = %d %s", r.status, r.raw)
	}

	byName := func(spans []sdktrace.ReadOnlySpan, name string, tid trace.TraceID) sdktrace.ReadOnlySpan {
		for _, s := range spans {
			if s.Name() == name && (!tid.IsValid() || s.SpanContext().TraceID() == tid) {
				return s
			}
		}
		return nil
	}
	var server, command, worker, mcpCall, mcpHTTP sdktrace.ReadOnlySpan
	eventually(t, 10*time.Second, "the call's spans", func() bool {
		spans := exp.GetSpans().Snapshots()
		server = nil
		for _, s := range spans {
			if s.Name() == "POST /v1/sessions/:id/calls" && s.SpanKind() == trace.SpanKindServer {
				server = s
			}
		}
		if server == nil {
			return false
		}
		tid := server.SpanContext().TraceID()
		command = byName(spans, "command call", tid)
		worker = byName(spans, "worker call", tid)
		mcpCall = byName(spans, "mcp tools/call", tid)
		mcpHTTP = byName(spans, "mcp http POST", tid)
		return command != nil && worker != nil && mcpCall != nil && mcpHTTP != nil
	})
	chain := []sdktrace.ReadOnlySpan{server, command, worker, mcpCall, mcpHTTP}
	for i := 1; i < len(chain); i++ {
		if chain[i].Parent().SpanID() != chain[i-1].SpanContext().SpanID() {
			t.Errorf("%q's parent is not %q", chain[i].Name(), chain[i-1].Name())
		}
	}
	// The command went through Redis inside the command span.
	var redisHop bool
	for _, s := range exp.GetSpans().Snapshots() {
		if s.SpanContext().TraceID() == server.SpanContext().TraceID() && s.Parent().SpanID() == command.SpanContext().SpanID() &&
			(strings.Contains(strings.ToLower(s.Name()), "xadd") || strings.Contains(s.Name(), "pipeline")) {
			redisHop = true
		}
	}
	if !redisHop {
		var names []string
		for _, s := range exp.GetSpans().Snapshots() {
			if s.SpanContext().TraceID() == server.SpanContext().TraceID() {
				names = append(names, s.Name())
			}
		}
		t.Errorf("no Redis span under the command; spans in the trace: %v", names)
	}
	for _, s := range chain {
		if s.EndTime().IsZero() {
			t.Errorf("%q did not end", s.Name())
		}
	}
}
