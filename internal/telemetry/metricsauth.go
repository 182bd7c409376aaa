package telemetry

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// MetricsAuth guards a /metrics handler with a bearer token (TAPLINE_METRICS_TOKEN), for the
// api's route and the worker's listener alike: a request without
// "Authorization: Bearer <token>" is answered 401 application/problem+json. An empty token
// returns h unchanged, leaving /metrics open. Both tokens are hashed before they are
// compared, so the comparison takes the same time whatever the token sent.
func MetricsAuth(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(bearer(r)))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="tapline"`)
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusUnauthorized)
		if r.Method == http.MethodHead {
			return
		}
		// The api's problem document (internal/httpapi), written here so the worker's
		// listener needs none of the api.
		_ = json.NewEncoder(w).Encode(map[string]any{
			"type":     "urn:tapline:problem:unauthenticated",
			"title":    "Unauthenticated",
			"status":   http.StatusUnauthorized,
			"detail":   "send the metrics token as Authorization: Bearer <token>",
			"instance": r.URL.Path,
		})
	})
}

// bearer is the request's bearer token, "" without one.
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
