package netguard_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/tapline/tapline/internal/netguard"
)

// fakeDNS answers from a fixed table and never touches the network.
type fakeDNS map[string][]string

func (f fakeDNS) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	answers, ok := f[strings.TrimSuffix(host, ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range answers {
		ip := netip.MustParseAddr(a)
		if network == "ip4" && !ip.Is4() || network == "ip6" && !ip.Is6() {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}

var testDNS = fakeDNS{
	"public.test":        {"93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
	"internal.test":      {"10.0.0.5"},
	"mixed.test":         {"93.184.215.14", "10.0.0.5"},
	"metadata.test":      {"169.254.169.254"},
	"ula.test":           {"fd00::1"},
	"loopback.test":      {"127.0.0.1"},
	"mapped.test":        {"::ffff:127.0.0.1"},
	"localhost":          {"127.0.0.1", "::1"},
	"xn--bcher-kva.test": {"93.184.215.14"}, // bücher.test
}

func newGuard(t testing.TB, cfg netguard.Config) *netguard.Guard {
	t.Helper()
	if cfg.Resolver == nil {
		cfg.Resolver = testDNS
	}
	g, err := netguard.New(&cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g
}

// refusal returns the *RefusedError in err's chain, or nil.
func refusal(err error) *netguard.RefusedError {
	var r *netguard.RefusedError
	if errors.As(err, &r) {
		return r
	}
	return nil
}

// checkCase is a URL host (already bracketed for IPv6) and the reason a
// refusal must contain, or "" when the host is allowed.
type checkCase struct {
	host   string
	reason string
}

func runCheckCases(t *testing.T, g *netguard.Guard, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			err := g.CheckURL(context.Background(), "http://"+tc.host+"/mcp")
			r := refusal(err)
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("CheckURL: want allowed, got %v", err)
			case tc.reason != "" && r == nil:
				t.Fatalf("CheckURL: want *RefusedError with %q, got %v", tc.reason, err)
			case tc.reason != "" && !strings.Contains(r.Reason, tc.reason):
				t.Fatalf("CheckURL: reason %q, want it to contain %q", r.Reason, tc.reason)
			}
		})
	}
}

// TestCheckURLDefaultPolicy covers every special-purpose range in its IPv4
// and IPv6 spellings with the default (production) configuration.
func TestCheckURLDefaultPolicy(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{})
	runCheckCases(t, g, []checkCase{
		// IPv4 special-purpose ranges.
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "this-network"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"100.64.0.1", "shared"},
		{"100.127.255.254", "shared"},
		{"100.100.100.200", "metadata"},
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"169.254.0.1", "link-local"},
		{"169.254.169.254", "metadata"},
		{"169.254.170.2", "metadata"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.0.0.1", "reserved"},
		{"192.0.0.192", "metadata"},
		{"192.0.2.1", "documentation"},
		{"192.88.99.1", "reserved"},
		{"192.168.1.1", "private"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},
		{"168.63.129.16", "metadata"},

		// IPv6 special-purpose ranges.
		{"[::]", "unspecified"},
		{"[::1]", "loopback"},
		{"[fe80::1]", "link-local"},
		{"[fe80::1%25eth0]", "link-local"},
		{"[febf:ffff::1]", "link-local"},
		{"[fc00::1]", "private"},
		{"[fd00::1]", "private"},
		{"[fdff:ffff::1]", "private"},
		{"[fd00:ec2::254]", "metadata"},
		{"[fd20:ce::254]", "metadata"},
		{"[ff02::1]", "multicast"},
		{"[ff05::1:3]", "multicast"},
		{"[2001:db8::1]", "documentation"},
		{"[3fff::1]", "documentation"},
		{"[2001::1]", "teredo"},
		{"[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "teredo"},
		{"[2001:2::1]", "benchmarking"},
		{"[2001:10::1]", "reserved"},
		{"[100::1]", "non-global"},
		{"[fec0::1]", "non-global"},
		{"[5f00::1]", "non-global"},
		{"[::127.0.0.1]", "non-global"}, // deprecated IPv4-compatible form

		// IPv4-mapped IPv6 is judged as the IPv4 address.
		{"[::ffff:127.0.0.1]", "loopback"},
		{"[::ffff:7f00:1]", "loopback"},
		{"[0:0:0:0:0:ffff:127.0.0.1]", "loopback"},
		{"[::ffff:10.0.0.1]", "private"},
		{"[::ffff:169.254.169.254]", "metadata"},
		{"[::ffff:0.0.0.0]", "unspecified"},

		// NAT64 and 6to4 are judged by the embedded IPv4 address.
		{"[64:ff9b::127.0.0.1]", "loopback address embedded in NAT64"},
		{"[64:ff9b::a00:1]", "private address embedded in NAT64"},
		{"[64:ff9b::169.254.169.254]", "metadata address embedded in NAT64"},
		{"[64:ff9b:1::1]", "private"},
		{"[2002:7f00:1::1]", "loopback address embedded in 6to4"},
		{"[2002:a00:1::]", "private address embedded in 6to4"},
		{"[2002:a9fe:a9fe::1]", "metadata address embedded in 6to4"},
		{"[2002:6440:1::1]", "shared address space (100.64.0.0/10) embedded in 6to4"},

		// Public addresses pass, including right at the edges of ranges.
		{"93.184.215.14", ""},
		{"8.8.8.8", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"192.169.0.1", ""},
		{"198.20.0.1", ""},
		{"[2606:4700::1111]", ""},
		{"[2001:4860:4860::8888]", ""},
		{"[::ffff:8.8.8.8]", ""},
		{"[64:ff9b::808:808]", ""},
		{"[2002:808:808::1]", ""},

		// Every IPv4 spelling that URL parsers or inet_aton accept.
		{"2130706433", "loopback"},
		{"0177.0.0.1", "loopback"},
		{"0x7f.0.0.1", "loopback"},
		{"0X7F.0.0.1", "loopback"},
		{"0x7f000001", "loopback"},
		{"017700000001", "loopback"},
		{"127.1", "loopback"},
		{"127.0.1", "loopback"},
		{"0177.1", "loopback"},
		{"127.0.0.1.", "loopback"},
		{"10.1", "private"},
		{"0xA9.0xFE.0xA9.0xFE", "metadata"},
		{"2852039166", "metadata"},
		{"0", "unspecified"},
		{"0x", "unspecified"},
		{"①②⑦.0.0.1", "loopback"}, // IDNA maps it to 127.0.0.1, as net/http does
		{"１２７.０.０.１", "loopback"}, // fullwidth digits, same
		{"1572395042", ""},        // 93.184.216.34, a public address

		// Things that look like IPv4 numbers but are not valid ones are
		// refused, never sent to DNS.
		{"1.2.3.4.5", "invalid IP literal"},
		{"256.0.0.1", "invalid IP literal"},
		{"4294967296", "invalid IP literal"},
		{"0x100000000", "invalid IP literal"},
		{"08.0.0.1", "invalid IP literal"},
		{"example.123", "invalid IP literal"},
		{"[::ffff:0177.0.0.1]", "invalid"}, // url.Parse already says no
		{"127.0.0.1%25eth0", "invalid host name"},

		// Names are resolved and every answer judged.
		{"public.test", ""},
		{"PUBLIC.test", ""},
		{"public.test.", ""},
		{"bücher.test", ""},
		{"internal.test", "private"},
		{"mixed.test", "private"},
		{"metadata.test", "metadata"},
		{"ula.test", "private"},
		{"loopback.test", "loopback"},
		{"mapped.test", "loopback"},
	})
}

func TestCheckURLRejectsMalformedURLs(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{})
	for _, tc := range []struct{ url, reason string }{
		{"", "scheme"},
		{"public.test", "scheme"},
		{"//public.test/", "scheme"},
		{"ftp://public.test/", "scheme"},
		{"file:///etc/passwd", "scheme"},
		{"gopher://public.test:70/", "scheme"},
		{"javascript:alert(1)", "scheme"},
		{"http:public.test", "invalid url"},
		{"http://user:hunter2@public.test/", "userinfo"},
		{"http://@public.test/", "userinfo"},
		{"http:///path", "missing host"},
		{"http://:80/", "missing host"},
		{"http://public.test:0/", "invalid port"},
		{"http://public.test:99999/", "invalid port"},
		{"http://public.test:8080/", ""},
		{"HTTPS://PUBLIC.TEST/", ""},
		{"http://public.test:/", ""},
		{"http://pub lic.test/", "invalid url"},
		{"http://%zz/", "invalid url"},
		{"http://exa$mple.test/", "invalid host name"},
		{"http://" + strings.Repeat("a", 64) + ".test/", "invalid host name"},
		{"http://a..test/", "invalid host name"},
	} {
		err := g.CheckURL(context.Background(), tc.url)
		r := refusal(err)
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("CheckURL(%q): want allowed, got %v", tc.url, err)
		case tc.reason != "" && r == nil:
			t.Errorf("CheckURL(%q): want *RefusedError with %q, got %v", tc.url, tc.reason, err)
		case tc.reason != "" && !strings.Contains(r.Reason, tc.reason):
			t.Errorf("CheckURL(%q): reason %q, want %q", tc.url, r.Reason, tc.reason)
		}
	}
}

func TestRefusedErrorNeverRepeatsCredentials(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{})
	for _, u := range []string{
		"http://user:hunter2@public.test/",
		"http://user:hunter2@10.0.0.1/?token=hunter2",
		"http://10.0.0.1/path?token=hunter2",
		"ftp://user:hunter2@public.test/",
		"http://user:hunter2@pub lic.test/",
	} {
		err := g.CheckURL(context.Background(), u)
		if err == nil {
			t.Fatalf("CheckURL(%q) = nil, want refusal", u)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("CheckURL(%q) error %q repeats a secret", u, err)
		}
	}
}

func TestCheckURLLookupFailureIsNotARefusal(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{})
	err := g.CheckURL(context.Background(), "https://nxdomain.test/")
	if err == nil {
		t.Fatal("CheckURL of an unknown name = nil, want lookup error")
	}
	if refusal(err) != nil {
		t.Fatalf("lookup failure reported as refusal: %v", err)
	}
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Fatalf("want *net.DNSError in chain, got %v", err)
	}
}

func TestAllowLoopbackOpensOnlyLoopback(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{AllowLoopback: true})
	runCheckCases(t, g, []checkCase{
		{"127.0.0.1", ""},
		{"127.0.0.2", ""},
		{"[::1]", ""},
		{"[::ffff:127.0.0.1]", ""},
		{"2130706433", ""},
		{"loopback.test", ""},
		{"0.0.0.0", "unspecified"},
		{"[::]", "unspecified"},
		{"169.254.169.254", "metadata"},
		{"10.0.0.1", "private"},
		{"192.168.0.1", "private"},
		{"100.64.0.1", "shared"},
		{"[fd00::1]", "private"},
		{"[fe80::1]", "link-local"},
		// Loopback behind a translator is not this host's loopback.
		{"[64:ff9b::127.0.0.1]", "loopback address embedded in NAT64"},
		{"[2002:7f00:1::1]", "loopback address embedded in 6to4"},
	})
}

func TestAllowPrivateKeepsMetadataRefused(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{AllowPrivate: true})
	runCheckCases(t, g, []checkCase{
		{"10.0.0.1", ""},
		{"172.16.0.1", ""},
		{"192.168.0.1", ""},
		{"100.64.0.1", ""},
		{"[fd00::1]", ""},
		{"[fc00::1]", ""},
		{"[64:ff9b:1::1]", ""},
		{"[64:ff9b:1::a00:1]", ""}, // 10.0.0.1 behind a local translator
		{"[64:ff9b:1::a9fe:a9fe]", "metadata address embedded in local-use NAT64"},
		{"[64:ff9b:1::7f00:1]", "loopback address embedded in local-use NAT64"},
		{"[64:ff9b:1::a9fe:101]", "link-local address embedded in local-use NAT64"},
		{"internal.test", ""},
		{"169.254.169.254", "metadata"},
		{"100.100.100.200", "metadata"},
		{"[fd00:ec2::254]", "metadata"},
		{"[fd20:ce::254]", "metadata"},
		{"169.254.1.1", "link-local"},
		{"127.0.0.1", "loopback"},
		{"[::1]", "loopback"},
		{"[64:ff9b::a00:1]", "private address embedded in NAT64"},
	})
}

func TestAllowAndDenyLists(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{
		Allow: []netip.Prefix{
			netip.MustParsePrefix("10.1.0.0/16"),
			netip.MustParsePrefix("::ffff:192.168.7.0/120"), // mapped: read as 192.168.7.0/24
			netip.MustParsePrefix("fd00:1234::/32"),
			netip.MustParsePrefix("169.254.169.254/32"), // an operator may open anything
			netip.MustParsePrefix("0.0.0.0/32"),         // …but not the unspecified address
		},
		Deny: []netip.Prefix{
			netip.MustParsePrefix("10.1.2.0/24"),
			netip.MustParsePrefix("93.184.215.0/24"),
			netip.MustParsePrefix("8.8.8.8/32"),
		},
	})
	runCheckCases(t, g, []checkCase{
		{"10.1.0.1", ""},
		{"10.1.255.255", ""},
		{"[::ffff:10.1.0.1]", ""},
		{"10.2.0.1", "private"},
		{"192.168.7.9", ""},
		{"192.168.8.9", "private"},
		{"[fd00:1234::1]", ""},
		{"[fd00:1235::1]", "private"},
		{"169.254.169.254", ""},
		{"169.254.170.2", "metadata"},
		{"0.0.0.0", "unspecified"},
		{"10.1.2.3", "denied by operator"},
		{"93.184.215.14", "denied by operator"},
		{"public.test", "denied by operator"},
		{"[64:ff9b::808:808]", "denied by operator"},
		{"1.1.1.1", ""},
	})
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]netguard.Config{
		"negative timeout": {DialTimeout: -1},
		"invalid allow":    {Allow: []netip.Prefix{{}}},
		"invalid deny":     {Deny: []netip.Prefix{{}}},
		"wide mapped":      {Allow: []netip.Prefix{netip.MustParsePrefix("::ffff:0:0/90")}},
	} {
		if _, err := netguard.New(&cfg); err == nil {
			t.Errorf("New(%s) = nil error, want one", name)
		}
	}
	if _, err := netguard.New(nil); err != nil {
		t.Errorf("New(nil): %v", err)
	}
}

func TestOnRefusedHook(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		reasons []string
	)
	g := newGuard(t, netguard.Config{OnRefused: func(_ context.Context, e *netguard.RefusedError) {
		mu.Lock()
		defer mu.Unlock()
		reasons = append(reasons, e.Reason)
	}})
	_ = g.CheckURL(context.Background(), "http://10.0.0.1/")
	_ = g.CheckURL(context.Background(), "ftp://public.test/")
	_ = g.CheckURL(context.Background(), "http://public.test/")
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 2 || reasons[0] != "private address" || !strings.Contains(reasons[1], "scheme") {
		t.Fatalf("hook saw %q, want [private address, scheme…]", reasons)
	}
}

func TestRefusedErrorMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  netguard.RefusedError
		want string
	}{
		{netguard.RefusedError{Host: "internal.test", IP: netip.MustParseAddr("10.0.0.5"), Reason: "private address"},
			`netguard: refused "internal.test" (10.0.0.5): private address`},
		{netguard.RefusedError{Host: "10.0.0.5", IP: netip.MustParseAddr("10.0.0.5"), Reason: "private address"},
			`netguard: refused 10.0.0.5: private address`},
		{netguard.RefusedError{Host: "x.test", Reason: "userinfo not allowed in url"},
			`netguard: refused "x.test": userinfo not allowed in url`},
		{netguard.RefusedError{Reason: "invalid url"}, `netguard: refused: invalid url`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
