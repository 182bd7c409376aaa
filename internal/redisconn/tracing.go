package redisconn

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// instrument adds tracing to c: redisotel's span per command, and pipelineSpans' span per
// pipeline. Neither records arguments: they hold event payloads and tenant data, which must
// not leak into a tracing backend. Recording the caller costs a stack walk per command and
// is off too.
//
// redisotel's own pipeline hook is switched off (WithCommandsFilter): it formats every
// argument of every command into one string before it checks WithDBStatement. For the
// persister's PUBLISH pipelines that is a copy of every event payload: 9% of the worker's CPU
// in a flood (BenchmarkPersistVsCopy), and garbage the collector then has to chase.
func instrument(c redis.UniversalClient) error {
	if err := redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false),
		redisotel.WithCommandsFilter(func([]redis.Cmder) bool { return true })); err != nil {
		return err
	}
	tracer := otel.Tracer("github.com/tapline/tapline/internal/redisconn")
	switch c := c.(type) {
	case *redis.Client:
		c.AddHook(newPipelineSpans(tracer, c.Options().Addr))
	case *redis.ClusterClient:
		c.OnNewNode(func(node *redis.Client) { node.AddHook(newPipelineSpans(tracer, node.Options().Addr)) })
	}
	return nil
}

// pipelineSpans traces each pipeline with a client span named after its commands
// ("redis.pipeline get evalsha"), as redisotel names them, carrying the server's address and
// the number of commands. Pipelines redisotel would not trace (AUTH, HELLO and the like)
// are not traced here either.
type pipelineSpans struct {
	tracer trace.Tracer
	attrs  []attribute.KeyValue
}

func newPipelineSpans(tracer trace.Tracer, addr string) *pipelineSpans {
	attrs := []attribute.KeyValue{attribute.String("db.system", "redis")}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		attrs = append(attrs, attribute.String("server.address", host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		}
	}
	return &pipelineSpans{tracer: tracer, attrs: attrs}
}

func (h *pipelineSpans) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *pipelineSpans) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *pipelineSpans) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, redisotel.DefaultCommandFilter) {
			return next(ctx, cmds)
		}
		ctx, span := h.tracer.Start(ctx, "redis.pipeline "+pipelineSummary(cmds), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(h.attrs...), trace.WithAttributes(attribute.Int("db.redis.num_cmd", len(cmds))))
		defer span.End()
		err := next(ctx, cmds)
		if err != nil && !errors.Is(err, redis.Nil) {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return err
	}
}

// pipelineSummary names the distinct commands of a pipeline, in order, at most ten.
func pipelineSummary(cmds []redis.Cmder) string {
	const most = 10
	names := make([]string, 0, min(len(cmds), most))
	for _, cmd := range cmds {
		if len(names) == most {
			break
		}
		if name := cmd.FullName(); !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return strings.Join(names, " ")
}
