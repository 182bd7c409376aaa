package chaos

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proxy is a round-robin reverse proxy in front of the api processes, like a load balancer
// without stickiness. A request whose connection to a backend is refused (the pod is down)
// is sent to the next backend: it never reached the first one.
type proxy struct {
	backends []string // host:port
	next     atomic.Uint64
	srv      *http.Server
	ln       net.Listener
	done     chan struct{}
	URL      string

	mu      sync.Mutex
	reached map[string]int // requests per backend
}

func newProxy(backends []string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{backends: backends, ln: ln, done: make(chan struct{}), reached: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.Out.URL.Scheme = "http"; r.Out.Host = r.In.Host },
		Transport:     p,
		FlushInterval: -1, // SSE
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "proxy: "+err.Error())
		},
	}
	p.srv = &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { defer close(p.done); _ = p.srv.Serve(ln) }()
	p.URL = "http://" + ln.Addr().String()
	return p, nil
}

var proxyTransport = &http.Transport{
	DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     30 * time.Second,
}

// RoundTrip sends r to the next backend in turn, moving on while connections are refused.
func (p *proxy) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			return nil, err
		}
		r.Body.Close()
	}
	start := p.next.Add(1)
	var lastErr error
	for i := range len(p.backends) {
		be := p.backends[(int(start)+i)%len(p.backends)]
		out := r.Clone(r.Context())
		out.URL = &url.URL{Scheme: "http", Host: be, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		out.Host = be
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
		}
		resp, err := proxyTransport.RoundTrip(out)
		if err == nil {
			p.mu.Lock()
			p.reached[be]++
			p.mu.Unlock()
			return resp, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
	}
	return nil, lastErr
}

func (p *proxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	_ = p.srv.Close()
	<-p.done
}
