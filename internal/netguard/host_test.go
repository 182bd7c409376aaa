package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
)

func TestParseIPv4Lenient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string // "" = not a valid IPv4 number
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"1.2.771", "1.2.3.3"},
		{"1.0x10203", "1.1.2.3"},
		{"0x", "0.0.0.0"},
		{"0", "0.0.0.0"},
		{"00", "0.0.0.0"},
		{"255.255.255.255", "255.255.255.255"},
		{"4294967295", "255.255.255.255"},
		{"10.0.0.1.", "10.0.0.1"},
		{"4294967296", ""},
		{"0x100000000", ""},
		{"256.1.1.1", ""},
		{"1.256.1.1", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"1.2.3.4.5", ""},
		{"08", ""},
		{"0x1g", ""},
		{"1..2", ""},
		{".1", ""},
		{"", ""},
		{"99999999999999999999999", ""},
	} {
		got, ok := parseIPv4Lenient(tc.in)
		switch {
		case tc.want == "" && ok:
			t.Errorf("parseIPv4Lenient(%q) = %v, want failure", tc.in, got)
		case tc.want != "" && (!ok || got != netip.MustParseAddr(tc.want)):
			t.Errorf("parseIPv4Lenient(%q) = %v, %v; want %s", tc.in, got, ok, tc.want)
		}
	}
}

func TestEndsInNumber(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"example.com":  false,
		"example.123":  true,
		"1.2.3.4":      true,
		"1.2.3.4.":     true,
		"0x7f":         true,
		"a.0x":         true,
		"a.0xg":        false,
		"0xdead.beef":  false,
		"":             false,
		".":            false,
		"example.com.": false,
	} {
		if got := endsInNumber(in); got != want {
			t.Errorf("endsInNumber(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestControlRefusesBeforeConnect exercises the last wall on its own: a
// dialer whose only protection is the Control hook. Control runs before
// connect(2), so no packet leaves for the refused address.
func TestControlRefusesBeforeConnect(t *testing.T) {
	t.Parallel()
	g, err := New(&Config{AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{ControlContext: func(ctx context.Context, network, address string, _ syscall.RawConn) error {
		return g.control(ctx, "probe", network, address)
	}}
	for _, addr := range []string{"10.0.0.1:80", "169.254.169.254:80", "[fd00::1]:80", "[::ffff:10.0.0.1]:80", "0.0.0.0:80"} {
		_, err := d.DialContext(context.Background(), "tcp", addr)
		var r *RefusedError
		if !errors.As(err, &r) {
			t.Errorf("dial %s: want *RefusedError, got %v", addr, err)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial allowed loopback: %v", err)
	}
	conn.Close()
}

// TestVerdictAgreesWithStdlib cross-checks the tables with the netip
// predicates: whatever the standard library calls loopback, private,
// link-local, multicast or unspecified must be refused by default.
func TestVerdictAgreesWithStdlib(t *testing.T) {
	t.Parallel()
	g, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"127.0.0.1", "127.255.255.255", "10.0.0.0", "172.16.0.0", "172.31.255.255",
		"192.168.0.0", "169.254.0.0", "224.0.0.0", "239.255.255.255", "0.0.0.0",
		"::", "::1", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::",
		"febf::1", "ff00::", "ff02::1", "ff01::1", "::ffff:192.168.1.1",
	} {
		ip := netip.MustParseAddr(s)
		u := ip.Unmap()
		if !(u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsMulticast() || u.IsUnspecified()) {
			t.Fatalf("test input %s is not special to netip", s)
		}
		if g.verdict(ip) == "" {
			t.Errorf("verdict(%s) allowed it", s)
		}
	}
}
