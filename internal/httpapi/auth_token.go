package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/tenant"
)

// CreateToken exchanges an API key or an external OIDC token for a short-lived JWT.
func (s *Server) CreateToken(ctx context.Context, req apigen.CreateTokenRequestObject) (apigen.CreateTokenResponseObject, error) {
	if s.cfg.Tokens == nil {
		return nil, newProblem(http.StatusNotFound, "not-found", "Not found", "token exchange is not configured")
	}
	apiKey, idToken := deref(req.Body.APIKey), deref(req.Body.IDToken)
	var p *auth.Principal
	var via string
	switch {
	case apiKey != "" && idToken != "":
		return nil, invalidInput(FieldProblem{Field: "id_token", Reason: "send api_key or id_token, not both"})
	case apiKey != "":
		key, err := s.cfg.Tenants.VerifyAPIKey(ctx, apiKey)
		if errors.Is(err, tenant.ErrInvalidKey) {
			return nil, fmt.Errorf("%w: invalid api key", auth.ErrUnauthenticated)
		}
		if err != nil {
			return nil, err
		}
		p, via = principalOfKey(key), "api_key"
	case idToken != "":
		var err error
		if p, err = s.cfg.Tokens.VerifyExternal(ctx, idToken); err != nil {
			return nil, err
		}
		via = "oidc"
	default:
		return nil, invalidInput(FieldProblem{Field: "api_key", Reason: "send api_key or id_token"})
	}
	token, expiresAt, err := s.cfg.Tokens.Issue(p)
	if err != nil {
		return nil, err
	}
	// No audit record, no token.
	if _, err := s.cfg.Audit.Record(ctx, nil, audit.Entry{
		TenantID: p.TenantID, Actor: actorOf(p), Action: audit.ActionTokenIssue,
		Target:  audit.Target{Type: string(p.Kind), ID: p.ID()},
		Details: map[string]any{"via": via, "role": p.Role, "expires_at": expiresAt.UTC().Format(time.RFC3339)},
	}); err != nil {
		return nil, err
	}
	noStore := "no-store"
	return apigen.CreateToken200JSONResponse{
		Body:    apigen.Token{Token: token, TokenType: apigen.TokenTokenTypeBearer, ExpiresAt: expiresAt.UTC()},
		Headers: apigen.CreateToken200ResponseHeaders{CacheControl: &noStore},
	}, nil
}

// principalOfKey is the principal an API key authenticates as, the same one
// auth.Authenticator gives.
func principalOfKey(key *tenant.APIKey) *auth.Principal {
	return auth.KeyPrincipal(key)
}
