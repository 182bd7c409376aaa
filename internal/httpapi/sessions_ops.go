package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// targetResult is a result object exactly as the target sent it. The generated response
// types of raw-JSON schemas are byte slices that encoding/json would base64, so the
// operations that pass a target's result through answer with this type instead.
type targetResult json.RawMessage

func (r targetResult) write(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	body := []byte(r)
	if len(body) == 0 {
		body = []byte("{}")
	}
	_, err := w.Write(append(body, '\n'))
	return err
}

// VisitListToolsResponse writes the target's ListToolsResult.
func (r targetResult) VisitListToolsResponse(w http.ResponseWriter) error { return r.write(w) }

// VisitListResourcesResponse writes the target's ListResourcesResult.
func (r targetResult) VisitListResourcesResponse(w http.ResponseWriter) error { return r.write(w) }

// VisitListResourceTemplatesResponse writes the target's ListResourceTemplatesResult.
func (r targetResult) VisitListResourceTemplatesResponse(w http.ResponseWriter) error {
	return r.write(w)
}

// VisitListPromptsResponse writes the target's ListPromptsResult.
func (r targetResult) VisitListPromptsResponse(w http.ResponseWriter) error { return r.write(w) }

// VisitReadResourceResponse writes the target's ReadResourceResult.
func (r targetResult) VisitReadResourceResponse(w http.ResponseWriter) error { return r.write(w) }

// VisitGetPromptResponse writes the target's GetPromptResult.
func (r targetResult) VisitGetPromptResponse(w http.ResponseWriter) error { return r.write(w) }

// VisitCompleteResponse writes the target's CompleteResult.
func (r targetResult) VisitCompleteResponse(w http.ResponseWriter) error { return r.write(w) }

// request runs a fast operation on the session's live connection with the given role. key is
// the request's Idempotency-Key, if it has one: a retry with it does not reach the target
// again.
func (s *Server) request(ctx context.Context, min tenant.Role, sessionID string, op inspector.Op, params any, key *string) (json.RawMessage, error) {
	svc, p, err := s.inspectorFor(ctx, min)
	if err != nil {
		return nil, err
	}
	return svc.Request(ctx, p.TenantID, sessionID, op, params, &inspector.RequestOptions{Principal: p.ID(), IdempotencyKey: deref(key)})
}

// listParams asks the worker for one page when the caller gave a cursor, else every page.
func listParams(cursor *string) map[string]any {
	c := deref(cursor)
	return map[string]any{"cursor": c, "all": c == ""}
}

// ListTools answers the target's tools/list.
func (s *Server) ListTools(ctx context.Context, req apigen.ListToolsRequestObject) (apigen.ListToolsResponseObject, error) {
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpListTools, listParams(req.Params.Cursor), nil)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// ListResources answers the target's resources/list.
func (s *Server) ListResources(ctx context.Context, req apigen.ListResourcesRequestObject) (apigen.ListResourcesResponseObject, error) {
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpListResources, listParams(req.Params.Cursor), nil)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// ListResourceTemplates answers the target's resources/templates/list.
func (s *Server) ListResourceTemplates(ctx context.Context, req apigen.ListResourceTemplatesRequestObject) (apigen.ListResourceTemplatesResponseObject, error) {
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpListResourceTemplates, listParams(req.Params.Cursor), nil)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// ListPrompts answers the target's prompts/list.
func (s *Server) ListPrompts(ctx context.Context, req apigen.ListPromptsRequestObject) (apigen.ListPromptsResponseObject, error) {
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpListPrompts, listParams(req.Params.Cursor), nil)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// ReadResource reads one resource.
func (s *Server) ReadResource(ctx context.Context, req apigen.ReadResourceRequestObject) (apigen.ReadResourceResponseObject, error) {
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpReadResource, map[string]any{"uri": req.Body.URI}, req.Params.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// SubscribeResource subscribes the session to a resource's updates.
func (s *Server) SubscribeResource(ctx context.Context, req apigen.SubscribeResourceRequestObject) (apigen.SubscribeResourceResponseObject, error) {
	if _, err := s.request(ctx, tenant.RoleMember, req.ID, inspector.OpSubscribe, map[string]any{"uri": req.Body.URI}, req.Params.IdempotencyKey); err != nil {
		return nil, err
	}
	return apigen.SubscribeResource200JSONResponse{URI: req.Body.URI, Subscribed: true}, nil
}

// UnsubscribeResource ends a resource subscription.
func (s *Server) UnsubscribeResource(ctx context.Context, req apigen.UnsubscribeResourceRequestObject) (apigen.UnsubscribeResourceResponseObject, error) {
	if _, err := s.request(ctx, tenant.RoleMember, req.ID, inspector.OpUnsubscribe, map[string]any{"uri": req.Body.URI}, req.Params.IdempotencyKey); err != nil {
		return nil, err
	}
	return apigen.UnsubscribeResource200JSONResponse{URI: req.Body.URI, Subscribed: false}, nil
}

// GetPrompt renders a prompt.
func (s *Server) GetPrompt(ctx context.Context, req apigen.GetPromptRequestObject) (apigen.GetPromptResponseObject, error) {
	params := map[string]any{"name": req.Body.Name}
	if req.Body.Arguments != nil {
		params["arguments"] = *req.Body.Arguments
	}
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpGetPrompt, params, req.Params.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// Complete asks the target for argument completions.
func (s *Server) Complete(ctx context.Context, req apigen.CompleteRequestObject) (apigen.CompleteResponseObject, error) {
	params := map[string]any{"ref": req.Body.Ref, "argument": req.Body.Argument}
	if req.Body.Context != nil {
		params["context"] = req.Body.Context
	}
	res, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpComplete, params, req.Params.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	return targetResult(res), nil
}

// SetLoggingLevel sets the target's log level.
func (s *Server) SetLoggingLevel(ctx context.Context, req apigen.SetLoggingLevelRequestObject) (apigen.SetLoggingLevelResponseObject, error) {
	if _, err := s.request(ctx, tenant.RoleMember, req.ID, inspector.OpSetLoggingLevel, map[string]any{"level": req.Body.Level}, req.Params.IdempotencyKey); err != nil {
		return nil, err
	}
	return apigen.SetLoggingLevel200JSONResponse{Level: req.Body.Level}, nil
}

// PingSession pings the target and measures the whole round trip through the worker.
func (s *Server) PingSession(ctx context.Context, req apigen.PingSessionRequestObject) (apigen.PingSessionResponseObject, error) {
	start := time.Now()
	if _, err := s.request(ctx, tenant.RoleViewer, req.ID, inspector.OpPing, map[string]any{}, req.Params.IdempotencyKey); err != nil {
		return nil, err
	}
	ms := float64(time.Since(start).Microseconds()) / 1000
	return apigen.PingSession200JSONResponse{Ms: ms}, nil
}

// GetRoots answers the roots the session offers.
func (s *Server) GetRoots(ctx context.Context, req apigen.GetRootsRequestObject) (apigen.GetRootsResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	sess, err := svc.GetSession(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	return apigen.GetRoots200JSONResponse{Roots: rootsJSON(sess.Roots)}, nil
}

// SetRoots replaces the session's roots.
func (s *Server) SetRoots(ctx context.Context, req apigen.SetRootsRequestObject) (apigen.SetRootsResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	roots, err := svc.SetRoots(ctx, p.TenantID, req.ID, rootsFromJSON(req.Body.Roots),
		&inspector.RequestOptions{Principal: p.ID(), IdempotencyKey: deref(req.Params.IdempotencyKey)})
	if err != nil {
		return nil, err
	}
	return apigen.SetRoots200JSONResponse{Roots: rootsJSON(roots)}, nil
}

// SendRPC sends any JSON-RPC request. The target's JSON-RPC error is a normal answer here.
func (s *Server) SendRPC(ctx context.Context, req apigen.SendRPCRequestObject) (apigen.SendRPCResponseObject, error) {
	params := map[string]any{"method": req.Body.Method}
	if req.Body.Params != nil {
		params["params"] = *req.Body.Params
	}
	res, err := s.request(ctx, tenant.RoleMember, req.ID, inspector.OpRPC, params, req.Params.IdempotencyKey)
	var remote *inspector.RemoteError
	if errors.As(err, &remote) {
		return apigen.SendRPC200JSONResponse{Error: &apigen.RPCError{
			Code: remote.Code, Message: remote.Message, Data: rawOrNil(remote.Data),
		}}, nil
	}
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		res = json.RawMessage(`{}`)
	}
	return apigen.SendRPC200JSONResponse{Result: &res}, nil
}
