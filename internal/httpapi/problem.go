package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
)

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type      string         `json:"type"`
	Title     string         `json:"title"`
	Status    int            `json:"status"`
	Detail    string         `json:"detail,omitempty"`
	Instance  string         `json:"instance,omitempty"`
	Field     string         `json:"field,omitempty"`
	Errors    []FieldProblem `json:"errors,omitempty"`
	RequestID string         `json:"request_id,omitempty"`

	// retryAfter, when positive, is sent as the Retry-After header (seconds).
	retryAfter int
	// cause is logged, never shown.
	cause error
}

// FieldProblem is one invalid input field.
type FieldProblem struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Title + ": " + p.Detail
	}
	return p.Title
}

func (p *Problem) Unwrap() error { return p.cause }

const problemTypeBase = "urn:tapline:problem:"

func newProblem(status int, slug, title, detail string) *Problem {
	return &Problem{Type: problemTypeBase + slug, Title: title, Status: status, Detail: detail}
}

// invalidInput is a 400 naming the fields at fault; the first one is also in Field.
func invalidInput(problems ...FieldProblem) *Problem {
	p := newProblem(http.StatusBadRequest, "invalid-input", "Invalid input", "")
	p.Errors = problems
	if len(problems) > 0 {
		p.Field = problems[0].Field
		p.Detail = problems[0].Field + ": " + problems[0].Reason
		if len(problems) > 1 {
			p.Detail += fmt.Sprintf(" (and %d more)", len(problems)-1)
		}
	}
	return p
}

// problemFor maps any error a handler returns to the problem the client sees. It is the one
// place that knows which domain error means which HTTP status.
func problemFor(err error) *Problem {
	var p *Problem
	var he *echo.HTTPError
	var tve *tenant.ValidationError
	var ive *inspector.ValidationError
	var refused *inspector.TargetRefusedError
	var remote *inspector.RemoteError
	var ave *audit.ValidationError
	var unverified *auth.UnverifiedEmailError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &tve):
		return invalidInput(FieldProblem{Field: tve.Field, Reason: tve.Reason})
	case errors.As(err, &ive):
		return invalidInput(FieldProblem{Field: ive.Field, Reason: ive.Reason})
	case errors.As(err, &refused):
		return targetRefused(refused)
	case errors.As(err, &remote):
		return newProblem(http.StatusBadGateway, "target-error", "The target answered with an error",
			truncate(fmt.Sprintf("JSON-RPC error %d: %s", remote.Code, remote.Message), 1024))
	case errors.Is(err, inspector.ErrTargetFailed):
		return newProblem(http.StatusBadGateway, "target-failed", "The request to the target failed", truncate(err.Error(), 1024))
	case errors.Is(err, inspector.ErrNotReady):
		return newProblem(http.StatusConflict, "not-ready", "Session not ready", err.Error())
	case errors.Is(err, inspector.ErrLiveSessionLimit):
		return newProblem(http.StatusConflict, "live-session-limit", "Live session limit reached",
			"close a session before opening another")
	case errors.Is(err, inspector.ErrConflict):
		return newProblem(http.StatusConflict, "conflict", "Conflict", err.Error())
	case errors.Is(err, inspector.ErrWorkerTimeout):
		p := newProblem(http.StatusGatewayTimeout, "worker-timeout", "The worker did not answer in time",
			"the worker holding the session did not answer in time; the target may be slow")
		p.retryAfter = 2
		p.cause = err
		return p
	case errors.Is(err, inspector.ErrNoWorker):
		p := newProblem(http.StatusGatewayTimeout, "no-worker", "No worker answered",
			"no worker answered for the session in time; retry shortly")
		p.retryAfter = 2
		p.cause = err
		return p
	case errors.As(err, &ave):
		return invalidInput(FieldProblem{Field: ave.Field, Reason: ave.Reason})
	case errors.As(err, &unverified):
		// The reason concerns only the caller's own token, so naming it tells them nothing
		// about the tenant or its members.
		return newProblem(http.StatusUnauthorized, "unauthenticated", "Unauthenticated", unverified.Reason)
	case errors.Is(err, auth.ErrUnauthenticated):
		return newProblem(http.StatusUnauthorized, "unauthenticated", "Unauthenticated",
			"send a valid API key or token as Authorization: Bearer <token>")
	case errors.Is(err, auth.ErrForbidden):
		return newProblem(http.StatusForbidden, "forbidden", "Forbidden", strings.TrimPrefix(err.Error(), auth.ErrForbidden.Error()+": "))
	case errors.Is(err, tenant.ErrRoleTooHigh):
		return newProblem(http.StatusForbidden, "forbidden", "Forbidden", "a principal cannot grant a role above its own")
	case errors.Is(err, db.ErrNotFound):
		return newProblem(http.StatusNotFound, "not-found", "Not found", "")
	case errors.Is(err, db.ErrInvalidInput):
		// The database refused a value validation let through, so the field is not known.
		p := newProblem(http.StatusBadRequest, "invalid-input", "Invalid input",
			"a value in the request cannot be stored: it holds a NUL character or bytes that are not UTF-8, or is not of the expected form")
		p.cause = err
		return p
	case errors.Is(err, db.ErrConflict), errors.Is(err, tenant.ErrLastOwner):
		return newProblem(http.StatusConflict, "conflict", "Conflict", conflictDetail(err))
	case errors.Is(err, db.ErrTransient):
		// A deadlock or serialization failure: PostgreSQL rolled the request's transaction
		// back; the request may be sent again at once (with the same Idempotency-Key).
		p := newProblem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the database rolled this request's transaction back to resolve a conflict with a concurrent one; retry")
		p.retryAfter = 1
		p.cause = err
		return p
	case errors.Is(err, db.ErrUnavailable), errors.Is(err, redisconn.ErrUnavailable), errors.Is(err, tracker.ErrUnavailable):
		p := newProblem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"a dependency is unreachable; retry shortly")
		p.retryAfter = 5
		p.cause = err
		return p
	case errors.Is(err, context.DeadlineExceeded):
		p := newProblem(http.StatusGatewayTimeout, "timeout", "Timed out", "the operation did not finish in time")
		p.cause = err
		return p
	case errors.As(err, &he):
		return problemFromEcho(he)
	}
	p = newProblem(http.StatusInternalServerError, "internal", "Internal error", "")
	p.cause = err
	return p
}

// targetRefused is the 422 for a target the SSRF guard refused, naming the field that gave it
// as a 400 names an invalid one.
func targetRefused(refused *inspector.TargetRefusedError) *Problem {
	p := newProblem(http.StatusUnprocessableEntity, "target-refused", "Target refused", refused.Reason)
	if refused.Field != "" {
		p.Field = refused.Field
		p.Errors = []FieldProblem{{Field: refused.Field, Reason: refused.Reason}}
	}
	return p
}

// truncate keeps text from outside (a target's error message) to a sane length.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func conflictDetail(err error) string {
	if errors.Is(err, tenant.ErrLastOwner) {
		return tenant.ErrLastOwner.Error()
	}
	return "the request conflicts with the current state"
}

func problemFromEcho(he *echo.HTTPError) *Problem {
	msg := fmt.Sprint(he.Message)
	switch he.Code {
	case http.StatusNotFound:
		return newProblem(http.StatusNotFound, "not-found", "Not found", "no such route")
	case http.StatusMethodNotAllowed:
		return newProblem(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed", "")
	case http.StatusRequestEntityTooLarge:
		return newProblem(http.StatusRequestEntityTooLarge, "too-large", "Request too large", "the body exceeds the limit")
	case http.StatusUnsupportedMediaType:
		return newProblem(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", "send application/json")
	case http.StatusBadRequest:
		if fp, ok := binderProblem(msg); ok {
			return invalidInput(fp)
		}
		return invalidInput(FieldProblem{Field: "body", Reason: msg})
	}
	p := newProblem(he.Code, "http", http.StatusText(he.Code), "")
	if he.Code >= 500 {
		p.cause = he
	}
	return p
}

// binderProblem names the parameter in a 400 from apigen's parameter binder, which refuses
// what kin-openapi lets through: a parameter given twice, a date-time Go cannot parse. The
// echo templates of oapi-codegen return only these texts, no typed errors;
// TestBinderMessagesNameTheirParameter holds every message in apigen to one of the shapes.
func binderProblem(msg string) (FieldProblem, bool) {
	if rest, ok := strings.CutPrefix(msg, "Invalid format for parameter "); ok {
		if name, reason, ok := strings.Cut(rest, ": "); ok && name != "" {
			if strings.HasPrefix(reason, "multiple values for single value parameter") {
				reason = "must be given once"
			}
			return FieldProblem{Field: name, Reason: firstLine(reason)}, true
		}
	}
	if rest, ok := strings.CutPrefix(msg, "Expected one value for "); ok {
		if name, n, ok := strings.Cut(rest, ", got "); ok && name != "" {
			return FieldProblem{Field: name, Reason: "must be given once, got " + n}, true
		}
	}
	for _, shape := range [][2]string{
		{"Query argument ", " is required, but not found"},
		{"Header parameter ", " is required, but not found"},
	} {
		if name, ok := quotedIn(msg, shape[0], shape[1]); ok {
			return FieldProblem{Field: name, Reason: "is required"}, true
		}
	}
	if name, ok := quotedIn(msg, "Error unmarshaling parameter '", "' as JSON"); ok {
		return FieldProblem{Field: name, Reason: "is not valid JSON"}, true
	}
	if name, ok := quotedIn(msg, "Error unescaping cookie parameter '", "'"); ok {
		return FieldProblem{Field: name, Reason: "cannot be unescaped"}, true
	}
	return FieldProblem{}, false
}

// errorHandler is echo's HTTPErrorHandler: every error becomes problem+json, and only server
// faults are logged with their cause.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p := problemFor(err)
	req := c.Request()
	out := *p
	out.RequestID = c.Response().Header().Get(echo.HeaderXRequestID)
	if out.Instance == "" {
		out.Instance = req.URL.Path
	}
	switch {
	case out.Status == http.StatusBadGateway:
		// The target answered with its own error or could not be reached: the answer says so,
		// and it is no fault of Tapline's, so it must not page whoever watches for errors.
		s.logger.WarnContext(req.Context(), "target request failed", slog.Int("status", out.Status),
			slog.String("method", req.Method), slog.String("path", req.URL.Path), slog.Any("error", err))
	case out.Status >= 500:
		s.logger.ErrorContext(req.Context(), "request failed", slog.Int("status", out.Status),
			slog.String("method", req.Method), slog.String("path", req.URL.Path), slog.Any("error", err))
	case errors.Is(err, db.ErrInvalidInput):
		// A 400 the validator should have given with the field's name: worth finding.
		s.logger.WarnContext(req.Context(), "database refused input the validator let through",
			slog.String("method", req.Method), slog.String("path", req.URL.Path), slog.Any("error", err))
	}
	h := c.Response().Header()
	if out.retryAfter > 0 {
		h.Set("Retry-After", fmt.Sprint(out.retryAfter))
	}
	if out.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="tapline"`)
	}
	h.Set(echo.HeaderContentType, "application/problem+json")
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(out.Status)
	if req.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(c.Response()).Encode(out)
}
