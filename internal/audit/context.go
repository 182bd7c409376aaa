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

type retryKey struct{}

// WithRetryKey returns a context whose events are the same events on every attempt of one
// request: key names the request across its retries (the api derives it from the caller,
// the request and its Idempotency-Key). Record then gives an event an id that is a function
// of key and of the event, and a second event with that id is not appended: a retry that
// records what the first attempt already recorded leaves one entry, whichever api pod runs
// it. An empty key changes nothing.
func WithRetryKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, retryKey{}, key)
}

// RetryKeyFrom returns the context's retry key ("" when there is none).
func RetryKeyFrom(ctx context.Context) string {
	k, _ := ctx.Value(retryKey{}).(string)
	return k
}
