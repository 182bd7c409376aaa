// Package auth turns a bearer token into a Principal and answers whether that principal may
// do something.
//
// A token is either an API key (tpl_…, verified against package tenant) or a JWT (short-lived
// browser tokens this service issues, or an external OIDC issuer's). The principal travels in
// the request context; handlers and domain services ask Require for the role they need.
//
// JWTs (TokenService) are verified with pinned algorithms (EdDSA for Tapline's own, the
// asymmetric ones for OIDC), required exp, iss, aud and iat, a small leeway and key ids with
// rotation. A token minted from an API key re-checks the key on every use, so revoking the
// key ends its tokens; a user's token re-reads the membership, so removal and role changes
// apply at once.
package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tapline/tapline/internal/tenant"
)

// Errors callers map to HTTP statuses.
var (
	// ErrUnauthenticated means no credentials or bad ones (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the principal's role is too low (403).
	ErrForbidden = errors.New("forbidden")
)

// Kind says what authenticated a principal.
type Kind string

// Principal kinds.
const (
	KindAPIKey Kind = "api_key"
	KindUser   Kind = "user"
)

// Principal is who is calling: a user (through a JWT) or an API key, always within one
// tenant. A principal is shared by the requests it authenticates (see WithKeyCache): it is
// never changed once made.
type Principal struct {
	Kind     Kind
	TenantID string
	// UserID is the user behind the call: the JWT's subject, or the user who created the key.
	UserID string
	// KeyID is set for API keys, and for JWTs minted from one.
	KeyID string
	Role  tenant.Role
	// Name is a display name: the key's name or the user's email.
	Name string

	// keyExpiresAt bounds tokens minted for an API key.
	keyExpiresAt *time.Time
}

// ID is a stable identifier for audit and presence: "key:<id>" or "user:<id>".
func (p *Principal) ID() string {
	if p.Kind == KindAPIKey {
		return "key:" + p.KeyID
	}
	return "user:" + p.UserID
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the context's principal.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}

// Require returns the context's principal if its role is at least min, ErrUnauthenticated
// when there is none and ErrForbidden when its role is too low.
func Require(ctx context.Context, min tenant.Role) (*Principal, error) {
	p, ok := FromContext(ctx)
	if !ok {
		return nil, ErrUnauthenticated
	}
	if !p.Role.AtLeast(min) {
		return nil, fmt.Errorf("%w: needs role %s, has %s", ErrForbidden, min, p.Role)
	}
	return p, nil
}

// KeyVerifier verifies API keys; *tenant.Store is one.
type KeyVerifier interface {
	VerifyAPIKey(ctx context.Context, token string) (*tenant.APIKey, error)
}

// TokenVerifier verifies JWTs and returns their principal.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, token string) (*Principal, error)
}

// Authenticator verifies bearer tokens.
type Authenticator struct {
	keys   KeyVerifier
	tokens TokenVerifier
	cache  *keyCache
}

// Option configures an Authenticator.
type Option func(*Authenticator)

// NewAuthenticator returns an Authenticator. tokens may be nil when JWTs are not accepted.
func NewAuthenticator(keys KeyVerifier, tokens TokenVerifier, opts ...Option) *Authenticator {
	a := &Authenticator{keys: keys, tokens: tokens}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Authenticate returns the principal a bearer token stands for. Every refusal wraps
// ErrUnauthenticated; infrastructure failures (database away) are returned as they are so the
// caller can answer 503 rather than 401.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	if tenant.LooksLikeAPIKey(token) {
		var p *Principal
		var err error
		if a.cache != nil {
			p, err = a.cache.verify(ctx, token)
		} else {
			var key *tenant.APIKey
			if key, err = a.keys.VerifyAPIKey(ctx, token); err == nil {
				p = KeyPrincipal(key)
			}
		}
		if errors.Is(err, tenant.ErrInvalidKey) {
			return nil, fmt.Errorf("%w: invalid api key", ErrUnauthenticated)
		}
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	if a.tokens == nil {
		return nil, fmt.Errorf("%w: not an api key", ErrUnauthenticated)
	}
	p, err := a.tokens.VerifyToken(ctx, token)
	if err != nil {
		return nil, err
	}
	return p, nil
}
