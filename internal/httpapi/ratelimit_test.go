package httpapi_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/ratelimit"
	"github.com/tapline/tapline/internal/redistest"
)

func limitedEnv(t *testing.T, tenantRate, tokenRate ratelimit.Limit) *env {
	t.Helper()
	rdb := testRedis(t, os.Getenv("TEST_REDIS_URL"))
	return newEnv(t, dbtest.Pool(t), rdb, func(c *httpapi.Config) {
		c.RateLimiter = ratelimit.New(rdb, redistest.Prefix(t))
		c.TenantRate, c.TokenRate = tenantRate, tokenRate
	})
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	t.Run("TenantPastItsRateGets429OthersUnaffected", func(t *testing.T) {
		t.Parallel()
		e := limitedEnv(t, ratelimit.PerSecond(1, 3), ratelimit.Limit{})
		for i := range 3 {
			if r := e.do(t, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
				t.Fatalf("request %d within the burst = %d %s", i, r.status, r.raw)
			}
		}
		r := e.do(t, "GET", "/v1/me", e.a.Secret, nil)
		requireProblem(t, r, 429, "")
		retry, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || retry < 1 || retry > 2 {
			t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
		}
		// Tenant b has its own budget, even while a is limited.
		for range 3 {
			if r := e.do(t, "GET", "/v1/me", e.b.Secret, nil); r.status != 200 {
				t.Fatalf("tenant b = %d %s", r.status, r.raw)
			}
		}
		time.Sleep(time.Duration(retry) * time.Second)
		if r := e.do(t, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
			t.Fatalf("after Retry-After = %d %s", r.status, r.raw)
		}
	})
	t.Run("TokenExchangeIsLimitedPerAddress", func(t *testing.T) {
		t.Parallel()
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.PerMinute(2, 2))
		e.exchange(t, e.a.Secret)
		e.exchange(t, e.b.Secret)
		r := e.do(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": e.a.Secret})
		requireProblem(t, r, 429, "")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		// Wrong keys count too: guessing is limited the same way.
		requireProblem(t, e.do(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": "tpl_guess"}), 429, "")
		// The API itself is not limited by the exchange's budget.
		if r := e.do(t, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
			t.Fatalf("api after token limit = %d", r.status)
		}
	})
}
