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

// A check queued on a pipeline counts like Allow, in the round trip of the commands around
// it, and still works when Redis has forgotten the script (after a restart).
func TestQueuedCheck(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		ctx := context.Background()
		rdb := b.New(t)
		prefix := redistest.Prefix(t)
		l := ratelimit.New(rdb, prefix)
		tenant := uuid.NewString()
		key := l.TenantKey(tenant)
		neighbour := prefix + ":{" + tenant + "}:neighbour" // same hash slot
		if err := rdb.Set(ctx, neighbour, "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		lim := ratelimit.PerSecond(1, 2)
		for i := range 3 {
			pipe := rdb.Pipeline()
			read := l.Queue(ctx, pipe, key, lim)
			get := pipe.Get(ctx, neighbour)
			_, _ = pipe.Exec(ctx)
			res, err := read()
			if err != nil || res.Allowed != (i < 2) {
				t.Fatalf("queued check %d = %+v, %v", i, res, err)
			}
			if v, err := get.Result(); err != nil || v != "v" {
				t.Fatalf("the command beside it = %q, %v", v, err)
			}
		}
	})
	t.Run("ScriptFlushed", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		rdb := redistest.Single(t, redistest.StartServer(t).URL)
		l := ratelimit.New(rdb, "rl")
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		pipe := rdb.Pipeline()
		read := l.Queue(ctx, pipe, l.TenantKey(uuid.NewString()), ratelimit.PerSecond(1, 1))
		_, _ = pipe.Exec(ctx)
		if res, err := read(); err != nil || !res.Allowed {
			t.Fatalf("after SCRIPT FLUSH = %+v, %v", res, err)
		}
	})
}

// An IPv6 client is counted by its /64, whichever address in it it sends from; an IPv4 one by
// its address, written plain or mapped into IPv6.
func TestAddressKeyCountsIPv6ByItsSlash64(t *testing.T) {
	t.Parallel()
	l := ratelimit.New(nil, "p")
	same := [][]string{
		{"2001:db8:1:2::a", "2001:db8:1:2::b", "2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::1"},
		{"fe80::1%eth0", "fe80::2"},
		{"198.51.100.9", "::ffff:198.51.100.9"},
	}
	seen := map[string]bool{}
	for _, group := range same {
		k := l.AddressKey("token", group[0])
		for _, a := range group[1:] {
			if got := l.AddressKey("token", a); got != k {
				t.Fatalf("%s counts as %s, %s as %s: want one client", group[0], k, a, got)
			}
		}
		if seen[k] {
			t.Fatalf("%s shares its key %s with another group", group[0], k)
		}
		seen[k] = true
	}
	for _, other := range []string{"2001:db8:1:3::a", "198.51.100.10", "not an address"} {
		if k := l.AddressKey("token", other); seen[k] {
			t.Fatalf("%s counts as a client already seen: %s", other, k)
		}
	}
	if l.AddressKey("token", "198.51.100.9") == l.AddressKey("refresh", "198.51.100.9") {
		t.Fatal("two operations share one budget")
	}
}
