package auth

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// JWTKeys is the Ed25519 keyring for the tokens Tapline issues: the first key signs, every
// key verifies, and tokens name their key in the kid header. Rotate by putting a new key in
// front and keeping the old one until the longest token signed with it has expired.
type JWTKeys struct {
	signID string
	sign   ed25519.PrivateKey
	verify map[string]ed25519.PublicKey
}

// ErrJWTKeyConfig means TAPLINE_JWT_KEYS (or the secret key it derives from) is malformed.
// Messages name entries by position, never by content.
var ErrJWTKeyConfig = errors.New("invalid jwt key configuration")

// ParseJWTKeys reads TAPLINE_JWT_KEYS: a comma-separated list of "kid:base64seed", each seed
// 32 bytes (an Ed25519 private key seed) in standard or URL-safe base64.
func ParseJWTKeys(s string) (*JWTKeys, error) {
	k := &JWTKeys{verify: map[string]ed25519.PublicKey{}}
	for i, entry := range strings.Split(s, ",") {
		kid, encoded, ok := strings.Cut(strings.TrimSpace(entry), ":")
		kid = strings.TrimSpace(kid)
		if !ok || !validKID(kid) {
			return nil, fmt.Errorf("%w: entry %d: want kid:base64seed with a kid of 1 to 64 characters from [A-Za-z0-9._-]", ErrJWTKeyConfig, i+1)
		}
		seed, err := decode32(strings.TrimSpace(encoded))
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrJWTKeyConfig, i+1, err)
		}
		if err := k.add(kid, seed); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrJWTKeyConfig, i+1, err)
		}
	}
	return k, nil
}

// DeriveJWTKeys derives one Ed25519 key per entry of TAPLINE_SECRET_KEY (a base64 32-byte
// key, or "kid:base64key,…") with HKDF-SHA256, so a small install needs one secret. Rotating
// the secret key rotates the JWT keys the same way: first signs, all verify.
func DeriveJWTKeys(secretKey string) (*JWTKeys, error) {
	k := &JWTKeys{verify: map[string]ed25519.PublicKey{}}
	for i, entry := range strings.Split(secretKey, ",") {
		entry = strings.TrimSpace(entry)
		if _, encoded, ok := strings.Cut(entry, ":"); ok {
			entry = strings.TrimSpace(encoded)
		}
		raw, err := decode32(entry)
		if err != nil {
			return nil, fmt.Errorf("%w: TAPLINE_SECRET_KEY entry %d: %w", ErrJWTKeyConfig, i+1, err)
		}
		seed, err := hkdf.Key(sha256.New, raw, nil, "tapline jwt ed25519 v1", ed25519.SeedSize)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("derive jwt key: %w", err)
		}
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		sum := sha256.Sum256(pub)
		if err := k.add("d-"+base64.RawURLEncoding.EncodeToString(sum[:9]), seed); err != nil {
			return nil, fmt.Errorf("%w: TAPLINE_SECRET_KEY entry %d: %w", ErrJWTKeyConfig, i+1, err)
		}
	}
	return k, nil
}

func (k *JWTKeys) add(kid string, seed []byte) error {
	if _, dup := k.verify[kid]; dup {
		return errors.New("duplicate kid")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	k.verify[kid] = priv.Public().(ed25519.PublicKey)
	if k.sign == nil {
		k.signID, k.sign = kid, priv
	}
	return nil
}

// SigningKeyID is the kid of the key that signs new tokens.
func (k *JWTKeys) SigningKeyID() string { return k.signID }

// PublicKey returns the verifying key with this kid.
func (k *JWTKeys) PublicKey(kid string) (ed25519.PublicKey, bool) {
	pub, ok := k.verify[kid]
	return pub, ok
}

// String never shows key material.
func (k *JWTKeys) String() string {
	return fmt.Sprintf("JWTKeys(signing %s, %d keys)", k.signID, len(k.verify))
}

func decode32(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		raw, err := enc.Strict().DecodeString(s)
		if err != nil {
			continue
		}
		if len(raw) != 32 {
			clear(raw)
			return nil, errors.New("key must decode to 32 bytes")
		}
		return raw, nil
	}
	return nil, errors.New("key is not valid base64")
}

func validKID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
