package httpapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/tenant"
)

// exchange trades an API key for a JWT through the API.
func (e *env) exchange(t *testing.T, key string) string {
	t.Helper()
	r := e.do(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": key})
	if r.status != 200 || r.body["token_type"] != "Bearer" || r.body["expires_at"] == nil || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("exchange = %d %s", r.status, r.raw)
	}
	return r.body["token"].(string)
}

// claimsFor are valid claims for tenant a's bootstrap key, as the server would issue them.
func (e *env) claimsFor() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": "tapline", "aud": []string{"tapline-api"}, "sub": "key:" + e.a.Key.ID,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"tid": e.a.Tenant.ID, "role": "owner", "key": e.a.Key.ID,
	}
}

func sign(t *testing.T, method jwt.SigningMethod, key any, kid, typ string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	if typ != "" {
		tok.Header["typ"] = typ
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenExchange(t *testing.T) {
	t.Parallel()
	t.Run("KeyTokenActsAsTheKeyUntilRevoked", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"name": "browser", "role": "member"})
		keyID, secret := r.body["id"].(string), r.body["secret"].(string)
		tok := e.exchange(t, secret)
		me := e.do(t, "GET", "/v1/me", tok, nil)
		p, _ := me.body["principal"].(map[string]any)
		if me.status != 200 || me.body["role"] != "member" || p["key_id"] != keyID || p["kind"] != "api_key" {
			t.Fatalf("me with token = %d %s", me.status, me.raw)
		}
		// The token carries the key's role: no more.
		requireProblem(t, e.do(t, "GET", "/v1/api-keys", tok, nil), 403, "")
		e.do(t, "DELETE", "/v1/api-keys/"+keyID, e.a.Secret, nil)
		requireProblem(t, e.do(t, "GET", "/v1/me", tok, nil), 401, "")
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": secret}), 401, "")
		issued := auditActions(t, e.do(t, "GET", "/v1/audit?action=auth.token.issue", e.a.Secret, nil))
		if len(issued) != 1 {
			t.Fatalf("token issues audited: %v", issued)
		}
	})
	t.Run("InvalidInputNamesField", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{}), 400, "api_key")
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": e.a.Secret, "id_token": "x"}), 400, "id_token")
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{"password": "x"}), 400, "password")
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": "tpl_nope"}), 401, "")
		// Without an OIDC issuer configured, id tokens are refused.
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{"id_token": "a.b.c"}), 401, "")
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		tokB := e.exchange(t, e.b.Secret)
		requireProblem(t, e.do(t, "DELETE", "/v1/api-keys/"+e.a.Key.ID, tokB, nil), 404, "")
		requireProblem(t, e.do(t, "PATCH", "/v1/members/"+e.a.User.ID, tokB, map[string]any{"role": "viewer"}), 404, "")
		if r := e.do(t, "GET", "/v1/me", tokB, nil); r.body["tenant"].(map[string]any)["id"] != e.b.Tenant.ID {
			t.Fatalf("tenant b's token sees %s", r.raw)
		}
	})
}

// withOIDC makes the server accept ID tokens signed by priv (kid "idp-1") from the issuer
// https://idp.test for the audience "tapline", its JWKS served on loopback.
func withOIDC(t *testing.T, priv ed25519.PrivateKey) func(*httpapi.Config) {
	t.Helper()
	pub := priv.Public().(ed25519.PublicKey)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{
			"kty": "OKP", "crv": "Ed25519", "kid": "idp-1", "alg": "EdDSA", "use": "sig", "x": base64.RawURLEncoding.EncodeToString(pub),
		}}})
	}))
	t.Cleanup(jwks.Close)
	oidc, err := auth.NewOIDC(&auth.OIDCConfig{Issuer: "https://idp.test", Audience: "tapline", JWKSURL: jwks.URL})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseJWTKeys("test-1:" + testJWTSeed)
	if err != nil {
		t.Fatal(err)
	}
	return func(cfg *httpapi.Config) {
		tokens, err := auth.NewTokenService(cfg.Tenants, &auth.TokenConfig{Keys: keys, Issuer: "tapline", Audience: "tapline-api", TTL: time.Minute, OIDC: oidc})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tokens, cfg.Auth = tokens, auth.NewAuthenticator(cfg.Tenants, tokens)
	}
}

// TestTokenExchangeNeedsVerifiedEmail: an ID token's email picks a member only when its
// issuer says it verified the address; otherwise the exchange, and the token used as a
// bearer, are a 401 naming the reason, whoever the address belongs to.
func TestTokenExchangeNeedsVerifiedEmail(t *testing.T) {
	t.Parallel()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := newEnv(t, dbtest.Pool(t), testRedis(t, os.Getenv("TEST_REDIS_URL")), withOIDC(t, priv))
	idToken := func(verified any, present bool) string {
		now := time.Now()
		c := jwt.MapClaims{"iss": "https://idp.test", "aud": "tapline", "sub": "u-1", "email": e.a.User.Email,
			"tapline_tenant": e.a.Tenant.ID, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		if present {
			c["email_verified"] = verified
		}
		return sign(t, jwt.SigningMethodEdDSA, priv, "idp-1", "", c)
	}
	for name, tok := range map[string]string{"Bool": idToken(true, true), "String": idToken("true", true)} {
		t.Run("Verified"+name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/auth/token", "", map[string]any{"id_token": tok})
			if r.status != 200 {
				t.Fatalf("exchange = %d %s", r.status, r.raw)
			}
			me := e.do(t, "GET", "/v1/me", r.body["token"].(string), nil)
			if p, _ := me.body["principal"].(map[string]any); me.status != 200 || p["user_id"] != e.a.User.ID {
				t.Fatalf("me = %d %s", me.status, me.raw)
			}
		})
	}
	for name, tok := range map[string]string{
		"Missing": idToken(nil, false), "False": idToken(false, true), "StringFalse": idToken("false", true), "Null": idToken(nil, true),
	} {
		t.Run("Unverified"+name, func(t *testing.T) {
			for _, r := range []response{
				e.do(t, "POST", "/v1/auth/token", "", map[string]any{"id_token": tok}),
				e.do(t, "GET", "/v1/me", tok, nil),
			} {
				requireProblem(t, r, 401, "")
				detail, _ := r.body["detail"].(string)
				if r.body["type"] != "urn:tapline:problem:unauthenticated" || !strings.Contains(detail, "email_verified") {
					t.Fatalf("problem = %s, want unauthenticated naming email_verified", r.raw)
				}
			}
		})
	}
}

// TestJWTAttacksAre401 sends hostile tokens to the real server.
func TestJWTAttacksAre401(t *testing.T) {
	t.Parallel()
	e := setup(t)
	good := sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", e.claimsFor())
	if r := e.do(t, "GET", "/v1/me", good, nil); r.status != 200 {
		t.Fatalf("a well-formed token is refused: %d %s", r.status, r.raw)
	}
	with := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := e.claimsFor()
		mut(c)
		return c
	}
	pub := e.jwtKey.Public().(ed25519.PublicKey)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	none := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, e.claimsFor()).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	tampered := func() string {
		parts := strings.Split(good, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = []byte(strings.Replace(string(payload), `"role":"owner"`, `"role":"ownr"`, 1))
		payload = []byte(strings.Replace(string(payload), e.a.Tenant.ID, e.b.Tenant.ID, 1))
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	}()
	cases := map[string]string{
		"AlgNone":            none,
		"BadSignature":       good[:len(good)-4] + "AAAA",
		"HS256WithPublicKey": sign(t, jwt.SigningMethodHS256, []byte(pub), "test-1", "at+jwt", e.claimsFor()),
		"HS256WithB64PubKey": sign(t, jwt.SigningMethodHS256, []byte(base64.StdEncoding.EncodeToString(pub)), "test-1", "at+jwt", e.claimsFor()),
		"Expired":            sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() })),
		"NoExpiry":           sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { delete(c, "exp") })),
		"NotYetValid":        sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(10 * time.Minute).Unix() })),
		"IssuedInTheFuture":  sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(10 * time.Minute).Unix() })),
		"WrongAudience":      sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["aud"] = "someone-else" })),
		"WrongIssuer":        sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["iss"] = "evil" })),
		"UnknownKid":         sign(t, jwt.SigningMethodEdDSA, otherKey, "test-2", "at+jwt", e.claimsFor()),
		"NoKid":              sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "", "at+jwt", e.claimsFor()),
		"KnownKidForeignKey": sign(t, jwt.SigningMethodEdDSA, otherKey, "test-1", "at+jwt", e.claimsFor()),
		"WrongType":          sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "JWT", e.claimsFor()),
		"TamperedPayload":    tampered,
		"OtherTenantWithKey": sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["tid"] = e.b.Tenant.ID })),
		"UnknownKeyID":       sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) { c["key"] = e.b.Key.ID })),
		"Garbage":            "eyJhbGciOiJFZERTQSJ9.garbage.garbage",
		"Huge":               strings.Repeat("a", 9000) + "." + strings.Repeat("b", 10) + ".c",
	}
	// Even a correctly signed token that claims owner for a viewer key gets viewer: the
	// key's stored role counts, not the claim.
	viewer := e.keyWithRole(t, tenant.RoleViewer)
	viewerID := e.do(t, "GET", "/v1/me", viewer, nil).body["principal"].(map[string]any)["key_id"].(string)
	escalate := sign(t, jwt.SigningMethodEdDSA, e.jwtKey, "test-1", "at+jwt", with(func(c jwt.MapClaims) {
		c["key"], c["sub"], c["role"] = viewerID, "key:"+viewerID, "owner"
	}))
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			r := e.do(t, "GET", "/v1/me", tok, nil)
			requireProblem(t, r, 401, "")
		})
	}
	t.Run("RoleClaimIsIgnored", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/me", escalate, nil)
		if r.status != 200 || r.body["role"] != "viewer" {
			t.Fatalf("forged role claim = %d %s, want the key's viewer role", r.status, r.raw)
		}
		requireProblem(t, e.do(t, "GET", "/v1/api-keys", escalate, nil), 403, "")
	})
}
