package httpapi

import (
	"context"
	"encoding/json"
	"time"

	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// StartCall queues a tool call. With ?wait it waits up to that long for the call to finish
// and answers 200 with the finished call, else 202 with the call as it is.
func (s *Server) StartCall(ctx context.Context, req apigen.StartCallRequestObject) (apigen.StartCallResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	var args json.RawMessage
	if req.Body.Arguments != nil {
		args = *req.Body.Arguments
	}
	call, err := svc.StartCall(ctx, p.TenantID, req.ID, inspector.StartCallParams{
		Name: req.Body.Name, Arguments: args, CreatedBy: p.ID(), IdempotencyKey: string(deref(req.Params.IdempotencyKey)),
		Wait: time.Duration(deref(req.Params.Wait)) * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if call.Status.Finished() {
		return apigen.StartCall200JSONResponse(callJSON(call)), nil
	}
	return apigen.StartCall202JSONResponse(callJSON(call)), nil
}

// ListCalls answers the session's most recent calls.
func (s *Server) ListCalls(ctx context.Context, req apigen.ListCallsRequestObject) (apigen.ListCallsResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	// ListCalls does not tell an unknown session from one without calls.
	if _, err := svc.GetSession(ctx, p.TenantID, req.ID); err != nil {
		return nil, err
	}
	calls, err := svc.ListCalls(ctx, p.TenantID, req.ID, deref(req.Params.Limit))
	if err != nil {
		return nil, err
	}
	out := apigen.ListCalls200JSONResponse{Items: make([]apigen.Call, len(calls))}
	for i := range calls {
		out.Items[i] = callJSON(&calls[i])
	}
	return out, nil
}

// GetCall answers one call.
func (s *Server) GetCall(ctx context.Context, req apigen.GetCallRequestObject) (apigen.GetCallResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	call, err := svc.GetCall(ctx, p.TenantID, req.ID, req.CallID)
	if err != nil {
		return nil, err
	}
	return apigen.GetCall200JSONResponse(callJSON(call)), nil
}

// CancelCall cancels a call and answers it as it is afterwards.
func (s *Server) CancelCall(ctx context.Context, req apigen.CancelCallRequestObject) (apigen.CancelCallResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	call, err := svc.CancelCall(ctx, p.TenantID, req.ID, req.CallID)
	if err != nil {
		return nil, err
	}
	return apigen.CancelCall200JSONResponse(callJSON(call)), nil
}

func callJSON(c *inspector.Call) apigen.Call {
	args := c.Arguments
	if len(args) == 0 {
		args = json.RawMessage(`{}`)
	}
	out := apigen.Call{
		CallID: c.ID, Name: c.Name, Arguments: args, Status: apigen.CallStatus(c.Status),
		Result: rawOrNil(c.Result), Error: rawOrNil(c.Error), CreatedBy: strOrNil(c.CreatedBy),
		CreatedAt: c.CreatedAt.UTC(), FinishedAt: utc(c.FinishedAt),
	}
	if c.Progress != nil {
		out.Progress = &apigen.Progress{Progress: c.Progress.Progress, Total: c.Progress.Total, Message: strOrNil(c.Progress.Message)}
	}
	return out
}
