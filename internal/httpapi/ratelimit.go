package httpapi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/ratelimit"
)

// rateLimitMiddleware counts each authenticated request against its tenant's limit, and
// each token exchange against its client address (an IPv6 client by its /64, see
// ratelimit.Limiter.AddressKey), and answers 429 with Retry-After past
// them. Tenants share nothing: one tenant's burst never slows another. It runs after
// authentication, so unauthenticated requests are refused before they cost a tenant's
// budget (their own cost is limited by authMiddleware, see chargeAuthFailure); when
// authentication already ran the tenant's check alongside (speculativeLimit), its outcome
// is used.
func (s *Server) rateLimitMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.RateLimiter == nil {
			return next(c)
		}
		req := c.Request()
		var key string
		var lim ratelimit.Limit
		if req.URL.Path == "/v1/auth/token" {
			key, lim = s.cfg.RateLimiter.AddressKey("token", c.RealIP()), s.cfg.TokenRate
		} else if p, ok := auth.FromContext(req.Context()); ok {
			key, lim = s.cfg.RateLimiter.TenantKey(p.TenantID), s.cfg.TenantRate
		}
		if key == "" || !lim.Enabled() {
			return next(c)
		}
		var res ratelimit.Result
		var err error
		if spec, ok := req.Context().Value(speculativeKey{}).(*speculativeLimit); ok && spec.key == key {
			res, err = spec.res, spec.err
		} else {
			res, err = s.cfg.RateLimiter.Allow(req.Context(), key, lim)
		}
		if err != nil {
			return err
		}
		if !res.Allowed {
			scope := "tenant"
			if req.URL.Path == "/v1/auth/token" {
				scope = "address"
			}
			instruments.rateLimited.Add(req.Context(), 1, metric.WithAttributes(attribute.String("scope", scope)))
			return tooManyRequests(res.RetryAfter)
		}
		return next(c)
	}
}

// tooManyRequests is a 429 whose Retry-After (whole seconds, at least 1) is when the next
// request will be allowed.
func tooManyRequests(retryAfter time.Duration) *Problem {
	secs := max(1, int(math.Ceil(retryAfter.Seconds())))
	p := newProblem(http.StatusTooManyRequests, "rate-limited", "Too many requests",
		fmt.Sprintf("the rate limit is exceeded; retry in %d s", secs))
	p.retryAfter = secs
	return p
}

// A token's tenant is known only once the token is verified, a database read for an API key;
// the tenant's rate-limit check, a Redis call, would wait for it. tenantHints remembers the
// tenant each token authenticated as in this process, so the check of a token seen before
// runs while it is verified again. A token that then fails verification (revoked, expired)
// is forgotten at once: it charges its former tenant at most one request per api process,
// and tokens never verified here charge nobody, as before.
type tenantHints = boundedMap[[sha256.Size]byte, string]

// maxTenantHints bounds the memory hints take; past it they start over.
const maxTenantHints = 10000

func tokenDigest(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// boundedMap is a map for many goroutines that holds at most max entries: a put into a full
// map first drops the entries lapsed says may go, and starts over if that is not enough.
type boundedMap[K comparable, V any] struct {
	mu     sync.Mutex
	m      map[K]V
	max    int
	lapsed func(V) bool // nil: none lapses
}

func (b *boundedMap[K, V]) get(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	return v, ok
}

func (b *boundedMap[K, V]) put(k K, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= b.max && b.lapsed != nil {
		maps.DeleteFunc(b.m, func(_ K, v V) bool { return b.lapsed(v) })
	}
	if b.m == nil || len(b.m) >= b.max {
		b.m = make(map[K]V)
	}
	b.m[k] = v
}

func (b *boundedMap[K, V]) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

func (b *boundedMap[K, V]) forget(k K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}

// speculativeLimit is a tenant's rate-limit check started before the request's token was
// verified; done closes when res and err are set.
type speculativeLimit struct {
	tenantID string
	key      string
	done     chan struct{}
	res      ratelimit.Result
	err      error
}

type speculativeKey struct{}

// prefetch runs, in one Redis round trip, the two reads a request with a cached API key
// needs before its handler: its tenant's auth stamp (auth.Authenticator.Prefetch) and the
// tenant's rate-limit check, both in the tenant's hash slot. It returns ctx carrying the
// stamp and the check as a finished speculativeLimit, or ctx and nil when the token's key
// is not cached.
func (s *Server) prefetch(ctx context.Context, token string) (context.Context, *speculativeLimit) {
	if s.cfg.Redis == nil || s.cfg.RateLimiter == nil || !s.cfg.TenantRate.Enabled() {
		return ctx, nil
	}
	pipe := s.cfg.Redis.Pipeline()
	tenantID, withStamp, ok := s.cfg.Auth.Prefetch(ctx, pipe, token)
	if !ok {
		return ctx, nil
	}
	spec := &speculativeLimit{tenantID: tenantID, key: s.cfg.RateLimiter.TenantKey(tenantID), done: make(chan struct{})}
	read := s.cfg.RateLimiter.Queue(ctx, pipe, spec.key, s.cfg.TenantRate)
	_, _ = pipe.Exec(ctx) // each command's error reaches its reader
	spec.res, spec.err = read()
	close(spec.done)
	return withStamp(ctx), spec
}

// speculate starts the rate-limit check of the tenant a token belonged to when last seen,
// or returns nil when there is no such tenant or no tenant limit.
func (s *Server) speculate(ctx context.Context, digest [sha256.Size]byte) *speculativeLimit {
	if s.cfg.RateLimiter == nil || !s.cfg.TenantRate.Enabled() {
		return nil
	}
	tenantID, ok := s.hints.get(digest)
	if !ok {
		return nil
	}
	spec := &speculativeLimit{tenantID: tenantID, key: s.cfg.RateLimiter.TenantKey(tenantID), done: make(chan struct{})}
	go func() {
		defer close(spec.done)
		spec.res, spec.err = s.cfg.RateLimiter.Allow(ctx, spec.key, s.cfg.TenantRate)
	}()
	return spec
}

// authFailureOp names the per-address budget of failed authentications.
const authFailureOp = "auth-failure"

// A failed authentication costs what a successful one does (a read of the key's index
// entry, a JWT's signature and, for one minted from a key, the key again) and is answered
// at once, so a client could try credentials as fast as it can send them. Each failure is
// charged to its client address's budget in Redis (Config.AuthFailureRate, an IPv6 client
// counted by its /64, as the token exchange counts it); a success is not, so the hot path
// makes no Redis call for it. Once Redis refuses a failure, the process remembers the
// address as throttled until the budget allows the next one, and refuses the address's
// requests with 429 before their credentials are looked up, without asking Redis. Other api
// processes learn the same from their own first refused failure.
//
// A credential this process has already accepted (tenantHints) is still looked up and
// served from a throttled address: guesses from one client behind a shared address (a NAT,
// a proxy) do not lock out the others whose credentials work. Any other credential from a
// throttled address, valid or not, gets 429 until the budget allows another try.

// authFailureKey is the failure budget key of the request's client address, or "" when
// failed authentications are not limited.
func (s *Server) authFailureKey(c echo.Context) string {
	if s.cfg.RateLimiter == nil || !s.cfg.AuthFailureRate.Enabled() {
		return ""
	}
	return s.cfg.RateLimiter.AddressKey(authFailureOp, c.RealIP())
}

// refuseThrottled answers 429 to a request from a throttled address whose token, by its
// digest, this process has not accepted before; nil lets the request be authenticated. While
// no address is throttled, it does not even read the request's address.
func (s *Server) refuseThrottled(c echo.Context, digest [sha256.Size]byte) error {
	if s.throttled.until.len() == 0 {
		return nil
	}
	key := s.authFailureKey(c)
	if key == "" {
		return nil
	}
	ctx := c.Request().Context()
	wait, throttled := s.throttled.get(key, time.Now())
	if !throttled {
		return nil
	}
	if _, known := s.hints.get(digest); known {
		return nil
	}
	instruments.rateLimited.Add(ctx, 1, metric.WithAttributes(attribute.String("scope", authFailureOp)))
	return tooManyRequests(wait)
}

// chargeAuthFailure counts one failed authentication against key. Past the budget it
// remembers the address as throttled and returns the 429 to answer instead of the 401. A
// Redis error is returned, as the other limits return theirs: Redis away fails requests
// with bad credentials, never those with good ones, which do not come here.
func (s *Server) chargeAuthFailure(ctx context.Context, key string) error {
	res, err := s.cfg.RateLimiter.Allow(ctx, key, s.cfg.AuthFailureRate)
	if err != nil {
		return err
	}
	if res.Allowed {
		return nil
	}
	s.throttled.put(key, time.Now().Add(res.RetryAfter))
	instruments.rateLimited.Add(ctx, 1, metric.WithAttributes(attribute.String("scope", authFailureOp)))
	return tooManyRequests(res.RetryAfter)
}

// throttledAddrs remembers, per failure budget key, until when the address is past its
// budget of failed authentications. Past maxThrottledAddrs, lapsed entries are dropped, and if
// that is not enough it starts over (each address is then one refused failure away from being
// remembered again).
type throttledAddrs struct {
	until boundedMap[string, time.Time]
}

const maxThrottledAddrs = 10000

func (t *throttledAddrs) init() {
	t.until.max = maxThrottledAddrs
	t.until.lapsed = func(until time.Time) bool { return !time.Now().Before(until) }
}

// get returns how long key stays throttled, and whether it is throttled at now.
func (t *throttledAddrs) get(key string, now time.Time) (time.Duration, bool) {
	until, ok := t.until.get(key)
	if !ok || !now.Before(until) {
		return 0, false
	}
	return until.Sub(now), true
}

func (t *throttledAddrs) put(key string, until time.Time) { t.until.put(key, until) }
