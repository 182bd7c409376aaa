package netguard_test

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/idna"

	"github.com/tapline/tapline/internal/netguard"
)

// publicDNS answers a public address for every name, so that whatever
// CheckURL lets through is decided by the URL alone.
type publicDNS struct{}

func (publicDNS) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
}

// FuzzCheckURL: CheckURL never panics, and never allows a URL whose host,
// as net/http would dial it, is an IP literal that the standard library
// classifies as loopback, private, link-local, multicast or unspecified.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"http://127.0.0.1/",
		"https://[::1]:8443/mcp",
		"http://[::ffff:127.0.0.1]/",
		"http://[::ffff:7f00:1]/",
		"http://2130706433/",
		"http://0177.0.0.1/",
		"http://0x7f.0.0.1/",
		"http://0x7f000001/",
		"http://127.1/",
		"http://①②⑦.0.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/",
		"http://[fe80::1%25eth0]/",
		"http://10.0.0.1:8080/",
		"http://100.64.0.1/",
		"http://[64:ff9b::7f00:1]/",
		"http://[2002:7f00:1::]/",
		"http://user:pass@example.com/",
		"https://example.com/mcp?x=1#f",
		"ftp://example.com/",
		"http://example.com:99999/",
		"http:///x",
		"http://%31%32%37.0.0.1/",
		"http://127.0.0.1./",
		"http://0/",
	} {
		f.Add(s)
	}
	g, err := netguard.New(&netguard.Config{Resolver: publicDNS{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := g.CheckURL(context.Background(), raw)
		if err != nil {
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("CheckURL(%q) allowed an unparsable URL", raw)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.User != nil || u.Hostname() == "" {
			t.Fatalf("CheckURL(%q) allowed scheme %q, user %v, host %q", raw, u.Scheme, u.User, u.Hostname())
		}
		// The host as net/http's transport dials it.
		host := u.Hostname()
		if mapped, err := idna.Lookup.ToASCII(host); err == nil {
			host = mapped
		}
		for _, h := range []string{host, strings.TrimSuffix(host, ".")} {
			ip, err := netip.ParseAddr(h)
			if err != nil {
				ip2 := net.ParseIP(h)
				if ip2 == nil {
					continue
				}
				ip, _ = netip.AddrFromSlice(ip2)
			}
			ip = ip.WithZone("").Unmap()
			if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsMulticast() ||
				ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() || ip.IsLinkLocalMulticast() {
				t.Fatalf("CheckURL(%q) allowed %s", raw, ip)
			}
		}
	})
}
