package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// defaultEventsLimit is the page size of ListEvents without ?limit.
const defaultEventsLimit = 100

// ListEvents answers a page of the session's events after ?after_seq. The Events-Deleted
// header names the seqs right after it that retention deleted, if any.
func (s *Server) ListEvents(ctx context.Context, req apigen.ListEventsRequestObject) (apigen.ListEventsResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	limit := deref(req.Params.Limit)
	if limit == 0 {
		limit = defaultEventsLimit
	}
	page, err := svc.EventPage(ctx, p.TenantID, req.ID, inspector.EventsParams{
		AfterSeq: deref(req.Params.AfterSeq), Limit: limit, Types: eventTypes(req.Params.Type),
	})
	if err != nil {
		return nil, err
	}
	events := page.Events
	out := apigen.ListEvents200JSONResponse{Body: apigen.EventPage{Items: make([]apigen.Event, len(events))}}
	for i, e := range events {
		out.Body.Items[i] = apigen.Event{Seq: e.Seq, Type: apigen.EventType(e.Type), At: e.At.UTC(), Data: e.Data}
	}
	if len(events) == limit {
		next := events[len(events)-1].Seq
		out.Body.NextAfterSeq = &next
	}
	if !page.Deleted.Empty() {
		deleted := page.Deleted.String()
		out.Headers.EventsDeleted = &deleted
	}
	return out, nil
}

func eventTypes(filter *[]string) []inspector.EventType {
	var out []inspector.EventType
	for _, t := range splitList(deref(filter)) {
		out = append(out, inspector.EventType(t))
	}
	return out
}

// streamWriteTimeout bounds one write to an SSE or export client, so a client that stopped
// reading cannot hold its stream, and what the stream holds, forever; the server's own write
// timeout (none in cmd/api) does not suit responses that last as long as they have to.
var streamWriteTimeout = 30 * time.Second

// bearerKey carries the request's bearer token in its context, for streams that check
// again, while they last, that it still authenticates.
type bearerKey struct{}

func withBearer(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, bearerKey{}, token)
}

func bearerFrom(ctx context.Context) string {
	token, _ := ctx.Value(bearerKey{}).(string)
	return token
}

// errCredentialLapsed ends a stream whose credential no longer authenticates.
var errCredentialLapsed = errors.New("the stream's credential no longer authenticates")

// StreamEvents follows the session's events as Server-Sent Events.
func (s *Server) StreamEvents(ctx context.Context, req apigen.StreamEventsRequestObject) (apigen.StreamEventsResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	// Answer an unknown session with a problem now, before the stream's headers go out.
	if _, err := svc.GetSession(ctx, p.TenantID, req.ID); err != nil {
		return nil, err
	}
	after := deref(req.Params.AfterSeq)
	if req.Params.LastEventID != nil {
		after = *req.Params.LastEventID
	}
	return &eventStream{
		ctx: ctx, svc: svc, principal: p, sessionID: req.ID, after: after,
		types: eventTypes(req.Params.Type), draining: s.cfg.Draining, logger: s.logger,
		auth: s.cfg.Auth, token: bearerFrom(ctx),
	}, nil
}

// eventStream writes a session's events as SSE for as long as the client listens, its
// credential holds and the server is not shutting down.
//
// A stream outlives neither its JWT nor its API key: every keep-alive interval it
// authenticates its bearer token again, and ends once that fails (the JWT expired, the key
// was revoked or expired, the member was removed). The client then reconnects with a fresh
// token and Last-Event-ID and misses nothing; the web inspector does so by itself. A closed
// session's stream goes on: the session can be reconnected, and its history stays.
type eventStream struct {
	ctx       context.Context
	svc       *inspector.Service
	principal *auth.Principal
	sessionID string
	after     int64
	types     []inspector.EventType
	draining  <-chan struct{}
	logger    *slog.Logger
	auth      *auth.Authenticator
	token     string
}

// stillAuthenticated reports errCredentialLapsed when the stream's token no longer stands
// for its principal's tenant. A failure to check (PostgreSQL or Redis away) is not taken as
// a refusal: the stream's own reads fail as well if the outage lasts.
func (es *eventStream) stillAuthenticated() error {
	if es.auth == nil || es.token == "" {
		return nil
	}
	p, err := es.auth.Authenticate(es.ctx, es.token)
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return errCredentialLapsed
	case err != nil:
		return nil
	case p.TenantID != es.principal.TenantID || !p.Role.AtLeast(tenant.RoleViewer):
		return errCredentialLapsed
	}
	return nil
}

// VisitStreamEventsResponse streams until the client goes, the server drains or a write fails.
func (es *eventStream) VisitStreamEventsResponse(w http.ResponseWriter) error {
	ctx := es.ctx
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Grown to the largest event sent; an idle stream holds none.
	var buf []byte
	clientGone := false
	send := func(b []byte) error {
		// Per-write deadline: a stuck client ends its own stream, nobody else's. Writers
		// that cannot set deadlines (tests, some wrappers) simply have none.
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		_, err := w.Write(b)
		if err == nil {
			err = rc.Flush()
		}
		clientGone = err != nil
		return err
	}
	// Tell clients to come back quickly after a drop, and get the headers out now.
	if err := send([]byte("retry: 2000\n: connected\n\n")); err != nil {
		return nil
	}
	err := es.svc.Follow(ctx, es.principal.TenantID, es.sessionID, inspector.FollowParams{
		AfterSeq: es.after,
		Types:    es.types,
		Watcher:  &inspector.Watcher{StreamID: newRequestID(), Principal: es.principal.ID(), Name: es.principal.Name},
		Emit: func(e inspector.Event) error {
			data, err := json.Marshal(e)
			if err != nil {
				return err
			}
			buf = append(buf[:0], "id: "...)
			buf = strconv.AppendInt(buf, e.Seq, 10)
			buf = append(buf, "\nevent: "...)
			buf = append(buf, e.Type...)
			buf = append(buf, "\ndata: "...)
			buf = append(buf, data...)
			buf = append(buf, "\n\n"...)
			return send(buf)
		},
		Deleted: func(r inspector.SeqRange) error { return send(deletedComment(r)) },
		Idle:    func() error { return send([]byte(": keep-alive\n\n")) },
		Check:   es.stillAuthenticated,
		Stop:    es.draining,
	})
	if errors.Is(err, errCredentialLapsed) {
		// Say why in a comment (clients ignore it); the client's reconnect gets the 401.
		_ = send([]byte(": credentials expired or revoked\n\n"))
		return nil
	}
	if err != nil && ctx.Err() == nil && !clientGone {
		// The headers are out: the stream just ends, and the client resumes with
		// Last-Event-ID. Log what ended it unless it was the client going away.
		es.logger.WarnContext(es.ctx, "event stream ended", slog.String("session_id", es.sessionID), slog.Any("error", err))
	}
	return nil
}

// deletedComment is the comment an event stream sends in place of events that retention
// deleted: a comment, so the stream's messages stay the history's events, and EventSource
// clients, which ignore comments, are unaffected.
func deletedComment(r inspector.SeqRange) []byte {
	if r.From == r.To {
		return []byte(": event " + strconv.FormatInt(r.From, 10) + " was deleted by retention\n\n")
	}
	return []byte(": events " + r.String() + " were deleted by retention\n\n")
}

// ExportSession streams the session's whole history as JSON or JSON lines.
func (s *Server) ExportSession(ctx context.Context, req apigen.ExportSessionRequestObject) (apigen.ExportSessionResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	sess, err := svc.GetSession(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	format := apigen.ExportSessionParamsFormatJSON
	if req.Params.Format != nil {
		format = *req.Params.Format
	}
	return &sessionExport{ctx: ctx, svc: svc, tenantID: p.TenantID, session: sess, jsonl: format == apigen.ExportSessionParamsFormatJsonl, logger: s.logger}, nil
}

// sessionExport writes a history page by page, never holding more than one page of events.
type sessionExport struct {
	ctx      context.Context
	svc      *inspector.Service
	tenantID string
	session  *inspector.Session
	jsonl    bool
	logger   *slog.Logger
}

// VisitExportSessionResponse streams the export. A failure after the first byte aborts the
// connection, so a client can never take a truncated export for a whole one.
func (x *sessionExport) VisitExportSessionResponse(w http.ResponseWriter) error {
	h := w.Header()
	name := "session-" + x.session.ID
	if x.jsonl {
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Content-Disposition", `attachment; filename="`+name+`.jsonl"`)
	} else {
		h.Set("Content-Type", "application/json")
		h.Set("Content-Disposition", `attachment; filename="`+name+`.json"`)
	}
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(&deadlineWriter{w: w, rc: http.NewResponseController(w)}, 64<<10)
	err := x.write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			x.logger.WarnContext(x.ctx, "export aborted", slog.String("session_id", x.session.ID), slog.Any("error", err))
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// deadlineWriter gives every write its own deadline, so that a client that stops reading
// ends its export within streamWriteTimeout instead of holding the export's page of events
// and its goroutine for as long as it keeps the connection open.
type deadlineWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	// Writers that cannot set deadlines (some wrappers) simply have none.
	_ = d.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	return d.w.Write(b)
}

func (x *sessionExport) write(bw *bufio.Writer) error {
	enc := json.NewEncoder(bw)
	if !x.jsonl {
		if _, err := bw.WriteString(`{"session":`); err != nil {
			return err
		}
		if err := enc.Encode(sessionJSON(x.session)); err != nil {
			return err
		}
		if _, err := bw.WriteString(`,"events":[`); err != nil {
			return err
		}
	}
	first := true
	err := x.svc.ExportEvents(x.ctx, x.tenantID, x.session.ID, func(e inspector.Event) error {
		if !x.jsonl && !first {
			if err := bw.WriteByte(','); err != nil {
				return err
			}
		}
		first = false
		return enc.Encode(e)
	})
	if err != nil {
		return err
	}
	if !x.jsonl {
		_, err = bw.WriteString("]}\n")
	}
	return err
}
