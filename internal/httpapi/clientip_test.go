package httpapi_test

import (
	"net/netip"
	"testing"

	"github.com/tapline/tapline/internal/httpapi"
)

func TestClientIPFromXForwardedFor(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     []string
		want    string
	}{
		{"NoProxiesTheHeaderIsIgnored", nil, "198.51.100.1:5000", []string{"203.0.113.7"}, "198.51.100.1"},
		{"UntrustedPeerTheHeaderIsIgnored", proxies, "198.51.100.1:5000", []string{"203.0.113.7"}, "198.51.100.1"},
		{"TrustedPeerWithoutHeader", proxies, "10.0.0.1:5000", nil, "10.0.0.1"},
		{"PlainIPv4", proxies, "10.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"IPv4WithPort", proxies, "10.0.0.1:5000", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		{"PlainIPv6", proxies, "10.0.0.1:5000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"BracketedIPv6", proxies, "10.0.0.1:5000", []string{"[2001:db8::1]"}, "2001:db8::1"},
		{"BracketedIPv6WithPort", proxies, "10.0.0.1:5000", []string{"[2001:db8::1]:4711"}, "2001:db8::1"},
		{"MappedIPv4WithPort", proxies, "10.0.0.1:5000", []string{"[::ffff:203.0.113.7]:4711"}, "203.0.113.7"},
		{"TrustedPeerOverIPv6", proxies, "[fd00::2]:5000", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		// The client wrote the entries left of the first untrusted one: they are not believed.
		{"RightmostUntrustedWins", proxies, "10.0.0.1:5000", []string{"192.0.2.66:1, 203.0.113.7:4711, 10.0.0.9:80"}, "203.0.113.7"},
		{"SeveralHeaderLines", proxies, "10.0.0.1:5000", []string{"192.0.2.66", "[2001:db8::1]:4711"}, "2001:db8::1"},
		{"EveryHopAProxy", proxies, "10.0.0.1:5000", []string{"10.0.0.3:1, 10.0.0.2"}, "10.0.0.3"},
		{"NotAnAddressTheHeaderIsIgnored", proxies, "10.0.0.1:5000", []string{"unknown"}, "10.0.0.1"},
		{"BadPortTheHeaderIsIgnored", proxies, "10.0.0.1:5000", []string{"203.0.113.7:99999"}, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := httpapi.ClientIP(tt.trusted, tt.peer, tt.xff...); got != tt.want {
				t.Errorf("client of %s via %q = %q, want %q", tt.peer, tt.xff, got, tt.want)
			}
		})
	}
}
