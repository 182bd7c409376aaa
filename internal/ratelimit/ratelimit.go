// Package ratelimit limits request rates in Redis with GCRA (the generic cell rate
// algorithm, a leaky bucket that stores one timestamp per key), so every api pod shares one
// limit per tenant or client address.
//
// Each check is one Lua script call on one key; keys carry a hash tag, so the script runs
// on a single Redis Cluster slot. Time comes from the Redis server, not the pods, so clock
// skew between pods does not bend the limit.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/redisconn"
)

// Limit allows Rate events per Period on average and Burst at once.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerSecond is rate events a second with bursts of burst.
func PerSecond(rate, burst int) Limit { return Limit{Rate: rate, Period: time.Second, Burst: burst} }

// PerMinute is rate events a minute with bursts of burst.
func PerMinute(rate, burst int) Limit { return Limit{Rate: rate, Period: time.Minute, Burst: burst} }

// Enabled reports whether l limits anything: a zero rate disables it.
func (l Limit) Enabled() bool { return l.Rate > 0 && l.Period > 0 }

// Result is the outcome of one check.
type Result struct {
	Allowed bool
	// Remaining is how many more events would be allowed right now.
	Remaining int
	// RetryAfter is how long to wait before the next event is allowed (0 when allowed).
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is back to a full burst.
	ResetAfter time.Duration
}

// gcra stores the theoretical arrival time (TAT) of the next event, in seconds since an
// epoch close to now so Lua's doubles keep microseconds. KEYS[1] the key; ARGV burst, rate,
// period in seconds, cost. Fractions are returned as strings: Redis truncates Lua numbers.
const gcra = `
if redis.replicate_commands then redis.replicate_commands() end
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local emission = period / rate
local t = redis.call("TIME")
local now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call("GET", KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + emission * cost
local diff = now - (new_tat - emission * burst)
if diff < 0 then
  return {0, 0, tostring(-diff), tostring(tat - now)}
end
local reset_after = new_tat - now
redis.call("SET", KEYS[1], tostring(new_tat), "PX", math.ceil(reset_after * 1000))
return {1, math.floor(diff / emission + 0.000001), "0", tostring(reset_after)}
`

// Limiter checks limits in Redis.
type Limiter struct {
	rdb    redis.UniversalClient
	prefix string
	script *redis.Script
}

// New returns a Limiter whose keys start with prefix ("tapline" in production, a unique
// prefix in tests).
func New(rdb redis.UniversalClient, prefix string) *Limiter {
	return &Limiter{rdb: rdb, prefix: prefix, script: redis.NewScript(gcra)}
}

// TenantKey is the limit key of a tenant's API requests; its hash tag is the tenant, as in
// the tracker's keys.
func (l *Limiter) TenantKey(tenantID string) string { return l.prefix + ":{" + tenantID + "}:rl:api" }

// AddressKey is the limit key of one client address for an operation. An IPv6 address
// counts as its /64: one subscriber, a host or a home, gets at least a /64 and can pick any
// address in it, so a limit per address would be one per request. An IPv4 address mapped
// into IPv6 counts as the IPv4 address.
func (l *Limiter) AddressKey(op, addr string) string {
	return l.prefix + ":{ip:" + clientOf(addr) + "}:rl:" + op
}

// clientOf is what a per-address limit counts addr as: the address itself for IPv4, its /64
// for IPv6; text that is not an address is kept as it is.
func clientOf(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a.WithZone(""), 64).Masked().String()
}

// Allow counts one event against key under lim. A disabled limit allows everything without
// a Redis call. Redis being unreachable is redisconn.ErrUnavailable.
func (l *Limiter) Allow(ctx context.Context, key string, lim Limit) (Result, error) {
	if !lim.Enabled() {
		return Result{Allowed: true, Remaining: math.MaxInt32}, nil
	}
	burst := max(lim.Burst, 1)
	vals, err := l.script.Run(ctx, l.rdb, []string{key}, burst, lim.Rate, lim.Period.Seconds(), 1).Slice()
	if err != nil {
		return Result{}, fmt.Errorf("rate limit: %w", redisconn.InterpretError(err))
	}
	return result(vals)
}

// Queue counts one event against key under lim as part of pipe, so that the check shares a
// round trip with other commands on the same hash slot; the returned function reads the
// outcome once pipe has been executed. When Redis has lost the script (a restart), the read
// falls back to Allow, which loads it.
func (l *Limiter) Queue(ctx context.Context, pipe redis.Pipeliner, key string, lim Limit) func() (Result, error) {
	if !lim.Enabled() {
		return func() (Result, error) { return Result{Allowed: true, Remaining: math.MaxInt32}, nil }
	}
	burst := max(lim.Burst, 1)
	cmd := l.script.EvalSha(ctx, pipe, []string{key}, burst, lim.Rate, lim.Period.Seconds(), 1)
	return func() (Result, error) {
		vals, err := cmd.Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			return l.Allow(ctx, key, lim)
		}
		if err != nil {
			return Result{}, fmt.Errorf("rate limit: %w", redisconn.InterpretError(err))
		}
		return result(vals)
	}
}

func result(vals []any) (Result, error) {
	if len(vals) != 4 {
		return Result{}, errors.New("rate limit: unexpected script reply")
	}
	allowed, _ := vals[0].(int64)
	remaining, _ := vals[1].(int64)
	return Result{
		Allowed:    allowed == 1,
		Remaining:  int(remaining),
		RetryAfter: seconds(vals[2]),
		ResetAfter: seconds(vals[3]),
	}, nil
}

func seconds(v any) time.Duration {
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}
