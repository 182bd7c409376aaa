package ratelimit_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/ratelimit"
	"github.com/tapline/tapline/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop")); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func TestAllow(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		ctx := context.Background()
		l := ratelimit.New(b.New(t), redistest.Prefix(t))
		a, other := l.TenantKey(uuid.NewString()), l.TenantKey(uuid.NewString())
		lim := ratelimit.PerSecond(5, 3)
		for i := range 3 {
			res, err := l.Allow(ctx, a, lim)
			if err != nil || !res.Allowed || res.Remaining != 2-i {
				t.Fatalf("burst event %d = %+v, %v", i, res, err)
			}
		}
		res, err := l.Allow(ctx, a, lim)
		if err != nil || res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > 200*time.Millisecond+10*time.Millisecond {
			t.Fatalf("over the burst = %+v, %v; want refused with RetryAfter about 200ms", res, err)
		}
		// Another tenant is untouched.
		if res, err := l.Allow(ctx, other, lim); err != nil || !res.Allowed || res.Remaining != 2 {
			t.Fatalf("other key = %+v, %v", res, err)
		}
		time.Sleep(res.RetryAfter + 20*time.Millisecond)
		if res, err := l.Allow(ctx, a, lim); err != nil || !res.Allowed {
			t.Fatalf("after RetryAfter = %+v, %v", res, err)
		}
	})
}

func TestSustainedRateIsHeld(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := ratelimit.New(redistest.Backends(t)[0].New(t), redistest.Prefix(t))
	key := l.AddressKey("token", "192.0.2.1")
	lim := ratelimit.PerSecond(20, 1)
	start := time.Now()
	allowed := 0
	for time.Since(start) < time.Second {
		if res, err := l.Allow(ctx, key, lim); err != nil {
			t.Fatal(err)
		} else if res.Allowed {
			allowed++
		}
		time.Sleep(2 * time.Millisecond)
	}
	if allowed < 17 || allowed > 23 {
		t.Fatalf("%d events allowed in a second at 20/s", allowed)
	}
}

func TestDisabledLimitAllowsWithoutRedis(t *testing.T) {
	t.Parallel()
	l := ratelimit.New(nil, "x")
	if res, err := l.Allow(context.Background(), "k", ratelimit.PerSecond(0, 1)); err != nil || !res.Allowed {
		t.Fatalf("disabled = %+v, %v", res, err)
	}
}
