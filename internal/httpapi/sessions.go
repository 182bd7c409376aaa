package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// inspectorFor checks the caller's role and returns the inspector service with the principal.
func (s *Server) inspectorFor(ctx context.Context, min tenant.Role) (*inspector.Service, *auth.Principal, error) {
	p, err := auth.Require(ctx, min)
	if err != nil {
		return nil, nil, err
	}
	if s.cfg.Inspector == nil {
		return nil, nil, newProblem(http.StatusNotImplemented, "not-configured", "Not configured",
			"this server runs without inspector sessions")
	}
	return s.cfg.Inspector, p, nil
}

// CreateSession stores a new session; a worker connects it.
func (s *Server) CreateSession(ctx context.Context, req apigen.CreateSessionRequestObject) (apigen.CreateSessionResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	in := req.Body.Target
	target := inspector.Target{
		URL: in.URL, Transport: inspector.Transport(deref(in.Transport)), ProtocolVersion: string(deref(in.ProtocolVersion)),
		Headers: deref(in.Headers), BearerToken: deref(in.BearerToken),
	}
	sess, err := svc.CreateSession(ctx, p.TenantID, inspector.CreateSessionParams{
		Name: deref(req.Body.Name), Target: target, Roots: rootsFromJSON(deref(req.Body.Roots)), CreatedBy: p.ID(),
	})
	if err != nil {
		return nil, err
	}
	return apigen.CreateSession201JSONResponse(sessionJSON(sess)), nil
}

// ListSessions pages through the tenant's sessions, optionally by status.
func (s *Server) ListSessions(ctx context.Context, req apigen.ListSessionsRequestObject) (apigen.ListSessionsResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	var statuses []inspector.Status
	for _, st := range splitList(deref(req.Params.Status)) {
		statuses = append(statuses, inspector.Status(st))
	}
	page, err := svc.ListSessions(ctx, p.TenantID, inspector.ListSessionsParams{
		Status: statuses, Limit: deref(req.Params.Limit), Cursor: deref(req.Params.Cursor),
	})
	if err != nil {
		return nil, err
	}
	out := apigen.ListSessions200JSONResponse{Items: make([]apigen.Session, len(page.Items)), NextCursor: strOrNil(page.NextCursor)}
	for i := range page.Items {
		out.Items[i] = sessionJSON(&page.Items[i])
	}
	return out, nil
}

// GetSession answers one session.
func (s *Server) GetSession(ctx context.Context, req apigen.GetSessionRequestObject) (apigen.GetSessionResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	sess, err := svc.GetSession(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	return apigen.GetSession200JSONResponse(sessionJSON(sess)), nil
}

// CloseSession closes a session and keeps its history.
func (s *Server) CloseSession(ctx context.Context, req apigen.CloseSessionRequestObject) (apigen.CloseSessionResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	sess, err := svc.CloseSession(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	return apigen.CloseSession200JSONResponse(sessionJSON(sess)), nil
}

// ReconnectSession asks for a fresh connection to the same target.
func (s *Server) ReconnectSession(ctx context.Context, req apigen.ReconnectSessionRequestObject) (apigen.ReconnectSessionResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	sess, err := svc.ReconnectSession(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	return apigen.ReconnectSession200JSONResponse(sessionJSON(sess)), nil
}

// GetSessionConfig answers the target in the mcp.json shape, secrets as placeholders.
func (s *Server) GetSessionConfig(ctx context.Context, req apigen.GetSessionConfigRequestObject) (apigen.GetSessionConfigResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	sess, err := svc.GetSession(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	// ClientConfig builds plain maps; one round trip through JSON gives the typed shape.
	raw, err := json.Marshal(inspector.ClientConfig(sess))
	if err != nil {
		return nil, err
	}
	var out apigen.GetSessionConfig200JSONResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// sessionJSON is a session as the API shows it: the target without its secrets.
func sessionJSON(s *inspector.Session) apigen.Session {
	out := apigen.Session{
		ID: s.ID, Name: s.Name, Status: apigen.SessionStatus(s.Status), Error: strOrNil(s.Error),
		Target: apigen.Target{
			Transport: apigen.Transport(s.Target.Transport), URL: s.Target.URL,
			ProtocolVersion: apigen.ProtocolVersionPreference(s.Target.ProtocolVersion),
			HeaderNames:     nonNil(s.Target.HeaderNames), HasBearerToken: s.Target.HasBearerToken,
		},
		ServerInfo: rawOrNil(s.ServerInfo), Capabilities: rawOrNil(s.Capabilities),
		Instructions: s.Instructions, ProtocolVersion: s.ProtocolVersion, Roots: rootsJSON(s.Roots),
		LoggingLevel: s.LoggingLevel, Subscriptions: nonNil(s.Subscriptions), LastSeq: s.LastSeq,
		CreatedBy: strOrNil(s.CreatedBy), CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC(), ClosedAt: utc(s.ClosedAt),
	}
	return out
}

func rootsJSON(roots []inspector.Root) []apigen.Root {
	out := make([]apigen.Root, len(roots))
	for i, r := range roots {
		out[i] = apigen.Root{URI: r.URI, Name: strOrNil(r.Name)}
	}
	return out
}

func rootsFromJSON(roots []apigen.Root) []inspector.Root {
	out := make([]inspector.Root, len(roots))
	for i, r := range roots {
		out[i] = inspector.Root{URI: r.URI, Name: deref(r.Name)}
	}
	return out
}

// rawOrNil leaves absent and JSON-null values out of responses.
func rawOrNil(b json.RawMessage) *json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return &b
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// splitList flattens a repeated query parameter whose values may also be comma lists.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
