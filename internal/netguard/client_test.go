package netguard_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/netguard"
)

// hitCounter is a handler that counts requests and answers "ok".
type hitCounter struct{ hits atomic.Int64 }

func (h *hitCounter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.hits.Add(1)
	_, _ = io.WriteString(w, "ok")
}

func startServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func serverAddr(t *testing.T, srv *httptest.Server) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func newClient(t *testing.T, g *netguard.Guard, opts *netguard.ClientOptions) *http.Client {
	t.Helper()
	c := g.HTTPClient(opts)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func get(t *testing.T, c *http.Client, url string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// mustRefuse fails unless err holds a *RefusedError; it returns it.
func mustRefuse(t *testing.T, err error) *netguard.RefusedError {
	t.Helper()
	r := refusal(err)
	if r == nil {
		t.Fatalf("want *netguard.RefusedError in chain, got %v", err)
	}
	return r
}

func TestClientReachesLoopbackInDevMode(t *testing.T) {
	t.Parallel()
	h := &hitCounter{}
	srv := startServer(t, h)
	c := newClient(t, newGuard(t, netguard.Config{AllowLoopback: true}), nil)
	body, err := get(t, c, srv.URL)
	if err != nil || body != "ok" {
		t.Fatalf("GET = %q, %v; want ok", body, err)
	}
}

func TestClientReachesIPv6Loopback(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	h := &hitCounter{}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	c := newClient(t, newGuard(t, netguard.Config{AllowLoopback: true}), nil)
	if body, err := get(t, c, srv.URL); err != nil || body != "ok" {
		t.Fatalf("GET %s = %q, %v; want ok", srv.URL, body, err)
	}
	c = newClient(t, newGuard(t, netguard.Config{}), nil)
	_, err = get(t, c, srv.URL)
	if r := mustRefuse(t, err); r.Reason != "loopback address" {
		t.Fatalf("reason %q", r.Reason)
	}
}

func TestClientRefusesLoopbackByDefault(t *testing.T) {
	t.Parallel()
	h := &hitCounter{}
	srv := startServer(t, h)
	c := newClient(t, newGuard(t, netguard.Config{}), nil)
	_, err := get(t, c, srv.URL)
	r := mustRefuse(t, err)
	if r.IP != netip.MustParseAddr("127.0.0.1") || r.Reason != "loopback address" {
		t.Fatalf("refusal = %+v", r)
	}
	if n := h.hits.Load(); n != 0 {
		t.Fatalf("server saw %d requests, want 0", n)
	}
}

// TestDevModeStillRefusesInternalTargets checks the probes that must fail
// even with AllowLoopback, at dial time (these addresses are never
// connected to: the machine running the tests may have no route to them).
func TestDevModeStillRefusesInternalTargets(t *testing.T) {
	t.Parallel()
	for _, devMode := range []bool{false, true} {
		c := newClient(t, newGuard(t, netguard.Config{AllowLoopback: devMode}), nil)
		for _, target := range []string{
			"http://169.254.169.254/latest/meta-data/",
			"http://10.0.0.1/",
			"http://10.255.0.7:8080/mcp",
			"http://100.64.0.1/",
			"http://100.100.100.200/",
			"http://[fd00::1]/",
			"http://[fd00:ec2::254]/",
			"http://[fe80::1%25lo]/",
			"http://internal.test/",
			"http://metadata.test/",
			"https://0xA9FEA9FE/",
		} {
			_, err := get(t, c, target)
			mustRefuse(t, err)
		}
		if !devMode {
			_, err := get(t, c, "http://[::ffff:127.0.0.1]/")
			mustRefuse(t, err)
		}
	}
}

// TestRedirectToInternalAddressRefused: the guard allows exactly the test
// server and the server redirects elsewhere. Each redirect must fail in
// CheckRedirect, before any connection: the error is a refusal and not a
// dial error.
func TestRedirectToInternalAddressRefused(t *testing.T) {
	t.Parallel()
	var location atomic.Value
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		http.Redirect(w, r, location.Load().(string), http.StatusFound)
	}))
	ap := serverAddr(t, srv)
	g := newGuard(t, netguard.Config{Allow: []netip.Prefix{netip.PrefixFrom(ap.Addr(), 32)}})
	c := newClient(t, g, nil)

	location.Store("/ok")
	if body, err := get(t, c, srv.URL+"/start"); err != nil || body != "ok" {
		t.Fatalf("redirect within the allowed server: %q, %v", body, err)
	}

	for _, target := range []string{
		"http://10.0.0.1/",
		"http://[::ffff:127.0.0.2]/",
		fmt.Sprintf("http://[::ffff:127.0.0.2]:%d/", ap.Port()),
		fmt.Sprintf("http://127.0.0.2:%d/", ap.Port()),
		fmt.Sprintf("http://localhost:%d/", ap.Port()),
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/",
		"http://[fd00:ec2::254]/",
		"http://100.64.0.1/",
		"http://2130706434/", // 127.0.0.2
		"http://internal.test/",
		"http://user:pw@93.184.215.14/",
		"file:///etc/passwd",
		"gopher://93.184.215.14:70/",
	} {
		location.Store(target)
		_, err := get(t, c, srv.URL+"/start")
		r := mustRefuse(t, err)
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			t.Errorf("redirect to %s: refused while dialling (%v), want refused before", target, err)
		}
		// The *url.Error that http.Client wraps around it repeats the
		// Location header verbatim; the refusal itself must not.
		if strings.Contains(r.Error(), "pw") {
			t.Errorf("redirect to %s: refusal repeats userinfo: %v", target, r)
		}
	}
}

// TestTransportRefusesAtDial: a client built on Transport without the
// Guard's CheckRedirect still cannot be redirected inside: the dialer
// refuses.
func TestTransportRefusesAtDial(t *testing.T) {
	t.Parallel()
	srv := startServer(t, http.RedirectHandler("http://10.0.0.1:8080/", http.StatusFound))
	ap := serverAddr(t, srv)
	g := newGuard(t, netguard.Config{Allow: []netip.Prefix{netip.PrefixFrom(ap.Addr(), 32)}})
	tr := g.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	_, err := get(t, c, srv.URL)
	r := mustRefuse(t, err)
	if r.IP != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("refusal = %+v", r)
	}
}

// rebindingDNS answers a public address the first time and loopback after,
// like an attacker's name server with a zero TTL.
type rebindingDNS struct {
	calls  atomic.Int64
	second []string
}

func (d *rebindingDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	answers := []string{"93.184.215.14"}
	if d.calls.Add(1) > 1 {
		answers = d.second
	}
	out := make([]netip.Addr, len(answers))
	for i, a := range answers {
		out[i] = netip.MustParseAddr(a)
	}
	return out, nil
}

func TestDNSRebindingRefusedAtDial(t *testing.T) {
	t.Parallel()
	for _, second := range [][]string{
		{"127.0.0.1"},
		{"93.184.215.14", "127.0.0.1"},
		{"::ffff:127.0.0.1"},
	} {
		h := &hitCounter{}
		srv := startServer(t, h)
		ap := serverAddr(t, srv)
		dns := &rebindingDNS{second: second}
		g := newGuard(t, netguard.Config{Resolver: dns})
		url := fmt.Sprintf("http://rebind.test:%d/mcp", ap.Port())

		if err := g.CheckURL(context.Background(), url); err != nil {
			t.Fatalf("CheckURL with the public answer: %v", err)
		}
		_, err := get(t, newClient(t, g, nil), url)
		r := mustRefuse(t, err)
		if r.Host != "rebind.test" || r.Reason != "loopback address" {
			t.Fatalf("refusal = %+v", r)
		}
		if n := h.hits.Load(); n != 0 {
			t.Fatalf("server saw %d requests after rebinding, want 0", n)
		}
	}
}

func TestNameIsDialledAtItsCheckedAddress(t *testing.T) {
	t.Parallel()
	var gotHost atomic.Value
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost.Store(r.Host)
		_, _ = io.WriteString(w, "ok")
	}))
	ap := serverAddr(t, srv)
	g := newGuard(t, netguard.Config{
		AllowLoopback: true,
		Resolver:      fakeDNS{"mcp.test": {"127.0.0.1"}},
	})
	url := fmt.Sprintf("http://mcp.test:%d/", ap.Port())
	if body, err := get(t, newClient(t, g, nil), url); err != nil || body != "ok" {
		t.Fatalf("GET %s = %q, %v", url, body, err)
	}
	if h := gotHost.Load(); h != fmt.Sprintf("mcp.test:%d", ap.Port()) {
		t.Fatalf("Host header %q", h)
	}
}

// TestProxyEnvironmentIgnored: with HTTP_PROXY honoured the dial check
// would judge the proxy, not the target. Not parallel: it sets env vars.
func TestProxyEnvironmentIgnored(t *testing.T) {
	proxy := &hitCounter{}
	proxySrv := startServer(t, proxy)
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(k, proxySrv.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	target := &hitCounter{}
	srv := startServer(t, target)
	ap := serverAddr(t, srv)
	g := newGuard(t, netguard.Config{
		AllowLoopback: true,
		Resolver:      fakeDNS{"target.test": {"127.0.0.1"}},
	})
	if tr := g.Transport(); tr.Proxy != nil {
		t.Fatal("Transport().Proxy is set")
	}
	c := newClient(t, g, nil)
	if _, err := get(t, c, fmt.Sprintf("http://target.test:%d/", ap.Port())); err != nil {
		t.Fatal(err)
	}
	if target.hits.Load() != 1 || proxy.hits.Load() != 0 {
		t.Fatalf("target hits %d, proxy hits %d; want 1 and 0", target.hits.Load(), proxy.hits.Load())
	}

	// With dev mode off, the proxy must not become a way around the guard.
	c = newClient(t, newGuard(t, netguard.Config{Resolver: fakeDNS{"target.test": {"127.0.0.1"}}}), nil)
	_, err := get(t, c, fmt.Sprintf("http://target.test:%d/", ap.Port()))
	mustRefuse(t, err)
	if proxy.hits.Load() != 0 {
		t.Fatal("request went through the proxy")
	}
}

func TestHTTP2OverTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	g := newGuard(t, netguard.Config{AllowLoopback: true})
	c := newClient(t, g, &netguard.ClientOptions{TLSClientConfig: &tls.Config{RootCAs: pool}})
	body, err := get(t, c, srv.URL)
	if err != nil || body != "HTTP/2.0" {
		t.Fatalf("GET = %q, %v; want HTTP/2.0", body, err)
	}
}

// TestStreamOutlivesResponseHeaderTimeout: an SSE stream may run far past
// the header timeout, and there is no overall client timeout by default.
func TestStreamOutlivesResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	const events = 5
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for i := range events {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	}))
	g := newGuard(t, netguard.Config{AllowLoopback: true})
	c := newClient(t, g, &netguard.ClientOptions{ResponseHeaderTimeout: 150 * time.Millisecond})
	if c.Timeout != 0 {
		t.Fatalf("client timeout %s, want none", c.Timeout)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			n++
		}
	}
	if err := sc.Err(); err != nil || n != events {
		t.Fatalf("read %d events, err %v; want %d", n, err, events)
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	g := newGuard(t, netguard.Config{AllowLoopback: true})
	c := newClient(t, g, &netguard.ClientOptions{ResponseHeaderTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := get(t, c, srv.URL)
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("GET = %v after %s, want a header timeout", err, time.Since(start))
	}
}

func TestRedirectLimit(t *testing.T) {
	t.Parallel()
	h := &hitCounter{}
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		http.Redirect(w, r, "/again", http.StatusFound)
	}))
	g := newGuard(t, netguard.Config{AllowLoopback: true})
	_, err := get(t, newClient(t, g, nil), srv.URL)
	if err == nil || !strings.Contains(err.Error(), "stopped after 3 redirects") {
		t.Fatalf("GET = %v, want the redirect cap", err)
	}
	if n := h.hits.Load(); n != 4 {
		t.Fatalf("server saw %d requests, want 4", n)
	}

	c := newClient(t, g, &netguard.ClientOptions{MaxRedirects: -1})
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d, want 302 returned as is", resp.StatusCode)
	}
}

func TestDialContextRefusesOtherNetworks(t *testing.T) {
	t.Parallel()
	g := newGuard(t, netguard.Config{AllowLoopback: true})
	for _, network := range []string{"udp", "unix", "ip4:icmp"} {
		_, err := g.DialContext(context.Background(), network, "127.0.0.1:53")
		if r := mustRefuse(t, err); r.Reason != "network not allowed" {
			t.Fatalf("%s: refusal %+v", network, r)
		}
	}
	_, err := g.DialContext(context.Background(), "tcp", "127.0.0.1:0")
	mustRefuse(t, err)
}
