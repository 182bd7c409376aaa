package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/telemetry"
)

const metricsSecret = "scrape-0123456789abcdef"

// metricsHandler serves one gauge in Prometheus text format from a registry of its own.
func metricsHandler(t *testing.T) http.Handler {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tapline_test_up", Help: "A gauge the test scrapes."})
	g.Set(1)
	reg.MustRegister(g)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// scrape GETs url/metrics with the given Authorization header ("" sends none).
func scrape(t *testing.T, url, authorization string) response {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// requireScrapes checks which Authorization headers get the metrics from url: with a token
// only "Bearer <token>" (in any case of the scheme) does, and everything else is a 401
// problem; without one, every request does.
func requireScrapes(t *testing.T, url, token, tenantKey string) {
	t.Helper()
	refused := []string{"", "Bearer wrong-0123456789abcdef", "Bearer " + token + "x", "Bearer " + tenantKey, "Basic " + token}
	allowed := []string{"Bearer " + token, "bearer " + token}
	if token == "" {
		allowed, refused = append(refused, allowed...), nil
	}
	for _, h := range allowed {
		r := scrape(t, url, h)
		if r.status != 200 || !strings.Contains(r.raw, "tapline_test_up 1") {
			t.Fatalf("scrape with %q = %d %s, want the metrics", h, r.status, r.raw)
		}
	}
	for _, h := range refused {
		r := scrape(t, url, h)
		requireProblem(t, r, http.StatusUnauthorized, "")
		if strings.Contains(r.raw, "tapline_test_up") || r.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("scrape with %q = %d %v %s, want a 401 challenge without metrics", h, r.status, r.header, r.raw)
		}
	}
}

// TestMetricsToken: with TAPLINE_METRICS_TOKEN set, /metrics on the api and on a worker's
// listener (telemetry.MetricsAuth) needs it as a bearer token, and neither tenant's API key will do;
// unset, /metrics stays open.
func TestMetricsToken(t *testing.T) {
	t.Parallel()
	for _, token := range []string{metricsSecret, ""} {
		name := "Set"
		if token == "" {
			name = "Unset"
		}
		t.Run(name+"/API", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, dbtest.Pool(t), testRedis(t, os.Getenv("TEST_REDIS_URL")), func(c *httpapi.Config) {
				c.Metrics = metricsHandler(t)
				c.MetricsToken = token
			})
			requireScrapes(t, e.srv.URL, token, e.a.Secret)
			if token != "" {
				requireScrapes(t, e.srv.URL, token, e.b.Secret)
			}
		})
		t.Run(name+"/Worker", func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", telemetry.MetricsAuth(token, metricsHandler(t)))
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			requireScrapes(t, srv.URL, token, "tpl_not-a-metrics-token")
		})
	}
}
