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
	t.Run("RevokedKeyChargesItsFormerTenantAtMostOnce", func(t *testing.T) {
		t.Parallel()
		// A budget of 6 requests; the rate refills one a minute, so nothing comes back meanwhile.
		e := limitedEnv(t, ratelimit.PerMinute(1, 6), ratelimit.Limit{})
		k := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"name": "soon revoked", "role": "viewer"}) // 1
		secret, _ := k.body["secret"].(string)
		if k.status != 201 || secret == "" {
			t.Fatalf("create key = %d %s", k.status, k.raw)
		}
		if r := e.do(t, "GET", "/v1/me", secret, nil); r.status != 200 { // 2: the process now knows its tenant
			t.Fatalf("new key = %d %s", r.status, r.raw)
		}
		if r := e.do(t, "DELETE", "/v1/api-keys/"+k.body["id"].(string), e.a.Secret, nil); r.status != 200 { // 3
			t.Fatalf("revoke = %d %s", r.status, r.raw)
		}
		// However often the revoked key is tried, it is refused and charges a at most once.
		for range 10 {
			requireProblem(t, e.do(t, "GET", "/v1/me", secret, nil), 401, "")
		}
		// 3 used, at most 1 charged for the revoked key: at least 2 of the 6 are left.
		used := 0
		for range 6 {
			if r := e.do(t, "GET", "/v1/me", e.a.Secret, nil); r.status == 200 {
				used++
			}
		}
		if used < 2 || used > 3 {
			t.Fatalf("tenant a had %d requests left, want 2 or 3: the revoked key's attempts were charged to it", used)
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
