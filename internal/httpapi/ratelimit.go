package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/ratelimit"
)

// rateLimitMiddleware counts each authenticated request against its tenant's limit, and
// each token exchange against its client address, and answers 429 with Retry-After past
// them. Tenants share nothing: one tenant's burst never slows another. It runs after
// authentication, so unauthenticated requests are refused before they cost a Redis call.
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
		res, err := s.cfg.RateLimiter.Allow(req.Context(), key, lim)
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
