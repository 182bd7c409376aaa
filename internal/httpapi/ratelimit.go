package httpapi

import (
	"context"
	"crypto/sha256"
	"fmt"
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
// authentication, so unauthenticated requests are refused before they cost a Redis call;
// when authentication already ran the tenant's check alongside (speculativeLimit), its
// outcome is used.
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
type tenantHints struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]string
}

// maxTenantHints bounds the memory hints take; past it they start over.
const maxTenantHints = 10000

func tokenDigest(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

func (h *tenantHints) get(k [sha256.Size]byte) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.m[k]
	return t, ok
}

func (h *tenantHints) put(k [sha256.Size]byte, tenantID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxTenantHints {
		h.m = make(map[[sha256.Size]byte]string)
	}
	h.m[k] = tenantID
}

func (h *tenantHints) forget(k [sha256.Size]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, k)
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
