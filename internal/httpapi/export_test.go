package httpapi

import (
	"net/http"
	"net/netip"
	"time"
)

// SetStreamWriteTimeout shortens how long one write to a stream or export client may block,
// for tests of clients that stop reading. Call it before any test runs.
func SetStreamWriteTimeout(d time.Duration) { streamWriteTimeout = d }

// ClientIP is the client address the api reads for a request from remoteAddr carrying the
// X-Forwarded-For header lines xff, behind the proxies in trusted.
func ClientIP(trusted []netip.Prefix, remoteAddr string, xff ...string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = remoteAddr
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	return clientIPExtractor(trusted)(req)
}
