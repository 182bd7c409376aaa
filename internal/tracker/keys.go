package tracker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on caller-supplied identifiers. Longer ids are refused rather than
// hashed, so a key always shows the id it belongs to.
const (
	// MaxIDLen is the longest tenant, session, request or stream id accepted, in bytes.
	MaxIDLen = 256
	// MaxURILen is the longest resource URI accepted, in bytes.
	MaxURILen = 4096
)

// Key layout (P = Config.Prefix; T, S, R, X, N are escaped ids, H is a hash of a URI):
//
//	P:node:{N}           HASH   name, addr, started         PX NodeTTL, the node's liveness
//	P:node:{N}:entries   SET    refs of the node's entries  reaper input; no TTL
//	P:node:{N}:seq       STRING inbox sequence number       INCR per published message
//	P:nodes              ZSET   known node ids              reaper input
//	P:gen:{gK}           STRING generation marker           one per cluster master; loss detector
//	P:reaper             STRING reaper lease token          PX ReapInterval*3
//	P:{T}:sessions       HASH   S -> "N|json"               tenant session presence
//	P:{T}:requests       HASH   S:R -> "N|json"             tenant request presence
//	P:{T}:rsubs          HASH   S:H -> "N|json"             tenant resource listeners
//	P:{T}:rsub:H         HASH   S -> N                      listeners of one resource
//	P:{T:S}:streams      HASH   X -> "N|json"               streams of one session
//	P:{T:S}:lease        HASH   tok, node, epoch            PX LeaseTTL
//	P:{T:S}:epoch        STRING lease epoch counter           PX EpochTTL, refreshed with the lease
//	P:{T:S}:if:R         STRING "c|N|tok" or "r|result"     PX ClaimTTL / ResultTTL
//	channel P:inbox:N    pub/sub, "seq|json" messages for node N
//
// Escaped ids never contain ':', '{', '}', '|' or spaces, so the hash tag of a
// key is always exactly the intended part and ids cannot collide across levels.

// escapeID validates id and percent-encodes every byte outside [A-Za-z0-9._~-].
// The common case (nothing to escape) does not allocate.
func escapeID(what, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty %s", ErrInvalidID, what)
	}
	if len(id) > MaxIDLen {
		return "", fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidID, what, MaxIDLen)
	}
	clean := true
	for i := 0; i < len(id); i++ {
		if !safeByte(id[i]) {
			clean = false
			break
		}
	}
	if clean {
		return id, nil
	}
	if !utf8.ValidString(id) {
		return "", fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidID, what)
	}
	var b strings.Builder
	b.Grow(len(id) + 16)
	const hexdig = "0123456789ABCDEF"
	for i := 0; i < len(id); i++ {
		c := id[i]
		if safeByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String(), nil
}

func safeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '~' || c == '-'
}

// uriHash names a resource URI in keys: URIs are long and full of ':' and '/'.
func uriHash(uri string) (string, error) {
	if uri == "" {
		return "", fmt.Errorf("%w: empty resource uri", ErrInvalidID)
	}
	if len(uri) > MaxURILen {
		return "", fmt.Errorf("%w: resource uri longer than %d bytes", ErrInvalidID, MaxURILen)
	}
	sum := sha256.Sum256([]byte(uri))
	return hex.EncodeToString(sum[:16]), nil
}

// keys builds every key from a validated prefix.
type keys struct{ p string }

func (k keys) node(n string) string        { return k.p + ":node:{" + n + "}" }
func (k keys) nodeEntries(n string) string { return k.p + ":node:{" + n + "}:entries" }
func (k keys) nodeSeq(n string) string     { return k.p + ":node:{" + n + "}:seq" }
func (k keys) inbox(n string) string       { return k.p + ":inbox:" + n }
func (k keys) nodes() string               { return k.p + ":nodes" }
func (k keys) gen(tag string) string       { return k.p + ":gen:{" + tag + "}" }
func (k keys) reaper() string              { return k.p + ":reaper" }

func (k keys) sessions(t string) string       { return k.p + ":{" + t + "}:sessions" }
func (k keys) requests(t string) string       { return k.p + ":{" + t + "}:requests" }
func (k keys) rsubs(t string) string          { return k.p + ":{" + t + "}:rsubs" }
func (k keys) rsub(t, h string) string        { return k.p + ":{" + t + "}:rsub:" + h }
func (k keys) streams(t, s string) string     { return k.p + ":{" + t + ":" + s + "}:streams" }
func (k keys) lease(t, s string) string       { return k.p + ":{" + t + ":" + s + "}:lease" }
func (k keys) epoch(t, s string) string       { return k.p + ":{" + t + ":" + s + "}:epoch" }
func (k keys) inflight(t, s, r string) string { return k.p + ":{" + t + ":" + s + "}:if:" + r }

// crc16 is the CRC16-XMODEM Redis Cluster uses to map a key to a slot.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slotOfTag is the cluster slot of any key whose hash tag is tag.
func slotOfTag(tag string) int { return int(crc16(tag) % 16384) }

// tagInRange finds a short hash tag whose slot lies in [start, end].
func tagInRange(start, end int) (string, bool) {
	for i := 0; i < 1<<20; i++ {
		tag := fmt.Sprintf("g%d", i)
		if s := slotOfTag(tag); s >= start && s <= end {
			return tag, true
		}
	}
	return "", false
}
