package netguard

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// hostKind tells how a host string must be treated.
type hostKind uint8

const (
	hostName    hostKind = iota // a DNS name, to be resolved
	hostLiteral                 // an IP address in some spelling
)

var (
	errInvalidLiteral = errors.New("invalid IP literal")
	errInvalidName    = errors.New("invalid host name")
)

// parseHost normalises the host part of a URL or dial address the way the
// request will really be sent: net/http maps non-ASCII names with IDNA
// (so "①②⑦.0.0.1" becomes "127.0.0.1"), and URL parsers and inet_aton read
// "2130706433", "0177.0.0.1", "0x7f.1" as 127.0.0.1. A host that looks like
// an IPv4 number but is not a valid one is an error, never a name to resolve.
func parseHost(host string) (string, netip.Addr, hostKind, error) {
	if strings.Contains(host, ":") {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return host, netip.Addr{}, hostLiteral, errInvalidLiteral
		}
		return host, ip, hostLiteral, nil
	}
	if !isASCII(host) {
		if !utf8.ValidString(host) {
			return host, netip.Addr{}, hostName, errInvalidName
		}
		mapped, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return host, netip.Addr{}, hostName, errInvalidName
		}
		host = mapped
	}
	host = strings.ToLower(host)
	if endsInNumber(host) {
		ip, ok := parseIPv4Lenient(host)
		if !ok {
			return host, netip.Addr{}, hostLiteral, errInvalidLiteral
		}
		return host, ip, hostLiteral, nil
	}
	if !validName(host) {
		return host, netip.Addr{}, hostName, errInvalidName
	}
	return host, netip.Addr{}, hostName, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// validName accepts letters, digits, '-', '_' and '.', in labels of at most
// 63 bytes, 253 bytes in all (plus an optional root dot).
func validName(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// endsInNumber follows the WHATWG URL standard: a host whose last label is
// a number must be parsed as IPv4, whatever else it contains.
func endsInNumber(host string) bool {
	parts := strings.Split(host, ".")
	if parts[len(parts)-1] == "" {
		if len(parts) == 1 {
			return false
		}
		parts = parts[:len(parts)-1]
	}
	last := parts[len(parts)-1]
	if last == "" {
		return false
	}
	if allDigits(last) {
		return true
	}
	_, ok := parseIPv4Number(last)
	return ok
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseIPv4Lenient parses every IPv4 spelling that WHATWG URL parsers and
// inet_aton accept: one to four dot-separated numbers, each decimal, octal
// (leading 0) or hexadecimal (0x), the last filling the remaining bytes.
func parseIPv4Lenient(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 1 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		nums[i] = n
	}
	last := len(nums) - 1
	for _, n := range nums[:last] {
		if n > 255 {
			return netip.Addr{}, false
		}
	}
	if nums[last] >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false
	}
	v := nums[last]
	for i, n := range nums[:last] {
		v |= n << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Number parses one part of an IPv4 address. Values above 2^32
// fail, which also keeps the arithmetic from overflowing.
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
		if s == "" {
			return 0, true // "0x" is zero for WHATWG
		}
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		var d uint64
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		n = n*base + d
		if n > 1<<32 {
			return 0, false
		}
	}
	return n, true
}
