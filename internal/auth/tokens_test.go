package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func seed(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

type fixture struct {
	store  *tenant.Store
	tokens *auth.TokenService
	a, b   *tenant.BootstrapResult
}

func setup(t *testing.T, keys *auth.JWTKeys, oidc *auth.OIDC) *fixture {
	t.Helper()
	store := tenant.NewStore(dbtest.Pool(t))
	tokens, err := auth.NewTokenService(store, &auth.TokenConfig{Keys: keys, Issuer: "tapline", Audience: "tapline-api", TTL: time.Minute, OIDC: oidc})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(n string) *tenant.BootstrapResult {
		res, err := store.Bootstrap(context.Background(), tenant.BootstrapParams{
			TenantName: n + "-" + t.Name() + "-" + time.Now().Format("150405.000000000"),
			Email:      n + "." + strings.ReplaceAll(strings.ToLower(t.Name()), "/", ".") + "@auth.test",
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	return &fixture{store: store, tokens: tokens, a: mk("a"), b: mk("b")}
}

func TestJWTKeys(t *testing.T) {
	t.Parallel()
	s1, s2 := seed(t), seed(t)
	k, err := auth.ParseJWTKeys("new:" + s1 + ", old:" + s2)
	if err != nil {
		t.Fatal(err)
	}
	if k.SigningKeyID() != "new" {
		t.Fatalf("signing kid = %s", k.SigningKeyID())
	}
	if _, ok := k.PublicKey("old"); !ok {
		t.Fatal("old key does not verify")
	}
	if strings.Contains(k.String(), s1) {
		t.Fatal("String shows key material")
	}
	for name, bad := range map[string]string{
		"NoKid": s1, "ShortSeed": "a:" + base64.StdEncoding.EncodeToString([]byte("short")), "BadKid": "a b:" + s1,
		"Duplicate": "a:" + s1 + ",a:" + s2, "NotBase64": "a:!!!",
	} {
		if _, err := auth.ParseJWTKeys(bad); !errors.Is(err, auth.ErrJWTKeyConfig) {
			t.Errorf("%s: err = %v", name, err)
		} else if strings.Contains(err.Error(), s1) {
			t.Errorf("%s: error shows key material", name)
		}
	}
	// Derived keys are stable for a secret, differ between secrets, and follow rotation.
	d1, err := auth.DeriveJWTKeys(s1)
	if err != nil {
		t.Fatal(err)
	}
	d1again, _ := auth.DeriveJWTKeys("2026:" + s1)
	d2, _ := auth.DeriveJWTKeys(s2 + "," + s1)
	if d1.SigningKeyID() != d1again.SigningKeyID() || d1.SigningKeyID() == d2.SigningKeyID() {
		t.Fatalf("derived kids: %s %s %s", d1.SigningKeyID(), d1again.SigningKeyID(), d2.SigningKeyID())
	}
	if _, ok := d2.PublicKey(d1.SigningKeyID()); !ok {
		t.Fatal("the rotated-out secret's key no longer verifies")
	}
}

func TestTokenService(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keys, err := auth.ParseJWTKeys("k1:" + seed(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("KeyTokenCarriesKeyAndDiesWithIt", func(t *testing.T) {
		t.Parallel()
		f := setup(t, keys, nil)
		key, secret, err := f.store.CreateAPIKey(ctx, f.a.Tenant.ID, tenant.CreateAPIKeyParams{Name: "ci", Role: tenant.RoleMember, CreatedByUser: f.a.User.ID})
		if err != nil {
			t.Fatal(err)
		}
		verified, err := f.store.VerifyAPIKey(ctx, secret)
		if err != nil {
			t.Fatal(err)
		}
		tok, exp, err := f.tokens.Issue(auth.KeyPrincipal(verified))
		if err != nil || time.Until(exp) > time.Minute || time.Until(exp) < 50*time.Second {
			t.Fatalf("issue: exp %s, %v", exp, err)
		}
		p, err := f.tokens.VerifyToken(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind != auth.KindAPIKey || p.KeyID != key.ID || p.Role != tenant.RoleMember || p.TenantID != f.a.Tenant.ID || p.UserID != f.a.User.ID {
			t.Fatalf("principal = %+v", p)
		}
		if _, err := f.store.RevokeAPIKey(ctx, f.a.Tenant.ID, key.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := f.tokens.VerifyToken(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("token of a revoked key = %v, want ErrUnauthenticated", err)
		}
	})
	t.Run("KeyTokenNeverOutlivesItsKey", func(t *testing.T) {
		t.Parallel()
		f := setup(t, keys, nil)
		soon := time.Now().Add(20 * time.Second)
		_, secret, err := f.store.CreateAPIKey(ctx, f.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleViewer, ExpiresAt: &soon})
		if err != nil {
			t.Fatal(err)
		}
		k, _ := f.store.VerifyAPIKey(ctx, secret)
		if _, exp, _ := f.tokens.Issue(auth.KeyPrincipal(k)); exp.After(soon) {
			t.Fatalf("token expires %s, after its key (%s)", exp, soon)
		}
	})
	t.Run("UserTokenFollowsMembership", func(t *testing.T) {
		t.Parallel()
		f := setup(t, keys, nil)
		ch, err := f.store.AddMember(ctx, f.a.Tenant.ID, "u."+f.a.User.Email, tenant.RoleAdmin, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := f.tokens.Issue(&auth.Principal{Kind: auth.KindUser, TenantID: f.a.Tenant.ID, UserID: ch.Member.User.ID, Role: tenant.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.ChangeMemberRole(ctx, f.a.Tenant.ID, ch.Member.User.ID, tenant.RoleViewer, tenant.RoleOwner); err != nil {
			t.Fatal(err)
		}
		p, err := f.tokens.VerifyToken(ctx, tok)
		if err != nil || p.Role != tenant.RoleViewer {
			t.Fatalf("after demotion = %+v, %v; want viewer", p, err)
		}
		if _, err := f.store.RemoveMember(ctx, f.a.Tenant.ID, ch.Member.User.ID, tenant.RoleOwner); err != nil {
			t.Fatal(err)
		}
		if _, err := f.tokens.VerifyToken(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("after removal = %v", err)
		}
	})
	t.Run("RotationKeepsOldTokensValid", func(t *testing.T) {
		t.Parallel()
		s1, s2 := seed(t), seed(t)
		before, _ := auth.ParseJWTKeys("k1:" + s1)
		after, _ := auth.ParseJWTKeys("k2:" + s2 + ",k1:" + s1)
		f := setup(t, before, nil)
		rotated, err := auth.NewTokenService(f.store, &auth.TokenConfig{Keys: after, Issuer: "tapline", Audience: "tapline-api"})
		if err != nil {
			t.Fatal(err)
		}
		k, _ := f.store.VerifyAPIKey(ctx, f.a.Secret)
		old, _, _ := f.tokens.Issue(auth.KeyPrincipal(k))
		if _, err := rotated.VerifyToken(ctx, old); err != nil {
			t.Fatalf("token signed with the previous key: %v", err)
		}
		fresh, _, _ := rotated.Issue(auth.KeyPrincipal(k))
		if _, err := f.tokens.VerifyToken(ctx, fresh); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("a keyring without k2 accepted a k2 token: %v", err)
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		f := setup(t, keys, nil)
		// A token naming tenant b but minted for tenant a's key is refused: the key is not
		// tenant b's.
		k, _ := f.store.VerifyAPIKey(ctx, f.a.Secret)
		p := auth.KeyPrincipal(k)
		p.TenantID = f.b.Tenant.ID
		tok, _, err := f.tokens.Issue(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.tokens.VerifyToken(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("token for tenant b with a's key = %v", err)
		}
		u, _, _ := f.tokens.Issue(&auth.Principal{Kind: auth.KindUser, TenantID: f.b.Tenant.ID, UserID: f.a.User.ID, Role: tenant.RoleOwner})
		if _, err := f.tokens.VerifyToken(ctx, u); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("user token for a tenant they are not in = %v", err)
		}
	})
}

// jwksServer serves one signing key as a JWKS and counts fetches.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int32
	kid  atomic.Value
	pub  ed25519.PublicKey
}

func newJWKS(t *testing.T, pub ed25519.PublicKey, kid string) *jwksServer {
	t.Helper()
	j := &jwksServer{pub: pub}
	j.kid.Store(kid)
	j.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.hits.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{
			map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": j.kid.Load(), "alg": "EdDSA", "use": "sig",
				"x": base64.RawURLEncoding.EncodeToString(j.pub)},
			map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
		}})
	}))
	t.Cleanup(j.Close)
	return j
}

func idToken(t *testing.T, priv ed25519.PrivateKey, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOIDC(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keys, _ := auth.ParseJWTKeys("k1:" + seed(t))
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	js := newJWKS(t, pub, "idp-1")
	oidc, err := auth.NewOIDC(&auth.OIDCConfig{Issuer: "https://idp.test", Audience: "tapline", JWKSURL: js.URL, RefreshInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, keys, oidc)
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		c := jwt.MapClaims{"iss": "https://idp.test", "aud": "tapline", "sub": "abc", "email": f.a.User.Email,
			"email_verified": true, "tapline_tenant": f.a.Tenant.ID, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	p, err := f.tokens.VerifyToken(ctx, idToken(t, priv, "idp-1", claims(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != auth.KindUser || p.UserID != f.a.User.ID || p.Role != tenant.RoleOwner || p.TenantID != f.a.Tenant.ID {
		t.Fatalf("principal = %+v", p)
	}
	// An issuer spelling the tenant id in upper case names the same tenant, in the canonical
	// form everything keyed by tenant uses.
	p, err = f.tokens.VerifyToken(ctx, idToken(t, priv, "idp-1", claims(func(c jwt.MapClaims) { c["tapline_tenant"] = strings.ToUpper(f.a.Tenant.ID) })))
	if err != nil || p.TenantID != f.a.Tenant.ID {
		t.Fatalf("upper-case tenant claim: principal %+v, %v", p, err)
	}
	for name, c := range map[string]jwt.MapClaims{
		"NotAMember":      claims(func(c jwt.MapClaims) { c["email"] = "stranger@auth.test" }),
		"OtherTenant":     claims(func(c jwt.MapClaims) { c["tapline_tenant"] = f.b.Tenant.ID }),
		"NoTenant":        claims(func(c jwt.MapClaims) { delete(c, "tapline_tenant") }),
		"UnverifiedEmail": claims(func(c jwt.MapClaims) { c["email_verified"] = false }),
		"WrongAudience":   claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" }),
		"Expired":         claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }),
		"NoExpiry":        claims(func(c jwt.MapClaims) { delete(c, "exp") }),
	} {
		if _, err := f.tokens.VerifyToken(ctx, idToken(t, priv, "idp-1", c)); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated", name, err)
		}
	}
	// Forged kids are refused without hammering the issuer: one fetch per RefreshInterval.
	before := js.hits.Load()
	for range 20 {
		if _, err := f.tokens.VerifyToken(ctx, idToken(t, priv, "forged", claims(nil))); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatal("unknown kid accepted")
		}
	}
	if got := js.hits.Load() - before; got > 1 {
		t.Fatalf("%d JWKS fetches for unknown kids, want at most 1", got)
	}
	// The issuer rotates: a new kid is fetched once the refresh interval allows.
	rotating, _ := auth.NewOIDC(&auth.OIDCConfig{Issuer: "https://idp.test", Audience: "tapline", JWKSURL: js.URL, RefreshInterval: time.Nanosecond})
	f2, _ := auth.NewTokenService(f.store, &auth.TokenConfig{Keys: keys, Issuer: "tapline", Audience: "tapline-api", OIDC: rotating})
	if _, err := f2.VerifyToken(ctx, idToken(t, priv, "idp-1", claims(nil))); err != nil {
		t.Fatal(err)
	}
	js.kid.Store("idp-2")
	if _, err := f2.VerifyToken(ctx, idToken(t, priv, "idp-2", claims(nil))); err != nil {
		t.Fatalf("rotated kid: %v", err)
	}
}

// TestOIDCEmailVerified holds an external token's email to its email_verified claim: an
// address the issuer does not say it verified may be one the user typed, and must not pick
// the member who owns it.
func TestOIDCEmailVerified(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keys, _ := auth.ParseJWTKeys("k1:" + seed(t))
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	js := newJWKS(t, pub, "idp-1")
	newService := func(f *fixture, trust bool) *auth.TokenService {
		oidc, err := auth.NewOIDC(&auth.OIDCConfig{
			Issuer: "https://idp.test", Audience: "tapline", JWKSURL: js.URL, TrustEmailWithoutVerifiedClaim: trust,
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err := auth.NewTokenService(f.store, &auth.TokenConfig{Keys: keys, Issuer: "tapline", Audience: "tapline-api", OIDC: oidc})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f := setup(t, keys, nil)
	strict, trusting := newService(f, false), newService(f, true)
	// claims name tenant a's owner by email; mut adjusts them.
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		c := jwt.MapClaims{"iss": "https://idp.test", "aud": "tapline", "sub": "abc", "email": f.a.User.Email,
			"tapline_tenant": f.a.Tenant.ID, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	verified := func(v any) func(jwt.MapClaims) {
		return func(c jwt.MapClaims) { c["email_verified"] = v }
	}
	inSub := func(v any) func(jwt.MapClaims) {
		return func(c jwt.MapClaims) {
			delete(c, "email")
			c["sub"] = f.a.User.Email
			if v != nil {
				c["email_verified"] = v
			}
		}
	}
	accept := func(t *testing.T, s *auth.TokenService, c jwt.MapClaims) {
		t.Helper()
		tok := idToken(t, priv, "idp-1", c)
		for name, verify := range map[string]func(context.Context, string) (*auth.Principal, error){
			"VerifyExternal": s.VerifyExternal, "VerifyToken": s.VerifyToken,
		} {
			p, err := verify(ctx, tok)
			if err != nil || p.UserID != f.a.User.ID || p.TenantID != f.a.Tenant.ID {
				t.Fatalf("%s: principal %+v, %v; want tenant a's owner", name, p, err)
			}
		}
	}
	refuse := func(t *testing.T, s *auth.TokenService, c jwt.MapClaims) {
		t.Helper()
		tok := idToken(t, priv, "idp-1", c)
		for name, verify := range map[string]func(context.Context, string) (*auth.Principal, error){
			"VerifyExternal": s.VerifyExternal, "VerifyToken": s.VerifyToken,
		} {
			p, err := verify(ctx, tok)
			var unverified *auth.UnverifiedEmailError
			if !errors.As(err, &unverified) || !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("%s: principal %+v, err %v; want an UnverifiedEmailError", name, p, err)
			}
			if !strings.Contains(unverified.Reason, "email_verified") {
				t.Fatalf("%s: reason %q does not name email_verified", name, unverified.Reason)
			}
		}
	}
	for name, c := range map[string]jwt.MapClaims{
		"True":            claims(verified(true)),
		"StringTrue":      claims(verified("true")),
		"TrueInSub":       claims(inSub(true)),
		"StringTrueInSub": claims(inSub("true")),
	} {
		t.Run("Accepts/"+name, func(t *testing.T) {
			accept(t, strict, c)
			accept(t, trusting, c)
		})
	}
	for name, c := range map[string]jwt.MapClaims{
		"Missing":      claims(nil),
		"MissingInSub": claims(inSub(nil)),
		"False":        claims(verified(false)),
		"FalseInSub":   claims(inSub(false)),
		"StringFalse":  claims(verified("false")),
		"StringTRUE":   claims(verified("TRUE")),
		"One":          claims(verified(1)),
		"Null":         claims(verified(nil)),
		"Object":       claims(verified(map[string]any{"value": true})),
		"ListOfTrue":   claims(verified([]any{true})),
		"EmptyString":  claims(verified("")),
		"StringYes":    claims(verified("yes")),
	} {
		t.Run("Refuses/"+name, func(t *testing.T) {
			refuse(t, strict, c)
		})
	}
	// An issuer trusted without the claim gets its emails trusted when the claim is absent,
	// never when it says the address is not verified.
	t.Run("TrustedIssuer", func(t *testing.T) {
		accept(t, trusting, claims(nil))
		accept(t, trusting, claims(inSub(nil)))
		refuse(t, trusting, claims(verified(false)))
		refuse(t, trusting, claims(verified("false")))
		refuse(t, trusting, claims(inSub(false)))
	})
}
