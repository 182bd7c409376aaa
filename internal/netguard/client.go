package netguard

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"
)

// Defaults for ClientOptions fields left zero.
const (
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultMaxRedirects          = 3
	// DefaultMaxResponseHeaderBytes caps what a hostile server can make
	// the client buffer before the body starts.
	DefaultMaxResponseHeaderBytes = 1 << 20
)

// ClientOptions tunes the client built by HTTPClient. A nil *ClientOptions
// or a zero field means the default.
type ClientOptions struct {
	// Timeout bounds a whole request including reading the body. The
	// default is none, because MCP responses may be SSE streams that stay
	// open for hours; bound single calls with their context instead.
	Timeout time.Duration

	// TLSHandshakeTimeout; default DefaultTLSHandshakeTimeout.
	TLSHandshakeTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for response headers after
	// the request is written; it does not limit a streamed body. Default
	// DefaultResponseHeaderTimeout; negative means no limit, for servers
	// that answer long tool calls with plain JSON.
	ResponseHeaderTimeout time.Duration

	// IdleConnTimeout; default DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration

	// MaxRedirects caps the redirects followed; every target is checked
	// again like CheckURL. Default DefaultMaxRedirects; negative means do
	// not follow redirects and return the 3xx response.
	MaxRedirects int

	// TLSClientConfig is cloned into the transport, e.g. to add root CAs.
	// MinVersion is raised to TLS 1.2 if lower.
	TLSClientConfig *tls.Config
}

// Transport returns a new transport with the default options whose dials go
// through the Guard. The caller owns it and may tune other fields, but must
// leave DialContext, DialTLSContext and Proxy as they are. Redirects are the
// client's business: pair it with CheckRedirect, or use HTTPClient.
func (g *Guard) Transport() *http.Transport {
	return g.newTransport(&ClientOptions{})
}

// HTTPClient returns a new client whose transport goes through the Guard,
// ignores proxy environment variables, speaks HTTP/1.1 and HTTP/2, and
// re-checks every redirect target. Reuse the client; call its
// CloseIdleConnections when done with it.
func (g *Guard) HTTPClient(opts *ClientOptions) *http.Client {
	if opts == nil {
		opts = &ClientOptions{}
	}
	maxRedirects := opts.MaxRedirects
	if maxRedirects == 0 {
		maxRedirects = DefaultMaxRedirects
	}
	return &http.Client{
		Transport: g.newTransport(opts),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			return g.checkRedirect(req, via, maxRedirects)
		},
		Timeout: opts.Timeout,
	}
}

func (g *Guard) newTransport(opts *ClientOptions) *http.Transport {
	t := &http.Transport{
		// Proxy stays nil: with HTTP(S)_PROXY honoured, the dialer would
		// judge the proxy's address, not the target's.
		Proxy:                  nil,
		DialContext:            g.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    orDefault(opts.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout),
		ResponseHeaderTimeout:  orDefault(opts.ResponseHeaderTimeout, DefaultResponseHeaderTimeout),
		IdleConnTimeout:        orDefault(opts.IdleConnTimeout, DefaultIdleConnTimeout),
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    10,
		MaxResponseHeaderBytes: DefaultMaxResponseHeaderBytes,
	}
	if opts.TLSClientConfig != nil {
		t.TLSClientConfig = opts.TLSClientConfig.Clone()
	} else {
		t.TLSClientConfig = &tls.Config{}
	}
	if t.TLSClientConfig.MinVersion < tls.VersionTLS12 {
		t.TLSClientConfig.MinVersion = tls.VersionTLS12
	}
	return t
}

// orDefault maps zero to def and a negative duration to zero (no limit).
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// CheckRedirect is an http.Client CheckRedirect function for clients built
// around Transport: it stops after DefaultMaxRedirects and checks each
// target like CheckURL, before any connection is made to it.
func (g *Guard) CheckRedirect(req *http.Request, via []*http.Request) error {
	return g.checkRedirect(req, via, DefaultMaxRedirects)
}

func (g *Guard) checkRedirect(req *http.Request, via []*http.Request, maxRedirects int) error {
	if maxRedirects < 0 {
		return http.ErrUseLastResponse
	}
	if len(via) > maxRedirects {
		return fmt.Errorf("netguard: stopped after %d redirects", maxRedirects)
	}
	return g.checkURL(req.Context(), req.URL)
}
