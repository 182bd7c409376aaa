package tenant

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"strings"
)

// API keys look like tpl_<lookup:16><secret:48><check:6>, all in lower-case base32:
// the lookup id finds the row, the secret is stored only as a SHA-256 hash, and the check
// digits let secret scanners (and we) reject a mistyped or made-up key offline. A fast hash
// is right here: the secret carries 240 random bits, so there is nothing to brute-force.
const (
	keyPrefix    = "tpl_"
	lookupLen    = 16 // 10 random bytes
	secretLen    = 48 // 30 random bytes
	checkLen     = 6
	apiKeyLength = len(keyPrefix) + lookupLen + secretLen + checkLen
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding) //nolint:gochecknoglobals // an encoding table

func encode(b []byte) string { return strings.ToLower(b32.EncodeToString(b)) }

type keyParts struct {
	lookup string
	secret string
}

func newKeyParts() keyParts {
	var l [10]byte
	var s [30]byte
	_, _ = rand.Read(l[:])
	_, _ = rand.Read(s[:])
	return keyParts{lookup: encode(l[:]), secret: encode(s[:])}
}

func checkDigits(lookup, secret string) string {
	sum := sha256.Sum256([]byte("tapline-key-check:" + lookup + secret))
	return encode(sum[:])[:checkLen]
}

func (k keyParts) token() string {
	return keyPrefix + k.lookup + k.secret + checkDigits(k.lookup, k.secret)
}

func (k keyParts) hash() []byte {
	sum := sha256.Sum256([]byte(k.token()))
	return sum[:]
}

// parseKey splits a presented key, rejecting anything malformed before any query.
func parseKey(token string) (keyParts, bool) {
	if len(token) != apiKeyLength || !strings.HasPrefix(token, keyPrefix) {
		return keyParts{}, false
	}
	body := token[len(keyPrefix):]
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return keyParts{}, false
		}
	}
	k := keyParts{lookup: body[:lookupLen], secret: body[lookupLen : lookupLen+secretLen]}
	if subtle.ConstantTimeCompare([]byte(checkDigits(k.lookup, k.secret)), []byte(body[lookupLen+secretLen:])) != 1 {
		return keyParts{}, false
	}
	return k, true
}

// LooksLikeAPIKey reports whether a bearer token is meant as an API key (as opposed to a JWT).
func LooksLikeAPIKey(token string) bool { return strings.HasPrefix(token, keyPrefix) }
