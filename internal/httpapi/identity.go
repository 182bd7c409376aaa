package httpapi

import (
	"context"
	"time"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/tenant"
)

// GetMe answers who the caller is.
func (s *Server) GetMe(ctx context.Context, _ apigen.GetMeRequestObject) (apigen.GetMeResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleViewer)
	if err != nil {
		return nil, err
	}
	t, err := s.cfg.Tenants.GetTenant(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	return apigen.GetMe200JSONResponse{
		Principal: apigen.Principal{
			Kind: apigen.PrincipalKind(p.Kind), ID: p.ID(), Name: strOrNil(p.Name),
			UserID: strOrNil(p.UserID), KeyID: strOrNil(p.KeyID),
		},
		Tenant: apigen.Tenant{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt},
		Role:   apigen.Role(p.Role),
	}, nil
}

// ListAPIKeys lists the tenant's keys.
func (s *Server) ListAPIKeys(ctx context.Context, req apigen.ListAPIKeysRequestObject) (apigen.ListAPIKeysResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	page, err := s.cfg.Tenants.ListAPIKeys(ctx, p.TenantID, tenant.ListParams{Limit: deref(req.Params.Limit), Cursor: deref(req.Params.Cursor)})
	if err != nil {
		return nil, err
	}
	out := apigen.ListAPIKeys200JSONResponse{Items: make([]apigen.APIKey, len(page.Items)), NextCursor: strOrNil(page.NextCursor)}
	for i, k := range page.Items {
		out.Items[i] = apiKeyJSON(&k)
	}
	return out, nil
}

// CreateAPIKey creates a key whose role does not exceed the caller's.
func (s *Server) CreateAPIKey(ctx context.Context, req apigen.CreateAPIKeyRequestObject) (apigen.CreateAPIKeyResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	role := tenant.Role(req.Body.Role)
	if !p.Role.AtLeast(role) {
		return nil, tenant.ErrRoleTooHigh
	}
	params := tenant.CreateAPIKeyParams{Name: deref(req.Body.Name), Role: role, CreatedByUser: p.UserID, ExpiresAt: req.Body.ExpiresAt,
		By: granterOf(p), After: auditAfter(s, p.TenantID, audit.ActionAPIKeyCreate, keyAudit)}
	if p.Kind == auth.KindAPIKey {
		params.CreatedByKey = p.KeyID
	}
	key, secret, err := s.cfg.Tenants.CreateAPIKey(ctx, p.TenantID, params)
	if err != nil {
		return nil, err
	}
	k := apiKeyJSON(key)
	return apigen.CreateAPIKey201JSONResponse{
		ID: k.ID, Name: k.Name, Role: k.Role, Prefix: k.Prefix, CreatedBy: k.CreatedBy,
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, Secret: secret,
	}, nil
}

// RevokeAPIKey revokes one of the tenant's keys.
func (s *Server) RevokeAPIKey(ctx context.Context, req apigen.RevokeAPIKeyRequestObject) (apigen.RevokeAPIKeyResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	key, err := s.cfg.Tenants.GetAPIKey(ctx, p.TenantID, req.ID)
	if err != nil {
		return nil, err
	}
	// A key above the caller's role is beyond its reach, as creating one would be.
	if !p.Role.AtLeast(key.Role) {
		return nil, tenant.ErrRoleTooHigh
	}
	// The store reads the caller again under the tenant's lock: demoted or revoked while
	// this request waited, it revokes nothing.
	key, err = s.cfg.Tenants.RevokeAPIKeyAs(ctx, p.TenantID, req.ID, granterOf(p), auditAfter(s, p.TenantID, audit.ActionAPIKeyRevoke, keyAudit))
	if err != nil {
		return nil, err
	}
	return apigen.RevokeAPIKey200JSONResponse(apiKeyJSON(key)), nil
}

// keyAudit describes a key for the audit log: never its secret.
func keyAudit(k *tenant.APIKey) (audit.Target, map[string]any) {
	d := map[string]any{"name": k.Name, "role": k.Role, "prefix": k.Prefix}
	if k.ExpiresAt != nil {
		d["expires_at"] = k.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return audit.Target{Type: "api_key", ID: k.ID}, d
}

func apiKeyJSON(k *tenant.APIKey) apigen.APIKey {
	createdBy := k.CreatedByUser
	if k.CreatedByKey != "" {
		createdBy = "key:" + k.CreatedByKey
	} else if createdBy != "" {
		createdBy = "user:" + createdBy
	}
	return apigen.APIKey{
		ID: k.ID, Name: k.Name, Role: apigen.Role(k.Role), Prefix: k.Prefix, CreatedBy: strOrNil(createdBy),
		CreatedAt: k.CreatedAt.UTC(), ExpiresAt: utc(k.ExpiresAt), LastUsedAt: utc(k.LastUsedAt), RevokedAt: utc(k.RevokedAt),
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
