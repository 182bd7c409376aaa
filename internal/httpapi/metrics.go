package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// httpMetrics are the API's instruments; with no meter provider installed they are no-ops.
type httpMetrics struct {
	requestSeconds metric.Float64Histogram
	rateLimited    metric.Int64Counter
}

var instruments = func() *httpMetrics { //nolint:gochecknoglobals // instruments are process-wide
	m := otel.Meter("github.com/tapline/tapline/internal/httpapi")
	out := &httpMetrics{}
	out.requestSeconds, _ = m.Float64Histogram("tapline_http_request_seconds", metric.WithUnit("s"),
		metric.WithDescription("API request latency by route and status."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
	out.rateLimited, _ = m.Int64Counter("tapline_rate_limit_rejections", metric.WithDescription("Requests refused with 429."))
	return out
}()

// metricsToken checks the bearer token of a /metrics request against want; an empty want
// lets every request through. Both sides are hashed first, so the comparison takes the same
// time whatever the length or content of the token sent.
func metricsToken(want string, r *http.Request) bool {
	if want == "" {
		return true
	}
	got, _ := bearerToken(r)
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// metricsUnauthenticated is the answer to a /metrics request without the metrics token.
func metricsUnauthenticated() *Problem {
	return newProblem(http.StatusUnauthorized, "unauthenticated", "Unauthenticated",
		"send the metrics token as Authorization: Bearer <token>")
}

// MetricsAuth guards a /metrics handler outside the api (the worker's listener) as the api
// guards its own (Config.MetricsToken): with token set, a request without
// "Authorization: Bearer <token>" is answered 401 application/problem+json; an empty token
// returns h unchanged.
func MetricsAuth(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if metricsToken(token, r) {
			h.ServeHTTP(w, r)
			return
		}
		p := *metricsUnauthenticated()
		p.Instance = r.URL.Path
		w.Header().Set("WWW-Authenticate", `Bearer realm="tapline"`)
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(p.Status)
		if r.Method != http.MethodHead {
			_ = json.NewEncoder(w).Encode(p)
		}
	})
}
