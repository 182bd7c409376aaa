package httpapi

import (
	"context"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/tenant"
)

// ListMembers lists the tenant's members.
func (s *Server) ListMembers(ctx context.Context, req apigen.ListMembersRequestObject) (apigen.ListMembersResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	page, err := s.cfg.Tenants.ListMembers(ctx, p.TenantID, tenant.ListParams{Limit: deref(req.Params.Limit), Cursor: deref(req.Params.Cursor)})
	if err != nil {
		return nil, err
	}
	out := apigen.ListMembers200JSONResponse{Items: make([]apigen.Member, len(page.Items)), NextCursor: strOrNil(page.NextCursor)}
	for i, m := range page.Items {
		out.Items[i] = memberJSON(&m)
	}
	return out, nil
}

// AddMember adds a member by email.
func (s *Server) AddMember(ctx context.Context, req apigen.AddMemberRequestObject) (apigen.AddMemberResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	ch, err := s.cfg.Tenants.AddMember(ctx, p.TenantID, req.Body.Email, tenant.Role(req.Body.Role), granterOf(p),
		auditAfter(s, p.TenantID, audit.ActionMemberAdd, memberAudit))
	if err != nil {
		return nil, err
	}
	return apigen.AddMember201JSONResponse(memberJSON(&ch.Member)), nil
}

// UpdateMember changes a member's role.
func (s *Server) UpdateMember(ctx context.Context, req apigen.UpdateMemberRequestObject) (apigen.UpdateMemberResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	ch, err := s.cfg.Tenants.ChangeMemberRole(ctx, p.TenantID, req.ID, tenant.Role(req.Body.Role), granterOf(p),
		auditAfter(s, p.TenantID, audit.ActionMemberUpdate, memberAudit))
	if err != nil {
		return nil, err
	}
	return apigen.UpdateMember200JSONResponse(memberJSON(&ch.Member)), nil
}

// RemoveMember removes a member and revokes their keys.
func (s *Server) RemoveMember(ctx context.Context, req apigen.RemoveMemberRequestObject) (apigen.RemoveMemberResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	_, err = s.cfg.Tenants.RemoveMember(ctx, p.TenantID, req.ID, granterOf(p),
		auditAfter(s, p.TenantID, audit.ActionMemberRemove, memberAudit))
	if err != nil {
		return nil, err
	}
	return apigen.RemoveMember204Response{}, nil
}

// granterOf is the principal as the tenant store reads it again under the tenant's lock, so a
// principal demoted, or whose key is revoked, while its request waits acts with what is left.
func granterOf(p *auth.Principal) tenant.Actor {
	return tenant.Actor{Role: p.Role, UserID: p.UserID, KeyID: p.KeyID}
}

// memberAudit describes a membership change for the audit log.
func memberAudit(ch *tenant.MemberChange) (audit.Target, map[string]any) {
	d := map[string]any{"email": ch.Member.User.Email, "role": ch.Member.Role}
	if ch.Previous != "" {
		d["previous_role"] = ch.Previous
	}
	if len(ch.RevokedKeys) > 0 {
		d["revoked_key_ids"] = ch.RevokedKeys
	}
	return audit.Target{Type: "member", ID: ch.Member.User.ID}, d
}

func memberJSON(m *tenant.Member) apigen.Member {
	return apigen.Member{
		ID: m.User.ID, Email: m.User.Email, Name: strOrNil(m.User.Name),
		Role: apigen.Role(m.Role), CreatedAt: m.CreatedAt.UTC(),
	}
}
