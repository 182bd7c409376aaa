// Package secretbox encrypts target secrets (HTTP headers, bearer tokens,
// OAuth credentials) at rest with AES-256-GCM under keys named by an id, so
// that keys can be rotated, and redacts secret headers for display.
//
// A sealed value is a self-describing envelope:
//
//	version (1 byte, 0x01) | len(kid) (1 byte) | kid | nonce (12 bytes) | ciphertext+tag
//
// The header (version and kid) and the caller's associated data are both
// authenticated. Callers pass associated data that names the row the value
// belongs to (see AssociatedData), so a ciphertext copied into another
// tenant's or session's row does not open.
//
// Nothing in this package prints key material: errors name keys by id or
// position only, and a Keyring formats, logs and marshals as its key ids.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// KeySize is the size of an AES-256 key in bytes.
const KeySize = 32

const (
	envelopeVersion = 0x01
	nonceSize       = 12
	tagSize         = 16
	maxKeyIDLen     = 64
)

var (
	// ErrUnknownKey means the envelope names a key id the keyring does not
	// hold (a key removed too early, or the wrong TAPLINE_SECRET_KEY).
	ErrUnknownKey = errors.New("secretbox: unknown key id")

	// ErrDecrypt means the envelope is malformed, was tampered with, or
	// was sealed with different associated data.
	ErrDecrypt = errors.New("secretbox: cannot decrypt")

	// ErrKeyConfig is wrapped by every error from ParseKeyring.
	ErrKeyConfig = errors.New("secretbox: invalid key configuration")
)

// Keyring holds the keys that open envelopes and the active one that seals
// new ones. It is safe for concurrent use. Create it with ParseKeyring.
type Keyring struct {
	active *key
	keys   map[string]*key
	ids    []string // in configuration order, active first
}

// key is one AES-256-GCM key; the raw bytes are not kept once the cipher
// is built.
type key struct {
	id   string
	aead cipher.AEAD
}

// ParseKeyring reads the TAPLINE_SECRET_KEY format: a comma-separated list
// of entries, each either "kid:base64key" or a bare "base64key". Keys are
// 32 bytes in standard or URL-safe base64, padded or not. The first entry
// is the active key, used to seal; all entries open. A bare key's id is the
// first 8 hex digits of the SHA-256 of the key bytes, so a single key
// configured today keeps its id when a new key is put in front of it:
//
//	TAPLINE_SECRET_KEY=2026-11:NEWKEY,OLDKEY
//
// Key ids are 1 to 64 characters from [A-Za-z0-9._-]. Errors wrap
// ErrKeyConfig and name entries by position, never by content.
func ParseKeyring(s string) (*Keyring, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: no key given", ErrKeyConfig)
	}
	k := &Keyring{keys: make(map[string]*key)}
	for i, entry := range strings.Split(s, ",") {
		n := i + 1
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("%w: entry %d is empty", ErrKeyConfig, n)
		}
		id, encoded, hasID := strings.Cut(entry, ":")
		if !hasID {
			encoded, id = id, ""
		}
		raw, err := decodeKey(strings.TrimSpace(encoded))
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrKeyConfig, n, err)
		}
		if hasID {
			id = strings.TrimSpace(id)
			if !validKeyID(id) {
				clear(raw)
				return nil, fmt.Errorf("%w: entry %d: key id must be 1 to %d characters from [A-Za-z0-9._-]", ErrKeyConfig, n, maxKeyIDLen)
			}
		} else {
			id = DeriveKeyID(raw)
		}
		if _, dup := k.keys[id]; dup {
			clear(raw)
			return nil, fmt.Errorf("%w: entry %d: duplicate key id", ErrKeyConfig, n)
		}
		aead, err := newAEAD(raw)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrKeyConfig, n, err)
		}
		kk := &key{id: id, aead: aead}
		k.keys[id] = kk
		k.ids = append(k.ids, id)
		if k.active == nil {
			k.active = kk
		}
	}
	return k, nil
}

var (
	errBase64    = errors.New("key is not valid base64")
	errKeyLength = fmt.Errorf("key must decode to %d bytes", KeySize)
)

// decodeKey accepts standard and URL-safe base64, with or without padding.
// Errors carry no part of the input.
func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		raw, err := enc.Strict().DecodeString(s)
		if err != nil {
			continue
		}
		if len(raw) != KeySize {
			clear(raw)
			return nil, errKeyLength
		}
		return raw, nil
	}
	return nil, errBase64
}

func newAEAD(raw []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, errors.New("cannot create cipher")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errors.New("cannot create cipher")
	}
	return aead, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > maxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DeriveKeyID returns the id a bare key gets: the first 8 hex digits of the
// SHA-256 of the key bytes. An operator can compute it with
// `printf %s "$KEY" | base64 -d | sha256sum | cut -c1-8`. Eight hex digits
// of a hash of a random 256-bit key reveal nothing usable about the key.
func DeriveKeyID(rawKey []byte) string {
	sum := sha256.Sum256(rawKey)
	return hex.EncodeToString(sum[:4])
}

// GenerateKey returns a new random key in standard base64, suitable for
// TAPLINE_SECRET_KEY.
func GenerateKey() (string, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("secretbox: generate key: %w", err)
	}
	defer clear(raw)
	return base64.StdEncoding.EncodeToString(raw), nil
}

// ActiveKeyID returns the id of the key that seals new envelopes.
func (k *Keyring) ActiveKeyID() string {
	if k == nil || k.active == nil {
		return ""
	}
	return k.active.id
}

// KeyIDs returns the ids of all keys, active first.
func (k *Keyring) KeyIDs() []string {
	if k == nil {
		return nil
	}
	return append([]string(nil), k.ids...)
}

// Seal encrypts plaintext under the active key with a random 96-bit nonce.
// associatedData is authenticated but not stored: Open must be given the
// same bytes. Random nonces are safe for up to about 2^32 seals per key,
// far beyond what secrets of targets need; rotate long before that.
func (k *Keyring) Seal(plaintext, associatedData []byte) ([]byte, error) {
	if k == nil || k.active == nil {
		return nil, errors.New("secretbox: seal: no key")
	}
	id := k.active.id
	headerLen := 2 + len(id)
	out := make([]byte, headerLen+nonceSize, headerLen+nonceSize+len(plaintext)+tagSize)
	out[0] = envelopeVersion
	out[1] = byte(len(id))
	copy(out[2:], id)
	nonce := out[headerLen:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secretbox: seal: read nonce: %w", err)
	}
	return k.active.aead.Seal(out, nonce, plaintext, additionalData(out[:headerLen], associatedData)), nil
}

// Open decrypts an envelope made by Seal with any key in the keyring. It
// returns ErrUnknownKey (wrapped) when the key id is not held and
// ErrDecrypt (wrapped) for any other failure, including associated data
// that differs from the one given to Seal.
func (k *Keyring) Open(ciphertext, associatedData []byte) ([]byte, error) {
	if k == nil {
		return nil, errors.New("secretbox: open: no key")
	}
	id, headerLen, err := parseHeader(ciphertext)
	if err != nil {
		return nil, err
	}
	kk, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, id)
	}
	if len(ciphertext) < headerLen+nonceSize+tagSize {
		return nil, fmt.Errorf("%w: envelope too short", ErrDecrypt)
	}
	nonce := ciphertext[headerLen : headerLen+nonceSize]
	plaintext, err := kk.aead.Open(nil, nonce, ciphertext[headerLen+nonceSize:], additionalData(ciphertext[:headerLen], associatedData))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	return plaintext, nil
}

// KeyIDOf returns the id of the key that sealed an envelope, without
// opening it: a rotation job re-seals the rows whose id is not the active
// one. Errors wrap ErrDecrypt.
func KeyIDOf(ciphertext []byte) (string, error) {
	id, _, err := parseHeader(ciphertext)
	return id, err
}

func parseHeader(env []byte) (id string, headerLen int, err error) {
	if len(env) < 2 {
		return "", 0, fmt.Errorf("%w: envelope too short", ErrDecrypt)
	}
	if env[0] != envelopeVersion {
		return "", 0, fmt.Errorf("%w: unsupported envelope version %d", ErrDecrypt, env[0])
	}
	n := int(env[1])
	if n == 0 || len(env) < 2+n {
		return "", 0, fmt.Errorf("%w: envelope too short", ErrDecrypt)
	}
	id = string(env[2 : 2+n])
	if !validKeyID(id) {
		return "", 0, fmt.Errorf("%w: malformed key id", ErrDecrypt)
	}
	return id, 2 + n, nil
}

// additionalData is the GCM additional data: the envelope header, then the
// caller's associated data. The header is self-delimiting, so the two
// cannot be confused.
func additionalData(header, associatedData []byte) []byte {
	ad := make([]byte, 0, len(header)+len(associatedData))
	ad = append(ad, header...)
	return append(ad, associatedData...)
}

// AssociatedData builds unambiguous associated data from parts, e.g.
// AssociatedData("target-secret", tenantID, targetID): each part is
// length-prefixed, so ("ab", "c") and ("a", "bc") differ.
func AssociatedData(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += binary.MaxVarintLen64 + len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

// String describes the keyring by its key ids only.
func (k Keyring) String() string {
	active := ""
	if k.active != nil {
		active = k.active.id
	}
	return fmt.Sprintf("secretbox.Keyring{active: %q, keys: %q}", active, k.ids)
}

// GoString is the same as String, so %#v prints no key material.
func (k Keyring) GoString() string { return k.String() }

// Format makes every fmt verb (%v, %+v, %#v, %s, %x, …) print String.
func (k Keyring) Format(f fmt.State, _ rune) { _, _ = fmt.Fprint(f, k.String()) }

// LogValue makes slog log the keyring as its key ids.
func (k Keyring) LogValue() slog.Value {
	active := ""
	if k.active != nil {
		active = k.active.id
	}
	return slog.GroupValue(slog.String("active", active), slog.Any("keys", k.ids))
}

// MarshalText makes encoders that honour encoding.TextMarshaler (JSON,
// slog's JSON handler) write the key ids only.
func (k Keyring) MarshalText() ([]byte, error) { return []byte(k.String()), nil }
