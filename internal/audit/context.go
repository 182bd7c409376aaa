package audit

import "context"

// RequestMeta is where a request came from. The api's middleware puts it in the request
// context; Record copies it into the event.
type RequestMeta struct {
	ClientIP  string
	UserAgent string
	RequestID string
}

type metaKey struct{}

type actorKey struct{}

// WithRequestMeta returns a context carrying m.
func WithRequestMeta(ctx context.Context, m RequestMeta) context.Context {
	return context.WithValue(ctx, metaKey{}, m)
}

// RequestMetaFrom returns the context's request metadata (zero outside a request).
func RequestMetaFrom(ctx context.Context) RequestMeta {
	m, _ := ctx.Value(metaKey{}).(RequestMeta)
	return m
}

// WithActor returns a context whose events are recorded as a's.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the context's actor, or SystemActor("tapline") when there is none.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok && a != (Actor{}) {
		return a
	}
	return SystemActor("tapline")
}
