package netguard

import "net/netip"

// class is the special-purpose category an address falls in; classPublic
// means none, i.e. the address is an ordinary globally routable one.
type class uint8

const (
	classPublic class = iota
	classUnspecified
	classThisNetwork
	classLoopback
	classPrivate // RFC 1918, fc00::/7, local-use NAT64: AllowPrivate lets these through
	classShared  // 100.64.0.0/10 (CGNAT): AllowPrivate lets these through
	classLinkLocal
	classMetadata
	classMulticast
	classBroadcast
	classDocumentation
	classBenchmark
	classReserved
	classTeredo
	classNonGlobal
)

// reason is the text a RefusedError carries for the class. The strings are
// stable and few, so they may be used as a metric label.
func (c class) reason() string {
	switch c {
	case classUnspecified:
		return "unspecified address"
	case classThisNetwork:
		return "this-network address (0.0.0.0/8)"
	case classLoopback:
		return "loopback address"
	case classPrivate:
		return "private address"
	case classShared:
		return "shared address space (100.64.0.0/10)"
	case classLinkLocal:
		return "link-local address"
	case classMetadata:
		return "cloud metadata address"
	case classMulticast:
		return "multicast address"
	case classBroadcast:
		return "broadcast address"
	case classDocumentation:
		return "documentation address"
	case classBenchmark:
		return "benchmarking address"
	case classReserved:
		return "reserved address"
	case classTeredo:
		return "teredo address"
	case classNonGlobal:
		return "non-global IPv6 address"
	}
	return ""
}

type rule struct {
	prefix netip.Prefix
	class  class
}

// metadataAddrs are instance-metadata and platform endpoints of the big
// clouds. Most sit inside ranges refused anyway; listing them gives a precise
// reason and keeps them refused when AllowPrivate opens CGNAT and ULA space.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OCI, DigitalOcean, OpenStack IMDS
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("169.254.170.23"),  // AWS EKS Pod Identity agent
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud metadata
	netip.MustParseAddr("168.63.129.16"),   // Azure WireServer (a public address)
	netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud legacy metadata
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity over IPv6
	netip.MustParseAddr("fd20:ce::254"),    // GCP metadata over IPv6
}

// v4Rules and v6Rules follow the IANA special-purpose address registries.
// The first matching rule wins, so specific entries come before the ranges
// that contain them.
var v4Rules = []rule{
	{netip.MustParsePrefix("0.0.0.0/32"), classUnspecified},
	{netip.MustParsePrefix("0.0.0.0/8"), classThisNetwork},
	{netip.MustParsePrefix("10.0.0.0/8"), classPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), classShared},
	{netip.MustParsePrefix("127.0.0.0/8"), classLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), classLinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), classPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), classReserved}, // IETF protocol assignments
	{netip.MustParsePrefix("192.0.2.0/24"), classDocumentation},
	{netip.MustParsePrefix("192.88.99.0/24"), classReserved}, // deprecated 6to4 relay anycast
	{netip.MustParsePrefix("192.168.0.0/16"), classPrivate},
	{netip.MustParsePrefix("198.18.0.0/15"), classBenchmark},
	{netip.MustParsePrefix("198.51.100.0/24"), classDocumentation},
	{netip.MustParsePrefix("203.0.113.0/24"), classDocumentation},
	{netip.MustParsePrefix("224.0.0.0/4"), classMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), classBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), classReserved},
}

var v6Rules = []rule{
	{netip.MustParsePrefix("::/128"), classUnspecified},
	{netip.MustParsePrefix("::1/128"), classLoopback},
	{netip.MustParsePrefix("64:ff9b:1::/48"), classPrivate}, // local-use NAT64 (RFC 8215)
	{netip.MustParsePrefix("2001::/32"), classTeredo},
	{netip.MustParsePrefix("2001:2::/48"), classBenchmark},
	{netip.MustParsePrefix("2001::/23"), classReserved}, // IETF protocol assignments
	{netip.MustParsePrefix("2001:db8::/32"), classDocumentation},
	{netip.MustParsePrefix("3fff::/20"), classDocumentation},
	{netip.MustParsePrefix("fc00::/7"), classPrivate},
	{netip.MustParsePrefix("fe80::/10"), classLinkLocal},
	{netip.MustParsePrefix("ff00::/8"), classMulticast},
}

// globalUnicast is the only IPv6 space handed out for public use; anything
// outside it that no rule names (::/96, 100::/64, fec0::/10, …) is refused.
var globalUnicast = netip.MustParsePrefix("2000::/3")

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// classify returns the category of a zone-less, unmapped address.
func classify(ip netip.Addr) class {
	for _, m := range metadataAddrs {
		if ip == m {
			return classMetadata
		}
	}
	rules := v6Rules
	if ip.Is4() {
		rules = v4Rules
	}
	for _, r := range rules {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	if ip.Is6() && !globalUnicast.Contains(ip) {
		return classNonGlobal
	}
	return classPublic
}

// embeddedIPv4 returns the IPv4 address a NAT64 (64:ff9b::/96) or 6to4
// (2002::/16) address routes to, and the name of the mechanism.
func embeddedIPv4(ip netip.Addr) (netip.Addr, string, bool) {
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64", true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	}
	return netip.Addr{}, "", false
}

// verdict decides whether ip may be dialled. It returns the refusal reason,
// or "" when the address is allowed.
//
// Order: the unspecified address is always refused (connecting to 0.0.0.0 or
// :: reaches the local host on Linux, so no allow-list can open it); then the
// operator's Deny list; then the Allow list; then the built-in rules with the
// AllowLoopback and AllowPrivate switches. NAT64 and 6to4 addresses are judged
// by the IPv4 address they embed, and that address must be plainly public:
// the switches are about this host and its networks, not about whatever sits
// behind a translator.
func (g *Guard) verdict(ip netip.Addr) string {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return "invalid address"
	}
	if ip.IsUnspecified() {
		return classUnspecified.reason()
	}
	if containsAny(g.deny, ip) {
		return reasonDenied
	}
	if containsAny(g.allow, ip) {
		return ""
	}
	if v4, mechanism, ok := embeddedIPv4(ip); ok {
		if containsAny(g.deny, v4) {
			return reasonDenied
		}
		if c := classify(v4); c != classPublic {
			return c.reason() + " embedded in " + mechanism + " address"
		}
		return ""
	}
	c := classify(ip)
	switch {
	case c == classPublic:
		return ""
	case c == classLoopback && g.allowLoopback:
		return ""
	case (c == classPrivate || c == classShared) && g.allowPrivate:
		if v4, ok := localNAT64IPv4(ip); ok {
			// AllowPrivate opens the local translator, not what it leads to on the far
			// side that stays refused on this one: metadata, loopback, link-local.
			switch vc := classify(v4); vc {
			case classMetadata, classLoopback, classLinkLocal:
				return vc.reason() + " embedded in local-use NAT64 address"
			}
		}
		return ""
	}
	return c.reason()
}

// localNAT64 is the local-use NAT64 prefix (RFC 8215).
var localNAT64 = netip.MustParsePrefix("64:ff9b:1::/48")

// localNAT64IPv4 returns the IPv4 address a local-use NAT64 address embeds in its last 32
// bits, the /96 form of RFC 6052; ok is false for other addresses, and when those bits are
// all zero (another prefix length's form, not decoded here).
func localNAT64IPv4(ip netip.Addr) (netip.Addr, bool) {
	if !localNAT64.Contains(ip) {
		return netip.Addr{}, false
	}
	b := ip.As16()
	v4 := netip.AddrFrom4([4]byte(b[12:16]))
	return v4, !v4.IsUnspecified()
}

const reasonDenied = "address denied by operator"

func containsAny(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
