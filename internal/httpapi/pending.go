package httpapi

import (
	"context"

	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/tenant"
)

// ListPending answers the session's parked server→client requests.
func (s *Server) ListPending(ctx context.Context, req apigen.ListPendingRequestObject) (apigen.ListPendingResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	var statuses []inspector.PendingStatus
	for _, st := range splitList(deref(req.Params.Status)) {
		statuses = append(statuses, inspector.PendingStatus(st))
	}
	items, err := svc.ListPending(ctx, p.TenantID, req.ID, statuses)
	if err != nil {
		return nil, err
	}
	out := apigen.ListPending200JSONResponse{Items: make([]apigen.Pending, len(items))}
	for i := range items {
		out.Items[i] = pendingJSON(&items[i])
	}
	return out, nil
}

// AnswerPending records a person's answer to a parked request; answering twice is a 409.
func (s *Server) AnswerPending(ctx context.Context, req apigen.AnswerPendingRequestObject) (apigen.AnswerPendingResponseObject, error) {
	svc, p, err := s.inspectorFor(ctx, tenant.RoleMember)
	if err != nil {
		return nil, err
	}
	b := req.Body
	answer := inspector.PendingAnswer{Action: string(deref(b.Action))}
	if b.Result != nil {
		answer.Result = *b.Result
	}
	if b.Content != nil {
		answer.Content = *b.Content
	}
	if b.Error != nil {
		answer.Error = &inspector.RemoteError{Code: b.Error.Code, Message: b.Error.Message}
		if b.Error.Data != nil {
			answer.Error.Data = *b.Error.Data
		}
	}
	out, err := svc.AnswerPending(ctx, p.TenantID, req.ID, req.RequestID, p.ID(), answer)
	if err != nil {
		return nil, err
	}
	return apigen.AnswerPending200JSONResponse(pendingJSON(out)), nil
}

func pendingJSON(p *inspector.Pending) apigen.Pending {
	params := p.Params
	if len(params) == 0 {
		params = []byte(`{}`)
	}
	return apigen.Pending{
		RequestID: p.RequestID, Kind: apigen.PendingKind(p.Kind), Params: params, Status: apigen.PendingStatus(p.Status),
		Answer: rawOrNil(p.Answer), AnsweredBy: strOrNil(p.AnsweredBy), CreatedAt: p.CreatedAt.UTC(),
		ExpiresAt: p.ExpiresAt.UTC(), AnsweredAt: utc(p.AnsweredAt),
	}
}
