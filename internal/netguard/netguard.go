// Package netguard makes outbound HTTP to user-supplied URLs safe from
// server-side request forgery (SSRF).
//
// Every connection a worker opens to a target MCP server goes through a
// Guard. The Guard resolves the host itself, judges every resolved address
// against the IANA special-purpose registries, cloud metadata endpoints and
// the operator's allow and deny lists, and then dials the judged address —
// never the name again — so a DNS answer that changes between the check and
// the connect (DNS rebinding) and every redirect hop are covered. A second
// check runs in the dialer's Control hook, just before connect(2).
//
// CheckURL gives the same verdict early, when a user creates a target, so
// the API can answer 422 instead of failing later in a worker.
//
// A Guard holds no global state and is safe for concurrent use.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// Resolver looks up the addresses of a host. *net.Resolver satisfies it;
// tests pass their own to simulate DNS answers, including rebinding.
type Resolver interface {
	// LookupNetIP returns the addresses of host for network "ip", "ip4"
	// or "ip6".
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// LookupNetIP calls f.
func (f ResolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// Config configures a Guard. The zero value (or nil) refuses everything but
// public unicast addresses.
type Config struct {
	// AllowLoopback lets 127.0.0.0/8 and ::1 through, for development
	// against MCP servers on the same machine. Nothing else is opened.
	AllowLoopback bool

	// AllowPrivate lets RFC 1918, unique-local (fc00::/7), local-use
	// NAT64 and shared (100.64.0.0/10) addresses through, for installs
	// whose targets live on the operator's own network
	// (TAPLINE_ALLOW_PRIVATE_TARGETS). Metadata endpoints in those ranges,
	// loopback and link-local stay refused.
	AllowPrivate bool

	// Allow lists prefixes that are permitted whatever the built-in rules
	// say, e.g. one internal MCP server. Deny wins over Allow, and the
	// unspecified addresses 0.0.0.0 and :: are never permitted.
	Allow []netip.Prefix

	// Deny lists extra prefixes to refuse.
	Deny []netip.Prefix

	// DialTimeout bounds name resolution plus connecting, for one dial.
	// Zero means 10 seconds.
	DialTimeout time.Duration

	// Resolver resolves host names; nil means net.DefaultResolver.
	Resolver Resolver

	// OnRefused, if set, is called for every refusal (CheckURL, redirect
	// or dial), e.g. to count them in a metric labelled by Reason. It must
	// be safe for concurrent use and must not block.
	OnRefused func(ctx context.Context, err *RefusedError)
}

// DefaultDialTimeout is the DialTimeout used when Config leaves it zero.
const DefaultDialTimeout = 10 * time.Second

// Guard checks and dials outbound connections. Create it with New.
type Guard struct {
	allowLoopback bool
	allowPrivate  bool
	allow         []netip.Prefix
	deny          []netip.Prefix
	dialTimeout   time.Duration
	resolver      Resolver
	onRefused     func(context.Context, *RefusedError)
}

// New returns a Guard for cfg; a nil cfg is the same as the zero Config.
// Prefixes in Allow and Deny are normalised; an IPv4-mapped prefix such as
// ::ffff:10.0.0.0/104 is read as the IPv4 prefix it maps.
func New(cfg *Config) (*Guard, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("netguard: new: negative dial timeout %s", cfg.DialTimeout)
	}
	allow, err := normalisePrefixes(cfg.Allow)
	if err != nil {
		return nil, fmt.Errorf("netguard: new: allow list: %w", err)
	}
	deny, err := normalisePrefixes(cfg.Deny)
	if err != nil {
		return nil, fmt.Errorf("netguard: new: deny list: %w", err)
	}
	g := &Guard{
		allowLoopback: cfg.AllowLoopback,
		allowPrivate:  cfg.AllowPrivate,
		allow:         allow,
		deny:          deny,
		dialTimeout:   cfg.DialTimeout,
		resolver:      cfg.Resolver,
		onRefused:     cfg.OnRefused,
	}
	if g.dialTimeout == 0 {
		g.dialTimeout = DefaultDialTimeout
	}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	return g, nil
}

func normalisePrefixes(in []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid prefix %q", p.String())
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("prefix %s has a zone", p)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("prefix %s is wider than the IPv4-mapped range", p)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// RefusedError reports a URL or an address that the Guard will not connect
// to. It is found with errors.As in the chain returned by CheckURL, by
// DialContext and by http.Client.Do on a guarded client. Its message never
// contains the URL's path, query or userinfo.
type RefusedError struct {
	// Host is the host as the URL or dial address gave it; it may be empty
	// when the URL could not be parsed.
	Host string
	// IP is the refused address; the zero Addr when the refusal concerns
	// the URL itself (scheme, userinfo, malformed host, …).
	IP netip.Addr
	// Reason is a short, stable description such as "loopback address".
	Reason string
}

// Error implements error.
func (e *RefusedError) Error() string {
	switch {
	case e.IP.IsValid() && e.Host != "" && e.Host != e.IP.String():
		return fmt.Sprintf("netguard: refused %q (%s): %s", e.Host, e.IP, e.Reason)
	case e.IP.IsValid():
		return fmt.Sprintf("netguard: refused %s: %s", e.IP, e.Reason)
	case e.Host != "":
		return fmt.Sprintf("netguard: refused %q: %s", e.Host, e.Reason)
	}
	return "netguard: refused: " + e.Reason
}

// refuse reports e to the hook and returns it.
func (g *Guard) refuse(ctx context.Context, e *RefusedError) *RefusedError {
	if g.onRefused != nil {
		g.onRefused(ctx, e)
	}
	return e
}

// Reasons for refusing a URL rather than an address.
const (
	reasonInvalidURL     = "invalid url"
	reasonScheme         = "scheme must be http or https"
	reasonUserinfo       = "userinfo not allowed in url"
	reasonMissingHost    = "missing host"
	reasonInvalidPort    = "invalid port"
	reasonInvalidLiteral = "invalid IP literal"
	reasonInvalidName    = "invalid host name"
	reasonNetwork        = "network not allowed"
)

// CheckURL validates a target URL at creation time: scheme http or https,
// no userinfo, a host, a valid port, and every address the host resolves to
// (or the IP literal, in any spelling) allowed. A refusal is a
// *RefusedError; a failed DNS lookup is returned as a plain wrapped error.
//
// Passing CheckURL does not make later connections safe by itself — the
// answer may change — which is why the Guard's dialer checks again.
func (g *Guard) CheckURL(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the raw URL, which may hold credentials.
		return g.refuse(ctx, &RefusedError{Reason: reasonInvalidURL})
	}
	return g.checkURL(ctx, u)
}

func (g *Guard) checkURL(ctx context.Context, u *url.URL) error {
	host := u.Hostname()
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return g.refuse(ctx, &RefusedError{Host: host, Reason: reasonScheme})
	case u.Opaque != "":
		return g.refuse(ctx, &RefusedError{Reason: reasonInvalidURL})
	case u.User != nil:
		return g.refuse(ctx, &RefusedError{Host: host, Reason: reasonUserinfo})
	case host == "":
		return g.refuse(ctx, &RefusedError{Reason: reasonMissingHost})
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return g.refuse(ctx, &RefusedError{Host: host, Reason: reasonInvalidPort})
		}
	}
	_, err := g.resolve(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("netguard: check url: %w", err)
	}
	return nil
}

// resolve turns host into the addresses to dial, all of them judged: if any
// is refused, the host is refused. A host whose DNS answer mixes public and
// internal addresses is a rebinding attempt or a misconfiguration, and
// picking the public ones would hide it.
func (g *Guard) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	name, ip, kind, err := parseHost(host)
	if err != nil {
		reason := reasonInvalidName
		if kind == hostLiteral {
			reason = reasonInvalidLiteral
		}
		return nil, g.refuse(ctx, &RefusedError{Host: host, Reason: reason})
	}
	var ips []netip.Addr
	if kind == hostLiteral {
		ips = []netip.Addr{ip}
	} else {
		ips, err = g.resolver.LookupNetIP(ctx, network, name)
		if err != nil {
			return nil, fmt.Errorf("resolve %q: %w", host, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("resolve %q: %w", host, errNoAddresses)
		}
	}
	for _, ip := range ips {
		if reason := g.verdict(ip); reason != "" {
			return nil, g.refuse(ctx, &RefusedError{Host: host, IP: ip, Reason: reason})
		}
	}
	return ips, nil
}

var errNoAddresses = errors.New("no addresses")
