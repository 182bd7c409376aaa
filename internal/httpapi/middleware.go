package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/telemetry"
)

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recoverMiddleware turns a handler panic into a logged 500 instead of a dropped connection.
func (s *Server) recoverMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		return next(c)
	}
}

// tracingMiddleware starts a server span per request, continuing the caller's trace.
func tracingMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	tracer := otel.Tracer("github.com/tapline/tapline/internal/httpapi")
	return func(c echo.Context) error {
		req := c.Request()
		if req.URL.Path == "/healthz" || req.URL.Path == "/readyz" || req.URL.Path == "/metrics" {
			return next(c)
		}
		ctx := otel.GetTextMapPropagator().Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		ctx, span := tracer.Start(ctx, req.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", req.Method), attribute.String("http.route", route)))
		defer span.End()
		c.SetRequest(req.WithContext(ctx))
		err := next(c)
		status := c.Response().Status
		if err != nil {
			status = problemFor(err).Status
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		return err
	}
}

// logMiddleware logs one line per request with its tenant, request and trace ids.
func (s *Server) logMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		rid := c.Response().Header().Get(echo.HeaderXRequestID)
		c.SetRequest(req.WithContext(telemetry.WithLogAttrs(req.Context(), slog.String("request_id", rid))))
		err := next(c)
		if err != nil {
			// Let the error handler write the response now so the status is known.
			c.Error(err)
		}
		req = c.Request()
		if req.URL.Path == "/healthz" || req.URL.Path == "/metrics" {
			return nil
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		instruments.requestSeconds.Record(req.Context(), time.Since(start).Seconds(), metric.WithAttributes(
			attribute.String("http.route", route), attribute.String("http.request.method", req.Method),
			attribute.Int("http.response.status_code", c.Response().Status)))
		lvl := slog.LevelInfo
		if c.Response().Status >= 500 {
			lvl = slog.LevelWarn
		}
		s.logger.LogAttrs(req.Context(), lvl, "request",
			slog.String("method", req.Method), slog.String("route", c.Path()), slog.String("path", req.URL.Path),
			slog.Int("status", c.Response().Status), slog.Int64("bytes", c.Response().Size),
			slog.Duration("duration", time.Since(start)))
		return nil
	}
}

// securityHeaders sets conservative headers on every response.
func securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		return next(c)
	}
}

// publicPaths need no credentials.
func publicPath(path string) bool {
	return !strings.HasPrefix(path, "/v1/") || path == "/v1/auth/token"
}

// authMiddleware resolves the bearer token to a principal for every /v1 route. Failed
// authentications are charged to the client address, and an address past its budget is
// refused before its credential is looked up (see refuseThrottled).
func (s *Server) authMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if publicPath(req.URL.Path) {
			return next(c)
		}
		token, ok := bearerToken(req)
		if !ok {
			return fmt.Errorf("%w: missing bearer token", auth.ErrUnauthenticated)
		}
		digest := tokenDigest(token)
		if err := s.refuseThrottled(c, digest); err != nil {
			return err
		}
		ctx, spec := s.prefetch(req.Context(), token)
		if spec == nil {
			spec = s.speculate(ctx, digest)
		}
		p, err := s.cfg.Auth.Authenticate(ctx, token)
		if spec != nil {
			<-spec.done
		}
		if err != nil {
			s.hints.forget(digest)
			if failures := s.authFailureKey(c); errors.Is(err, auth.ErrUnauthenticated) && failures != "" {
				if lerr := s.chargeAuthFailure(req.Context(), failures); lerr != nil {
					return lerr
				}
			}
			return err
		}
		s.hints.put(digest, p.TenantID)
		ctx = withBearer(auth.WithPrincipal(req.Context(), p), token)
		if spec != nil && spec.tenantID == p.TenantID {
			ctx = context.WithValue(ctx, speculativeKey{}, spec)
		}
		ctx = telemetry.WithLogAttrs(ctx, slog.String("tenant_id", p.TenantID), slog.String("principal", p.ID()))
		trace.SpanFromContext(ctx).SetAttributes(attribute.String("tenant.id", p.TenantID))
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}

func bearerToken(req *http.Request) (string, bool) {
	h := req.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
