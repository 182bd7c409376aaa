package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"
)

func TestParseJWK(t *testing.T) {
	t.Parallel()
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPoint, _ := ecKey.PublicKey.Bytes()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	raw := func(m map[string]any) json.RawMessage { b, _ := json.Marshal(m); return b }
	for name, tc := range map[string]struct {
		jwk  json.RawMessage
		alg  string
		fits bool
		err  bool
	}{
		"RSA":         {raw(map[string]any{"kid": "r", "kty": "RSA", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())}), "RS256", true, false},
		"RSANotForES": {raw(map[string]any{"kid": "r", "kty": "RSA", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())}), "ES256", false, false},
		"WeakRSA":     {raw(map[string]any{"kid": "w", "kty": "RSA", "n": b64(weak.N.Bytes()), "e": "AQAB"}), "RS256", false, true},
		"EC":          {raw(map[string]any{"kid": "e", "kty": "EC", "crv": "P-256", "x": b64(ecPoint[1:33]), "y": b64(ecPoint[33:])}), "ES256", true, false},
		"ECOffCurve":  {raw(map[string]any{"kid": "e", "kty": "EC", "crv": "P-256", "x": b64(ecPoint[1:33]), "y": b64(ecPoint[1:33])}), "ES256", false, true},
		"OKP":         {raw(map[string]any{"kid": "o", "kty": "OKP", "crv": "Ed25519", "x": b64(edPub)}), "EdDSA", true, false},
		"Symmetric":   {raw(map[string]any{"kid": "s", "kty": "oct", "k": "c2VjcmV0"}), "HS256", false, true},
		"Encryption":  {raw(map[string]any{"kid": "x", "kty": "OKP", "crv": "Ed25519", "x": b64(edPub), "use": "enc"}), "EdDSA", false, true},
	} {
		kid, k, err := parseJWK(tc.jwk)
		if tc.err {
			if err == nil {
				t.Errorf("%s: parsed a key it must refuse", name)
			}
			continue
		}
		if err != nil || kid == "" {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if k.fits(tc.alg) != tc.fits {
			t.Errorf("%s: fits(%s) = %v", name, tc.alg, !tc.fits)
		}
	}
}
