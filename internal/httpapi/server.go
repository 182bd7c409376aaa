// Package httpapi is Tapline's HTTP surface: the echo server, the handlers that implement the
// strict interface generated from openapi.yaml (one file per resource), the middleware chain
// and the single place where errors become application/problem+json.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/ratelimit"
	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/telemetry"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
	"github.com/tapline/tapline/web"
)

// Config holds what the API needs.
type Config struct {
	// Logger receives request and error logs. nil discards.
	Logger *slog.Logger
	// Pool and Redis are checked by /readyz.
	Pool  *pgxpool.Pool
	Redis redis.UniversalClient
	// Tenants stores tenants, members and keys.
	Tenants *tenant.Store
	// Auth verifies bearer tokens.
	Auth *auth.Authenticator
	// Tokens issues and verifies browser JWTs (POST /v1/auth/token); nil disables the
	// exchange.
	Tokens *auth.TokenService
	// Audit records and reads the audit log. Defaults to a Recorder on Pool.
	Audit *audit.Recorder
	// TrustedProxies are the addresses of reverse proxies whose X-Forwarded-For names the
	// client (audit, per-address rate limits). Empty: the peer address is the client.
	TrustedProxies []netip.Prefix
	// RateLimiter enforces TenantRate on each tenant's requests, TokenRate per client
	// address on POST /v1/auth/token and AuthFailureRate on each client address's failed
	// authentications; nil turns rate limiting off.
	RateLimiter     *ratelimit.Limiter
	TenantRate      ratelimit.Limit
	TokenRate       ratelimit.Limit
	AuthFailureRate ratelimit.Limit
	// Metrics serves /metrics; nil leaves the route out.
	Metrics http.Handler
	// MetricsToken, when set, is the bearer token /metrics requires (401 without it);
	// empty leaves /metrics open.
	MetricsToken string
	// Spec is openapi.yaml's text, served at /openapi.yaml.
	Spec []byte
	// BodyLimit caps request bodies. Defaults to "1M".
	BodyLimit string
	// Inspector serves the /v1/sessions endpoints; nil answers them 501.
	Inspector *inspector.Service
	// Tracker backs Idempotency-Key handling across api nodes, and Keys seals the responses
	// it keeps for replays (they may carry a secret shown once); Idempotency-Key handling is
	// off unless both are set. cmd/api passes the TAPLINE_SECRET_KEY keyring.
	Tracker *tracker.Tracker
	Keys    *secretbox.Keyring
	// IdempotencyWait is how long a retry waits for the first request with its
	// Idempotency-Key to finish before answering 409. Defaults to 20s.
	IdempotencyWait time.Duration
	// Draining, once closed, ends long-lived responses (SSE streams), so the http.Server's
	// Shutdown need not wait for them; clients resume elsewhere with Last-Event-ID.
	Draining <-chan struct{}
}

// Server implements apigen.StrictServerInterface.
type Server struct {
	cfg             Config
	logger          *slog.Logger
	idempotencyWait time.Duration
	hints           tenantHints
	throttled       throttledAddrs
}

var _ apigen.StrictServerInterface = (*Server)(nil)

// New builds the echo application with every route and middleware.
func New(cfg *Config) (*echo.Echo, error) {
	if cfg == nil || cfg.Pool == nil || cfg.Redis == nil || cfg.Tenants == nil || cfg.Auth == nil {
		return nil, errors.New("httpapi: Pool, Redis, Tenants and Auth are required")
	}
	s := &Server{cfg: *cfg, logger: cfg.Logger, idempotencyWait: cmp.Or(cfg.IdempotencyWait, defaultIdempotencyWait)}
	s.hints.max = maxTenantHints
	s.throttled.init()
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.cfg.BodyLimit == "" {
		s.cfg.BodyLimit = "1M"
	}
	if s.cfg.Audit == nil {
		s.cfg.Audit = audit.NewRecorder(cfg.Pool, nil)
	}
	ops, err := newOperations()
	if err != nil {
		return nil, err
	}
	validator := &specValidator{ops: ops}
	gate, err := newRoleGate(ops)
	if err != nil {
		return nil, err
	}

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.IPExtractor = clientIPExtractor(s.cfg.TrustedProxies)
	e.Use(s.recoverMiddleware)
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		Generator: newRequestID,
		// Accept a caller's id only when it is short and plain, so logs stay clean.
		RequestIDHandler: func(echo.Context, string) {},
	}))
	e.Use(tracingMiddleware)
	e.Use(s.logMiddleware)
	e.Use(middleware.BodyLimit(s.cfg.BodyLimit))
	e.Use(securityHeaders)
	e.Use(s.authMiddleware)
	e.Use(s.auditMiddleware)
	e.Use(s.rateLimitMiddleware)
	e.Use(gate.middleware)
	e.Use(validator.middleware)
	e.Use(s.idempotencyMiddleware)

	apigen.RegisterHandlers(e, apigen.NewStrictHandler(s, nil))
	if err := ops.checkRoutes(e); err != nil {
		return nil, err
	}
	// The pages outside the API answer HEAD as they answer GET, without the body, so a
	// monitor's or a user's `curl -I` sees them up.
	page := func(path string, h echo.HandlerFunc) { e.Match([]string{http.MethodGet, http.MethodHead}, path, h) }
	if cfg.Metrics != nil {
		page("/metrics", echo.WrapHandler(telemetry.MetricsAuth(cfg.MetricsToken, cfg.Metrics)))
	}
	docs, err := newAPIDocs()
	if err != nil {
		return nil, err
	}
	page("/docs", docs.serve)
	page("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", s.cfg.Spec)
	})
	// The web inspector: embedded files with a strict CSP, no build step.
	inspectorUI := echo.WrapHandler(web.Handler())
	page("/", inspectorUI)
	page("/index.html", inspectorUI)
	page("/assets/*", inspectorUI)
	return e, nil
}

// GetHealthz answers as long as the process serves requests.
func (s *Server) GetHealthz(context.Context, apigen.GetHealthzRequestObject) (apigen.GetHealthzResponseObject, error) {
	return apigen.GetHealthz200JSONResponse{Status: apigen.HealthStatusOk}, nil
}

// GetReadyz checks PostgreSQL and Redis, each within a second.
func (s *Server) GetReadyz(ctx context.Context, _ apigen.GetReadyzRequestObject) (apigen.GetReadyzResponseObject, error) {
	checks := map[string]string{"postgres": "ok", "redis": "ok"}
	ready := true
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.cfg.Pool.Ping(pctx); err != nil {
		checks["postgres"], ready = "unreachable", false
	}
	rctx, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if err := redisconn.Ping(rctx, s.cfg.Redis); err != nil {
		checks["redis"], ready = "unreachable", false
	}
	if !ready {
		return apigen.GetReadyz503JSONResponse{
			Body:    apigen.Readiness{Status: apigen.ReadinessStatusUnavailable, Checks: checks},
			Headers: apigen.GetReadyz503ResponseHeaders{RetryAfter: 5},
		}, nil
	}
	return apigen.GetReadyz200JSONResponse{Status: apigen.ReadinessStatusReady, Checks: checks}, nil
}
