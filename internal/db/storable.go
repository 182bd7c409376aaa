package db

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// nulEscape is how JSON spells U+0000 inside a string.
var nulEscape = []byte(`\u0000`)

// StorableJSON returns JSON text that PostgreSQL's jsonb accepts in place of b, which it
// may refuse although it is valid JSON: jsonb has no way to hold U+0000 and rejects the
// escape \u0000 in any string (SQLSTATE 22P05). Each such escape inside a string, keys
// included, becomes \ufffd, the replacement character, which is the same length, so
// everything else is left byte for byte. An escaped backslash followed by "u0000" (the
// text \\u0000) is not an escape of U+0000 and is left alone.
//
// It returns b itself, without allocating, when there is nothing to replace, which is
// nearly always: it runs on every event a worker records. b is never modified; bytes that
// are not JSON are returned as they are, for PostgreSQL to judge.
func StorableJSON(b []byte) []byte {
	if !bytes.Contains(b, nulEscape) {
		return b
	}
	var out []byte
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			if !bytes.HasPrefix(b[i:], nulEscape) {
				i++ // the escaped character: an escaped quote or backslash ends nothing
				continue
			}
			if out == nil {
				out = bytes.Clone(b)
			}
			copy(out[i:], `\ufffd`)
			i += len(nulEscape) - 1
		}
	}
	if out == nil {
		return b
	}
	return out
}

// StorableText returns s as PostgreSQL's text accepts it: without NUL bytes, which text
// cannot hold, and with byte sequences that are not UTF-8 replaced by U+FFFD, which the
// server's encoding refuses (SQLSTATE 22021). It returns s itself when it is already
// storable. Use it on text from outside (what a target server sent, an error describing
// it).
func StorableText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}
