package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tapline/tapline/internal/tenant"
)

// Directory is what token verification asks about keys and members on every use, so a
// revoked key or a removed member stops working at once; *tenant.Store is one.
type Directory interface {
	ActiveAPIKey(ctx context.Context, tenantID, keyID string) (*tenant.APIKey, error)
	GetMember(ctx context.Context, tenantID, userID string) (*tenant.Member, error)
	MemberByEmail(ctx context.Context, tenantID, email string) (*tenant.Member, error)
}

// TokenConfig configures a TokenService.
type TokenConfig struct {
	// Keys signs and verifies Tapline's own tokens. Required.
	Keys *JWTKeys
	// Issuer and Audience are the iss and aud claims of Tapline's tokens. Required.
	Issuer   string
	Audience string
	// TTL is an issued token's lifetime. Defaults to 15 minutes.
	TTL time.Duration
	// Leeway tolerates clock skew on exp, nbf and iat. Defaults to 30 seconds.
	Leeway time.Duration
	// OIDC accepts an external issuer's tokens too; nil accepts only Tapline's.
	OIDC *OIDC
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// TokenService issues short-lived JWTs for the browser and verifies them, and external OIDC
// tokens when configured. It implements TokenVerifier.
type TokenService struct {
	dir Directory
	cfg TokenConfig
	own *jwt.Parser
}

var _ TokenVerifier = (*TokenService)(nil)

// tokenType is the JWT typ header of Tapline's tokens (RFC 9068 access tokens); tokens of
// any other type are refused, so a token minted for something else cannot be replayed here.
const tokenType = "at+jwt"

// maxTokenLen refuses absurd bearer tokens before any parsing.
const maxTokenLen = 8 << 10

// claims are Tapline's token claims. The subject is the principal id (key:<id> or
// user:<id>); role and name are informative: verification re-reads both.
type claims struct {
	jwt.RegisteredClaims
	TenantID string      `json:"tid"`
	Role     tenant.Role `json:"role"`
	KeyID    string      `json:"key,omitempty"`
	UserID   string      `json:"uid,omitempty"`
}

// NewTokenService returns a TokenService.
func NewTokenService(dir Directory, cfg *TokenConfig) (*TokenService, error) {
	if dir == nil || cfg == nil || cfg.Keys == nil || cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("auth: token service needs a directory, keys, issuer and audience")
	}
	c := *cfg
	if c.TTL <= 0 {
		c.TTL = 15 * time.Minute
	}
	if c.Leeway <= 0 {
		c.Leeway = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &TokenService{
		dir: dir,
		cfg: c,
		own: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithIssuer(c.Issuer),
			jwt.WithAudience(c.Audience),
			jwt.WithLeeway(c.Leeway),
			jwt.WithTimeFunc(c.Now),
			jwt.WithStrictDecoding(),
		),
	}, nil
}

// Issue mints a token for p: its role, tenant and identity, valid for the configured TTL.
// A token minted for an API key lives no longer than the key.
func (s *TokenService) Issue(p *Principal) (token string, expiresAt time.Time, err error) {
	now := s.cfg.Now().Truncate(time.Second)
	expiresAt = now.Add(s.cfg.TTL)
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: s.cfg.Issuer, Subject: p.ID(), Audience: jwt.ClaimStrings{s.cfg.Audience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(expiresAt),
			ID: base64.RawURLEncoding.EncodeToString(jti[:]),
		},
		TenantID: p.TenantID, Role: p.Role, UserID: p.UserID,
	}
	if p.Kind == KindAPIKey {
		c.KeyID = p.KeyID
		if p.keyExpiresAt != nil && p.keyExpiresAt.Before(expiresAt) {
			expiresAt = p.keyExpiresAt.Truncate(time.Second)
			c.ExpiresAt = jwt.NewNumericDate(expiresAt)
		}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = s.cfg.Keys.SigningKeyID()
	t.Header["typ"] = tokenType
	token, err = t.SignedString(s.cfg.Keys.sign)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return token, expiresAt, nil
}

// VerifyToken returns the principal of one of Tapline's tokens, or of an external OIDC
// token when an issuer is configured. Every refusal wraps ErrUnauthenticated; a directory
// that cannot be reached is returned as is (503, not 401).
func (s *TokenService) VerifyToken(ctx context.Context, token string) (*Principal, error) {
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: token too long", ErrUnauthenticated)
	}
	// Route by the unverified issuer; each route then verifies everything with its own
	// pinned algorithms and keys, so lying about iss gains nothing.
	var peek jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &peek); err != nil {
		return nil, fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	if s.cfg.OIDC != nil && peek.Issuer == s.cfg.OIDC.cfg.Issuer && peek.Issuer != s.cfg.Issuer {
		return s.VerifyExternal(ctx, token)
	}
	return s.verifyOwn(ctx, token)
}

func (s *TokenService) verifyOwn(ctx context.Context, token string) (*Principal, error) {
	var c claims
	_, err := s.own.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != tokenType {
			return nil, errors.New("wrong token type")
		}
		kid, _ := t.Header["kid"].(string)
		pub, ok := s.cfg.Keys.PublicKey(kid)
		if !ok {
			return nil, errors.New("unknown key id")
		}
		return pub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if !tenant.ValidID(c.TenantID) || c.IssuedAt == nil {
		return nil, fmt.Errorf("%w: token lacks its tenant", ErrUnauthenticated)
	}
	if c.KeyID != "" {
		// Minted from an API key: the key must still be valid, and its role is the one that
		// counts now.
		key, err := s.dir.ActiveAPIKey(ctx, c.TenantID, c.KeyID)
		if errors.Is(err, tenant.ErrInvalidKey) || errors.Is(err, tenant.ErrNotFound) {
			return nil, fmt.Errorf("%w: the token's api key is revoked or expired", ErrUnauthenticated)
		}
		if err != nil {
			return nil, err
		}
		return KeyPrincipal(key), nil
	}
	return s.memberPrincipal(ctx, c.TenantID, c.UserID)
}

func (s *TokenService) memberPrincipal(ctx context.Context, tenantID, userID string) (*Principal, error) {
	m, err := s.dir.GetMember(ctx, tenantID, userID)
	if errors.Is(err, tenant.ErrNotFound) {
		return nil, fmt.Errorf("%w: not a member of the tenant", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	return &Principal{Kind: KindUser, TenantID: tenantID, UserID: m.User.ID, Role: m.Role, Name: m.User.Email}, nil
}

// KeyPrincipal is the principal of a verified API key.
func KeyPrincipal(key *tenant.APIKey) *Principal {
	return &Principal{
		Kind: KindAPIKey, TenantID: key.TenantID, UserID: key.CreatedByUser,
		KeyID: key.ID, Role: key.Role, Name: key.Name, keyExpiresAt: key.ExpiresAt,
	}
}
