package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tapline/tapline/internal/tenant"
)

// OIDCConfig describes an external OpenID Connect issuer whose ID or access tokens Tapline
// accepts (TAPLINE_OIDC_*).
type OIDCConfig struct {
	// Issuer and Audience must match the token's iss and aud. Required.
	Issuer   string
	Audience string
	// JWKSURL serves the issuer's signing keys. Required.
	JWKSURL string
	// TenantClaim names the claim that holds the Tapline tenant id. Defaults to
	// "tapline_tenant".
	TenantClaim string
	// TrustEmailWithoutVerifiedClaim lets a token without an email_verified claim identify
	// its user by email, for issuers that verify every address and never send the claim.
	// Off by default: an address is used only when email_verified is true, since an issuer
	// that lets users type an address would otherwise let them act as its owner. A token
	// whose email_verified is false is refused either way.
	TrustEmailWithoutVerifiedClaim bool
	// HTTPClient fetches the JWKS. Defaults to a client with a 10 second timeout.
	HTTPClient *http.Client
	// RefreshInterval is the least time between two JWKS fetches caused by unknown key ids,
	// so a stream of forged kids cannot hammer the issuer. Defaults to one minute.
	RefreshInterval time.Duration
	// MaxAge is how long fetched keys are used before they are fetched again (stale keys
	// keep working while the issuer is unreachable). Defaults to one hour.
	MaxAge time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// OIDC verifies an external issuer's tokens against its JWKS.
type OIDC struct {
	cfg    OIDCConfig
	parser *jwt.Parser

	mu          sync.Mutex
	keys        map[string]jwk
	fetchedAt   time.Time
	lastAttempt time.Time
	fetches     int
}

// NewOIDC returns an OIDC verifier. It fetches nothing until the first token arrives.
func NewOIDC(cfg *OIDCConfig) (*OIDC, error) {
	if cfg == nil || cfg.Issuer == "" || cfg.Audience == "" || cfg.JWKSURL == "" {
		return nil, errors.New("auth: oidc needs an issuer, an audience and a jwks url")
	}
	c := *cfg
	if c.TenantClaim == "" {
		c.TenantClaim = "tapline_tenant"
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = time.Minute
	}
	if c.MaxAge <= 0 {
		c.MaxAge = time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &OIDC{
		cfg: c,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithIssuer(c.Issuer),
			jwt.WithAudience(c.Audience),
			jwt.WithLeeway(30*time.Second),
			jwt.WithTimeFunc(c.Now),
		),
	}, nil
}

// Fetches reports how many times the JWKS was fetched (for tests and metrics).
func (o *OIDC) Fetches() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fetches
}

// externalIdentity is what an external token says, once verified.
type externalIdentity struct {
	TenantID string
	Email    string
}

func (o *OIDC) verify(ctx context.Context, token string) (*externalIdentity, error) {
	c := jwt.MapClaims{}
	_, err := o.parser.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return o.key(ctx, kid, t.Method.Alg())
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	tid, _ := c[o.cfg.TenantClaim].(string)
	if !tenant.ValidID(tid) {
		return nil, fmt.Errorf("%w: token has no %s claim naming a tenant", ErrUnauthenticated, o.cfg.TenantClaim)
	}
	// An issuer may spell the id in upper case; everything keyed by tenant (Redis keys, the
	// audit chain's documents) uses the canonical form the database returns.
	tid = strings.ToLower(tid)
	email, _ := c["email"].(string)
	if email == "" {
		// Some issuers put the address in sub.
		if sub, _ := c["sub"].(string); sub != "" {
			if a, err := mail.ParseAddress(sub); err == nil && a.Address == sub {
				email = sub
			}
		}
	}
	if email == "" {
		return nil, fmt.Errorf("%w: token carries no email", ErrUnauthenticated)
	}
	if err := o.checkEmailVerified(c); err != nil {
		return nil, err
	}
	return &externalIdentity{TenantID: tid, Email: email}, nil
}

// UnverifiedEmailError refuses an external token whose email its issuer does not say it
// verified: such an address may be one the user typed, so it must not pick a member. It is an
// ErrUnauthenticated whose Reason can be shown to the caller, who holds the token anyway.
type UnverifiedEmailError struct {
	Reason string
}

func (e *UnverifiedEmailError) Error() string {
	return ErrUnauthenticated.Error() + ": " + e.Reason
}

// Unwrap makes the error an ErrUnauthenticated.
func (e *UnverifiedEmailError) Unwrap() error { return ErrUnauthenticated }

// checkEmailVerified accepts the token's email only when its email_verified claim is true
// (the JSON boolean, or the string "true" some issuers send), or when the claim is absent and
// the issuer is configured as trusted without it.
func (o *OIDC) checkEmailVerified(c jwt.MapClaims) error {
	v, ok := c["email_verified"]
	switch {
	case !ok && o.cfg.TrustEmailWithoutVerifiedClaim:
		return nil
	case !ok:
		return &UnverifiedEmailError{Reason: "the token has no email_verified claim, so its email is not known to be verified"}
	case v == true || v == "true":
		return nil
	}
	return &UnverifiedEmailError{Reason: "the token's email_verified claim is not true, so its email cannot identify a member"}
}

// key returns the issuer's verifying key for kid, fetching the JWKS when the key is unknown
// (at most once per RefreshInterval) or the cached set is older than MaxAge.
func (o *OIDC) key(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	k, known := o.keys[kid]
	stale := now.Sub(o.fetchedAt) > o.cfg.MaxAge
	if (!known || stale) && now.Sub(o.lastAttempt) >= o.cfg.RefreshInterval {
		o.lastAttempt = now
		o.fetches++
		keys, err := o.fetch(ctx)
		if err == nil {
			o.keys, o.fetchedAt = keys, now
			k, known = keys[kid]
		} else if !known {
			return nil, fmt.Errorf("fetch jwks: %w", err)
		}
	}
	if !known {
		return nil, errors.New("unknown key id")
	}
	if k.alg != "" && k.alg != alg {
		return nil, fmt.Errorf("key %s is for %s, token says %s", kid, k.alg, alg)
	}
	if !k.fits(alg) {
		return nil, fmt.Errorf("key %s cannot verify %s", kid, alg)
	}
	return k.pub, nil
}

type jwk struct {
	alg string
	pub crypto.PublicKey
}

func (k jwk) fits(alg string) bool {
	switch k.pub.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return strings.HasPrefix(alg, "ES")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func (o *OIDC) fetch(ctx context.Context) (map[string]jwk, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := o.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", res.StatusCode)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	out := map[string]jwk{}
	for _, raw := range doc.Keys {
		kid, k, err := parseJWK(raw)
		if err != nil || kid == "" {
			continue // a key we cannot use is not an error for the others
		}
		out[kid] = k
	}
	if len(out) == 0 {
		return nil, errors.New("no usable signing keys")
	}
	return out, nil
}

func parseJWK(raw json.RawMessage) (string, jwk, error) {
	var j struct {
		Kid, Kty, Alg, Use, Crv, N, E, X, Y string
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return "", jwk{}, err
	}
	if j.Use != "" && j.Use != "sig" {
		return "", jwk{}, errors.New("not a signing key")
	}
	b := func(s string) []byte {
		v, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		return v
	}
	k := jwk{alg: j.Alg}
	switch j.Kty {
	case "RSA":
		n, e := new(big.Int).SetBytes(b(j.N)), new(big.Int).SetBytes(b(j.E))
		if n.BitLen() < 2048 || !e.IsInt64() || e.Int64() < 3 {
			return "", jwk{}, errors.New("weak rsa key")
		}
		k.pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		default:
			return "", jwk{}, errors.New("unsupported curve")
		}
		size := (curve.Params().BitSize + 7) / 8
		x, y := b(j.X), b(j.Y)
		if len(x) != size || len(y) != size {
			return "", jwk{}, errors.New("bad ec point")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return "", jwk{}, err
		}
		k.pub = pub
	case "OKP":
		x := b(j.X)
		if j.Crv != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return "", jwk{}, errors.New("unsupported okp key")
		}
		k.pub = ed25519.PublicKey(x)
	default:
		return "", jwk{}, errors.New("unsupported key type")
	}
	return j.Kid, k, nil
}

// VerifyExternal verifies an external OIDC token and returns the principal of the member it
// names: the tenant from the configured claim, the user by verified email, who must be a
// member of that tenant.
func (s *TokenService) VerifyExternal(ctx context.Context, token string) (*Principal, error) {
	if s.cfg.OIDC == nil {
		return nil, fmt.Errorf("%w: no external issuer is configured", ErrUnauthenticated)
	}
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: token too long", ErrUnauthenticated)
	}
	id, err := s.cfg.OIDC.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	m, err := s.dir.MemberByEmail(ctx, id.TenantID, id.Email)
	if errors.Is(err, tenant.ErrNotFound) {
		return nil, fmt.Errorf("%w: not a member of the tenant", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	return &Principal{Kind: KindUser, TenantID: id.TenantID, UserID: m.User.ID, Role: m.Role, Name: m.User.Email}, nil
}
