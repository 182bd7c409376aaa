package httpapi_test

import (
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/ratelimit"
	"github.com/tapline/tapline/internal/redistest"
)

func limitedEnv(t *testing.T, tenantRate, tokenRate ratelimit.Limit, opts ...func(*httpapi.Config)) *env {
	t.Helper()
	rdb := testRedis(t, os.Getenv("TEST_REDIS_URL"))
	return newEnv(t, dbtest.Pool(t), rdb, append([]func(*httpapi.Config){func(c *httpapi.Config) {
		c.RateLimiter = ratelimit.New(rdb, redistest.Prefix(t))
		c.TenantRate, c.TokenRate = tenantRate, tokenRate
	}}, opts...)...)
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
	t.Run("TokenExchangeAddressFollowsTrustedProxiesOnly", func(t *testing.T) {
		t.Parallel()
		// The test client is the peer, on loopback. Behind a proxy elsewhere, its own
		// X-Forwarded-For is not believed: whatever it claims, it is the loopback address.
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.PerMinute(2, 2), behind("192.0.2.0/24"))
		for i, xff := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
			r := e.exchangeFrom(t, xff)
			if want := map[bool]int{true: 200, false: 429}[i < 2]; r.status != want {
				t.Fatalf("exchange %d claiming %s = %d, want %d: the forged address was believed", i, xff, r.status, want)
			}
		}
		// Behind a trusted proxy (loopback here), the client is the address the proxy
		// appended; what the client put before it is not believed either.
		e = limitedEnv(t, ratelimit.Limit{}, ratelimit.PerMinute(2, 2), behind("127.0.0.0/8"))
		for i, xff := range []string{"203.0.113.1, 198.51.100.7", "203.0.113.2, 198.51.100.7", "203.0.113.3, 198.51.100.7"} {
			r := e.exchangeFrom(t, xff)
			if want := map[bool]int{true: 200, false: 429}[i < 2]; r.status != want {
				t.Fatalf("exchange %d via %q = %d, want %d", i, xff, r.status, want)
			}
		}
		if r := e.exchangeFrom(t, "198.51.100.8"); r.status != 200 {
			t.Fatalf("another client behind the proxy = %d %s, want its own budget", r.status, r.raw)
		}
	})
	t.Run("TokenExchangeAddressReadsForwardedEntriesWithAPort", func(t *testing.T) {
		t.Parallel()
		// Some proxies write the client's port too; the client is still its address, not the
		// proxy that forwarded it.
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.PerMinute(2, 2), behind("127.0.0.0/8"))
		for i, xff := range []string{"203.0.113.7:4711", "203.0.113.7:4712", "[::ffff:203.0.113.7]:4713"} {
			r := e.exchangeFrom(t, xff)
			if want := map[bool]int{true: 200, false: 429}[i < 2]; r.status != want {
				t.Fatalf("exchange %d via %q = %d, want %d", i, xff, r.status, want)
			}
		}
		for _, xff := range []string{"203.0.113.8:4711", "[2001:db8:1:4::a]:4711"} {
			if r := e.exchangeFrom(t, xff); r.status != 200 {
				t.Fatalf("another client via %q = %d %s, want its own budget", xff, r.status, r.raw)
			}
		}
	})
	t.Run("TokenExchangeLimitsAnIPv6ClientByItsSlash64", func(t *testing.T) {
		t.Parallel()
		// Whoever holds a /64 can send from any of its addresses: counted per address, the
		// limit would not limit it at all.
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.PerMinute(2, 2), behind("127.0.0.0/8"))
		for i, addr := range []string{"2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff:ffff:ffff:ffff"} {
			r := e.exchangeFrom(t, addr)
			if want := map[bool]int{true: 200, false: 429}[i < 2]; r.status != want {
				t.Fatalf("exchange %d from %s = %d, want %d: each address of one /64 had a budget of its own", i, addr, r.status, want)
			}
		}
		// The next /64 is another client; an IPv4 client is counted by its address, however
		// it is written.
		if r := e.exchangeFrom(t, "2001:db8:1:3::a"); r.status != 200 {
			t.Fatalf("another /64 = %d %s, want its own budget", r.status, r.raw)
		}
		for i, addr := range []string{"198.51.100.9", "::ffff:198.51.100.9", "198.51.100.9"} {
			r := e.exchangeFrom(t, addr)
			if want := map[bool]int{true: 200, false: 429}[i < 2]; r.status != want {
				t.Fatalf("exchange %d from %s = %d, want %d", i, addr, r.status, want)
			}
		}
	})
}

// behind makes the api trust X-Forwarded-For from proxies in cidr.
func behind(cidr string) func(*httpapi.Config) {
	return func(c *httpapi.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(cidr)} }
}

// exchangeFrom exchanges tenant a's key for a token with the X-Forwarded-For header xff.
func (e *env) exchangeFrom(t *testing.T, xff string) response {
	t.Helper()
	return e.doFrom(t, xff, "POST", "/v1/auth/token", "", map[string]any{"api_key": e.a.Secret})
}

// doFrom is do with the X-Forwarded-For header xff: the request of that client when the
// api trusts the test's loopback address as its proxy.
func (e *env) doFrom(t *testing.T, xff, method, path, token string, body any) response {
	t.Helper()
	return e.send(t, method, path, token, body, http.Header{"X-Forwarded-For": {xff}})
}

// failureLimited sets the budget of failed authentications per client address.
func failureLimited(lim ratelimit.Limit) func(*httpapi.Config) {
	return func(c *httpapi.Config) { c.AuthFailureRate = lim }
}

// requireRetryAfter fails unless r is a 429 problem whose Retry-After is 1 to max seconds.
func requireRetryAfter(t *testing.T, r response, maxSecs int) {
	t.Helper()
	requireProblem(t, r, 429, "")
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 || secs > maxSecs {
		t.Fatalf("Retry-After = %q, want 1 to %d", r.header.Get("Retry-After"), maxSecs)
	}
}

func TestFailedAuthenticationLimit(t *testing.T) {
	t.Parallel()
	// Well-formed guesses: an API key nobody has and a JWT nobody signed.
	const badKey = "tpl_guess0000000000000000000000000000"
	const badJWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJub2JvZHkifQ.c2lnbmF0dXJl"
	t.Run("AddressPastItsBudgetGets429", func(t *testing.T) {
		t.Parallel()
		// Three failures, then one a minute: nothing comes back while the test runs.
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.Limit{}, behind("127.0.0.0/8"), failureLimited(ratelimit.PerMinute(1, 3)))
		const a, b = "203.0.113.10", "203.0.113.11"
		// Valid credentials cost nothing of the budget, however many.
		for i := range 5 {
			if r := e.doFrom(t, a, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
				t.Fatalf("valid request %d = %d %s", i, r.status, r.raw)
			}
		}
		for _, tok := range []string{badKey, badJWT, badKey} {
			requireProblem(t, e.doFrom(t, a, "GET", "/v1/me", tok, nil), 401, "")
		}
		requireRetryAfter(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 60)
		requireRetryAfter(t, e.doFrom(t, a, "GET", "/v1/sessions", badJWT, nil), 60)
		// A credential the server has accepted is still served from the throttled address:
		// one client's guesses do not lock out its neighbours behind the same address.
		if r := e.doFrom(t, a, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
			t.Fatalf("tenant a's known key from the throttled address = %d %s", r.status, r.raw)
		}
		// Any other credential from it is refused before it is looked up, valid or not.
		requireRetryAfter(t, e.doFrom(t, a, "GET", "/v1/me", e.b.Secret, nil), 60)
		// Another address has its own budget, and tenant b's key works from it.
		requireProblem(t, e.doFrom(t, b, "GET", "/v1/me", badKey, nil), 401, "")
		if r := e.doFrom(t, b, "GET", "/v1/me", e.b.Secret, nil); r.status != 200 || r.body["tenant"].(map[string]any)["id"] != e.b.Tenant.ID {
			t.Fatalf("tenant b's key from another address = %d %s", r.status, r.raw)
		}
		// Once accepted, tenant b's key is served from the throttled address too.
		if r := e.doFrom(t, a, "GET", "/v1/me", e.b.Secret, nil); r.status != 200 {
			t.Fatalf("tenant b's key, accepted since, from the throttled address = %d %s", r.status, r.raw)
		}
	})
	t.Run("AnIPv6ClientIsCountedByItsSlash64", func(t *testing.T) {
		t.Parallel()
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.Limit{}, behind("127.0.0.0/8"), failureLimited(ratelimit.PerMinute(1, 2)))
		requireProblem(t, e.doFrom(t, "2001:db8:7:8::1", "GET", "/v1/me", badKey, nil), 401, "")
		requireProblem(t, e.doFrom(t, "2001:db8:7:8::2", "GET", "/v1/me", badKey, nil), 401, "")
		requireRetryAfter(t, e.doFrom(t, "[2001:db8:7:8::3]:4711", "GET", "/v1/me", badKey, nil), 60)
		requireProblem(t, e.doFrom(t, "2001:db8:7:9::1", "GET", "/v1/me", badKey, nil), 401, "")
	})
	t.Run("TheBudgetComesBackAtItsRate", func(t *testing.T) {
		t.Parallel()
		e := limitedEnv(t, ratelimit.Limit{}, ratelimit.Limit{}, behind("127.0.0.0/8"), failureLimited(ratelimit.PerSecond(1, 2)))
		const a = "198.51.100.20"
		requireProblem(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 401, "")
		requireProblem(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 401, "")
		requireRetryAfter(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 2)
		deadline := time.Now().Add(15 * time.Second)
		for {
			r := e.doFrom(t, a, "GET", "/v1/me", badKey, nil)
			if r.status == 401 {
				break
			}
			requireRetryAfter(t, r, 2)
			if time.Now().After(deadline) {
				t.Fatal("the address never got another try")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("RedisAwayFailsOnlyBadCredentials", func(t *testing.T) {
		t.Parallel()
		addr, stop, start := ownRedis(t)
		rdb := testRedis(t, "redis://"+addr+"/0")
		e := newEnv(t, dbtest.Pool(t), rdb, behind("127.0.0.0/8"), failureLimited(ratelimit.PerMinute(1, 1)), func(c *httpapi.Config) {
			c.RateLimiter = ratelimit.New(rdb, redistest.Prefix(t))
		})
		const a, b = "203.0.113.30", "203.0.113.31"
		if r := e.doFrom(t, a, "GET", "/v1/me", e.a.Secret, nil); r.status != 200 {
			t.Fatalf("valid key = %d %s", r.status, r.raw)
		}
		requireProblem(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 401, "")
		requireRetryAfter(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 60)
		stop()
		// Without Redis a failure cannot be counted: it fails as the other limits fail, with
		// 503, and a throttled address stays throttled. Valid credentials never wait on
		// the budget: both tenants' keys are served from either address.
		r := e.doFrom(t, b, "GET", "/v1/me", badKey, nil)
		requireProblem(t, r, 503, "")
		requireRetryAfter(t, e.doFrom(t, a, "GET", "/v1/me", badKey, nil), 60)
		for _, req := range []struct{ from, key string }{{a, e.a.Secret}, {b, e.a.Secret}, {b, e.b.Secret}} {
			if r := e.doFrom(t, req.from, "GET", "/v1/me", req.key, nil); r.status != 200 {
				t.Fatalf("valid key from %s with Redis away = %d %s", req.from, r.status, r.raw)
			}
		}
		// Back, Redis counts failures again.
		start()
		deadline := time.Now().Add(15 * time.Second)
		for e.doFrom(t, b, "GET", "/v1/me", badKey, nil).status == 503 {
			if time.Now().After(deadline) {
				t.Fatal("failures were not counted again after Redis came back")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
