package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tracker"
)

// Idempotency-Key handling (DESIGN.md §2.6): the first request with a key claims it in the
// tracker, which every api node shares, runs, and stores its response; a retry on any node
// replays that response instead of acting again, after waiting for it if the first one still
// runs. Server faults (5xx) and conflicts (409) are not stored, so a retry after one runs afresh; the audit
// events it records are those of the first attempt (audit.WithRetryKey), so an action the
// first attempt carried out before failing is not in the log twice. What ties the attempts
// together is a run id kept in Redis with the fault, for as long as a response would be
// kept: a request that runs again once its response is gone (aged out after the tracker's
// ResultTTL, 10 minutes by default, or unreadable) is a new run, and what it does is logged
// again even when it repeats what the first run did. So is a retry after the api node
// running the first attempt died: its claim lapses after the tracker's ClaimTTL (30 s by
// default) and the retry, answered 409 until then, runs as a new run.
//
// A stored response may hold a secret shown once (POST /v1/api-keys answers with the new
// key's secret), so it is sealed with the secret keyring (package secretbox) before it goes
// to Redis, under associated data naming its claim (tenant, principal, request): a blob
// copied to another key does not open there. A response that does not open (sealed under a
// key id the keyring no longer holds, or tampered with) is treated as expired: the request
// runs again, as it would once the stored response had aged out.

const (
	// idempotencyHeader is the request header carrying the key.
	idempotencyHeader = "Idempotency-Key"
	// maxStoredResponse caps the response kept for replays; a larger one is not stored and a
	// retry runs again.
	maxStoredResponse = 1 << 20
	// defaultIdempotencyWait is how long a retry waits for a first request still running.
	defaultIdempotencyWait = 20 * time.Second
)

// storedResponse is what a completed claim keeps for replays.
type storedResponse struct {
	// Hash identifies the request (method, path, query, body), so a key reused for another
	// request is refused rather than answered with someone else's response.
	Hash string `json:"hash"`
	// Run names the run of the request (see runClaimed) whose attempts share their audit
	// events.
	Run string `json:"run,omitempty"`
	// Failed marks a run that ended without a response to keep (a server fault): the next
	// attempt runs the request again, as part of the same run.
	Failed      bool   `json:"failed,omitempty"`
	Status      int    `json:"status"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

func isMutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// idempotencyMiddleware makes mutating /v1 requests with an Idempotency-Key run once per key
// and principal across every api node.
func (s *Server) idempotencyMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		key := req.Header.Get(idempotencyHeader)
		if key == "" || s.cfg.Tracker == nil || s.cfg.Keys == nil || !isMutating(req.Method) || !strings.HasPrefix(req.URL.Path, "/v1/") {
			return next(c)
		}
		p, ok := auth.FromContext(req.Context())
		if !ok {
			return next(c)
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return err
		}
		req.Body = replayBody(req.Body, body)
		sum := sha256.New()
		for _, part := range []string{req.Method, req.URL.EscapedPath(), req.URL.RawQuery} {
			sum.Write([]byte(part))
			sum.Write([]byte{0})
		}
		sum.Write(body)
		hash := hex.EncodeToString(sum.Sum(nil))

		scope := "idem:" + p.ID()
		requestID := req.Method + " " + req.URL.EscapedPath() + " " + key
		if len(requestID) > tracker.MaxIDLen || !utf8.ValidString(requestID) {
			h := sha256.Sum256([]byte(requestID))
			requestID = "sha256:" + hex.EncodeToString(h[:])
		}
		wait := s.idempotencyWait
		if secs, err := strconv.Atoi(req.URL.Query().Get("wait")); err == nil && secs > 0 && secs <= 60 {
			wait += time.Duration(secs) * time.Second
		}
		ctx := req.Context()
		// A retry normally finds the stored response or waits for it; it claims the key
		// itself only when the first request gave it up (a server fault).
		for range 3 {
			claim, err := s.cfg.Tracker.ClaimInFlight(ctx, p.TenantID, scope, requestID)
			if err == nil {
				return s.runClaimed(c, next, claim, hash, newRunID())
			}
			var dup *tracker.DuplicateError
			if !errors.As(err, &dup) {
				return err
			}
			result := dup.Result
			if !dup.Done {
				result, err = s.cfg.Tracker.AwaitResult(ctx, p.TenantID, scope, requestID, wait)
				switch {
				case errors.Is(err, tracker.ErrNotFound):
					continue
				case errors.Is(err, tracker.ErrNoResult):
					return stillRunning()
				case err != nil:
					return err
				}
			}
			sr, ok := s.openStored(ctx, result, p.TenantID, scope, requestID)
			if !ok {
				// Nothing can be replayed and the unreadable value holds the key until it
				// expires, so the request runs unclaimed, as a new run, as it would after
				// expiry.
				return next(c)
			}
			if sr.Failed {
				// The run before ended in a server fault: this attempt continues it, unless
				// it is another request under the same key, which is a run of its own.
				run := sr.Run
				if sr.Hash != hash || run == "" {
					run = newRunID()
				}
				claim, err := s.cfg.Tracker.ReclaimInFlight(ctx, p.TenantID, scope, requestID, result)
				switch {
				case err == nil:
					return s.runClaimed(c, next, claim, hash, run)
				case errors.Is(err, tracker.ErrLeaseLost):
					continue // another attempt took it first, or it expired
				default:
					return err
				}
			}
			return replayStored(c, sr, hash)
		}
		return stillRunning()
	}
}

// storedAD is the associated data a stored response is sealed under: the claim it belongs
// to, which is what names its key in Redis.
func storedAD(tenantID, scope, requestID string) []byte {
	return secretbox.AssociatedData("idempotent-response", tenantID, scope, requestID)
}

// openStored opens a stored response. It reports false, after logging why, when the value
// does not open or decode: sealed under a key the keyring no longer holds, sealed for
// another claim, or damaged.
func (s *Server) openStored(ctx context.Context, raw []byte, tenantID, scope, requestID string) (*storedResponse, bool) {
	plain, err := s.cfg.Keys.Open(raw, storedAD(tenantID, scope, requestID))
	if err == nil {
		var sr storedResponse
		if err = json.Unmarshal(plain, &sr); err == nil {
			return &sr, true
		}
		err = fmt.Errorf("decode: %w", err)
	}
	kid, _ := secretbox.KeyIDOf(raw)
	s.logger.WarnContext(ctx, "stored idempotent response unreadable; running the request again",
		slog.String("key_id", kid), slog.Any("error", err))
	return nil, false
}

func stillRunning() *Problem {
	p := newProblem(http.StatusConflict, "idempotency-in-progress", "Conflict",
		"request with this Idempotency-Key is still running; retry later")
	p.retryAfter = 1
	return p
}

// newRunID names a new run of a request.
func newRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runClaimed runs the request under its claim, as an attempt of run, capturing the response
// as it is written, and stores it for retries; after a server fault it stores only the run,
// so that a retry runs the request again as part of it.
func (s *Server) runClaimed(c echo.Context, next echo.HandlerFunc, claim *tracker.Claim, hash, run string) (err error) {
	// Every attempt of a run records its audit events under one key, so a retry that runs
	// again after a server fault (the worker answers it from the command the first attempt
	// ran) does not record them twice.
	retry := sha256.Sum256([]byte(claim.Session() + "\x00" + claim.RequestID() + "\x00" + hash + "\x00" + run))
	req := c.Request()
	c.SetRequest(req.WithContext(audit.WithRetryKey(req.Context(), hex.EncodeToString(retry[:]))))
	res := c.Response()
	capture := &capturingWriter{ResponseWriter: res.Writer}
	res.Writer = capture
	settled := false
	// The claim must end however the handler does, panics included: a claim left held
	// would be renewed for as long as this node lives and every retry would wait in vain.
	bg := context.WithoutCancel(c.Request().Context())
	defer func() {
		res.Writer = capture.ResponseWriter
		if !settled {
			_ = s.cfg.Tracker.ReleaseInFlight(bg, claim)
		}
	}()
	if herr := next(c); herr != nil {
		// Render the error here so the problem is part of what is captured and replayed.
		c.Error(herr)
	}
	status := res.Status
	kept := storedResponse{
		Hash: hash, Run: run, Status: status, ContentType: res.Header().Get(echo.HeaderContentType), Body: capture.body.Bytes(),
	}
	// A conflict (409: the session not ready yet, a live-session quota, an answer already
	// given) acted on nothing and may clear: like a server fault, it is not kept, so a retry
	// with the same key runs again instead of getting the 409 for as long as responses are.
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusConflict || capture.overflow || !res.Committed {
		kept = storedResponse{Hash: hash, Run: run, Failed: true}
	}
	plain, merr := json.Marshal(kept)
	if merr != nil {
		return nil
	}
	stored, serr := s.cfg.Keys.Seal(plain, storedAD(claim.Tenant(), claim.Session(), claim.RequestID()))
	clear(plain)
	if serr != nil {
		s.logger.WarnContext(bg, "seal idempotent response", slog.Any("error", serr))
		return nil
	}
	if cerr := s.cfg.Tracker.CompleteInFlight(bg, claim, stored); cerr != nil {
		s.logger.WarnContext(bg, "store idempotent response", slog.Any("error", cerr))
		return nil
	}
	settled = true
	return nil
}

// replayStored answers with a stored response, or 422 naming the header when the key was
// first used for a different request.
func replayStored(c echo.Context, sr *storedResponse, hash string) error {
	if sr.Hash != hash {
		const reason = "this Idempotency-Key was first used with a different request"
		p := newProblem(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency-Key reused", reason)
		p.Field = idempotencyHeader
		p.Errors = []FieldProblem{{Field: idempotencyHeader, Reason: reason}}
		return p
	}
	h := c.Response().Header()
	if sr.ContentType != "" {
		h.Set(echo.HeaderContentType, sr.ContentType)
	}
	h.Set("Idempotent-Replayed", "true")
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(sr.Status)
	_, err := c.Response().Write(sr.Body)
	return err
}

// capturingWriter passes a response through and keeps a copy of its body, up to
// maxStoredResponse.
type capturingWriter struct {
	http.ResponseWriter
	body     bytes.Buffer
	overflow bool
}

func (w *capturingWriter) Write(b []byte) (int, error) {
	if !w.overflow {
		if w.body.Len()+len(b) > maxStoredResponse {
			w.overflow = true
			w.body = bytes.Buffer{}
		} else {
			w.body.Write(b)
		}
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *capturingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes through.
func (w *capturingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// replayBody gives the handler the body the middleware read, keeping the validator's
// validated value when it left one.
func replayBody(orig io.ReadCloser, body []byte) io.ReadCloser {
	r := io.NopCloser(bytes.NewReader(body))
	if v, ok := orig.(interface{ ValidatedValue() any }); ok {
		return validatedReplay{ReadCloser: r, value: v.ValidatedValue()}
	}
	return r
}

type validatedReplay struct {
	io.ReadCloser
	value any
}

// ValidatedValue returns the value the spec validator decoded.
func (v validatedReplay) ValidatedValue() any { return v.value }
