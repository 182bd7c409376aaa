package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/tenant"
)

// Verifying an API key reads PostgreSQL, on every request: a round trip and a statement that
// make up a good part of a fast request's cost. The key cache keeps what a verification
// found, with the auth stamp of the key's tenant read in the same snapshot (migration 0018:
// the stamp moves whenever a key of the tenant is revoked, deleted, or loses rights). A
// cached key is used again only after a Redis read shows the tenant's stamp unchanged; the
// store raises that copy right after each such change commits (tenant.Store.OnAuthChange),
// so a revoked key is refused at once on every api pod, as without the cache.
//
// The Redis read is the only check on a hit, and it fails closed: a Redis error, a missing
// stamp (Redis lost its data), a stamp that moved or went back (a stale replica) all send
// the request to PostgreSQL. What remains is a double fault: Redis answering with an older
// copy of itself that predates a revocation, which a cached key survives for at most
// keyCacheMaxAge. A key's own expiry is checked on every hit.

// StampedKeyVerifier verifies API keys and returns the tenant's auth stamp with them;
// *tenant.Store is one.
type StampedKeyVerifier interface {
	VerifyAPIKeyStamped(ctx context.Context, token string) (*tenant.APIKey, int64, error)
}

// StampStore keeps the latest auth stamp of each tenant where every api pod reads it.
type StampStore interface {
	// AuthStamp returns the tenant's stamp, and false when none is known.
	AuthStamp(ctx context.Context, tenantID string) (int64, bool, error)
	// RaiseAuthStamp records stamp unless a higher one is recorded already.
	RaiseAuthStamp(ctx context.Context, tenantID string, stamp int64) error
}

// PipelinedStampStore is a StampStore whose reads can share a Redis round trip with other
// commands; *RedisStamps is one.
type PipelinedStampStore interface {
	StampStore
	// QueueAuthStamp queues the read of the tenant's stamp on pipe; the function returns it
	// once pipe has run.
	QueueAuthStamp(ctx context.Context, pipe redis.Pipeliner, tenantID string) func() (int64, bool, error)
}

// Prefetch queues on pipe the Redis read that Authenticate will make for token: when the
// token's key is cached, the read of its tenant's stamp. It returns that tenant, and a
// function that, once pipe has run, returns ctx carrying what was read, for Authenticate to
// use instead of a round trip of its own. ok is false when there is nothing to prefetch. A
// caller with its own Redis work for the tenant (its rate limit) saves a round trip.
func (a *Authenticator) Prefetch(ctx context.Context, pipe redis.Pipeliner, token string) (tenantID string, withStamp func(context.Context) context.Context, ok bool) {
	c := a.cache
	if c == nil || !tenant.LooksLikeAPIKey(token) {
		return "", nil, false
	}
	ps, pipelined := c.stamps.(PipelinedStampStore)
	if !pipelined {
		return "", nil, false
	}
	e := c.get(sha256.Sum256([]byte(token)))
	if e == nil || !c.fresh(e) {
		return "", nil, false
	}
	read := ps.QueueAuthStamp(ctx, pipe, e.principal.TenantID)
	return e.principal.TenantID, func(ctx context.Context) context.Context {
		p := &prefetchedStamp{tenantID: e.principal.TenantID}
		p.stamp, p.ok, p.err = read()
		return context.WithValue(ctx, prefetchedKey{}, p)
	}, true
}

type prefetchedKey struct{}

// prefetchedStamp is a tenant's stamp read ahead of Authenticate (Prefetch).
type prefetchedStamp struct {
	tenantID string
	stamp    int64
	ok       bool
	err      error
}

// stamp returns the tenant's current stamp: the one prefetched into ctx, or a fresh read.
func (c *keyCache) stamp(ctx context.Context, tenantID string) (int64, bool, error) {
	if p, ok := ctx.Value(prefetchedKey{}).(*prefetchedStamp); ok && p.tenantID == tenantID {
		return p.stamp, p.ok, p.err
	}
	return c.stamps.AuthStamp(ctx, tenantID)
}

// keyCacheMaxAge bounds how long a verification is reused, whatever the stamps say; the
// key's last use is recorded at the next verification (tenant.Store records it at most once
// a minute anyway).
const keyCacheMaxAge = time.Minute

// maxCachedKeys bounds the memory the cache takes; past it, it starts over.
const maxCachedKeys = 10000

// keyCache holds verified API keys by the SHA-256 of their token.
type keyCache struct {
	keys   StampedKeyVerifier
	stamps StampStore
	now    func() time.Time

	mu sync.Mutex
	m  map[[sha256.Size]byte]*cachedKey
}

type cachedKey struct {
	principal  *Principal
	stamp      int64
	verifiedAt time.Time
}

// WithKeyCache makes the Authenticator reuse API-key verifications while the tenant's auth
// stamp in stamps is unchanged (see keyCache). keys replaces the KeyVerifier for API keys.
func WithKeyCache(keys StampedKeyVerifier, stamps StampStore) Option {
	return func(a *Authenticator) {
		a.cache = &keyCache{keys: keys, stamps: stamps, now: time.Now}
	}
}

// verify returns the principal of an API key, from the cache when its tenant's stamp says
// nothing changed since it was verified, or else from the verifier.
func (c *keyCache) verify(ctx context.Context, token string) (*Principal, error) {
	digest := sha256.Sum256([]byte(token))
	if e := c.get(digest); e != nil && c.fresh(e) {
		cur, ok, err := c.stamp(ctx, e.principal.TenantID)
		if err == nil && ok && cur == e.stamp {
			return e.principal, nil
		}
	}
	key, stamp, err := c.keys.VerifyAPIKeyStamped(ctx, token)
	if err != nil {
		c.forget(digest)
		return nil, err
	}
	p := KeyPrincipal(key)
	c.put(digest, &cachedKey{principal: p, stamp: stamp, verifiedAt: c.now()})
	// Make sure the next request can check the stamp; raising never lowers it, and a failure
	// only means the next request verifies again.
	_ = c.stamps.RaiseAuthStamp(ctx, key.TenantID, stamp)
	return p, nil
}

func (c *keyCache) fresh(e *cachedKey) bool {
	now := c.now()
	if now.Sub(e.verifiedAt) >= keyCacheMaxAge {
		return false
	}
	return e.principal.keyExpiresAt == nil || now.Before(*e.principal.keyExpiresAt)
}

func (c *keyCache) get(k [sha256.Size]byte) *cachedKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *keyCache) put(k [sha256.Size]byte, e *cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		c.m = make(map[[sha256.Size]byte]*cachedKey)
	}
	c.m[k] = e
}

func (c *keyCache) forget(k [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// RedisStamps is a StampStore on Redis: one small key per tenant, in the tenant's hash slot.
type RedisStamps struct {
	rdb    redis.UniversalClient
	prefix string
	raise  *redis.Script
	logger *slog.Logger
}

// stampTTL lets the stamps of tenants nobody uses expire; a missing stamp only costs the
// next request a verification, which writes it again.
const stampTTL = 30 * 24 * time.Hour

// raiseStamp sets KEYS[1] to ARGV[1] unless it holds a higher number, and refreshes its TTL.
const raiseStamp = `
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local v = tonumber(ARGV[1])
if v > cur then cur = v end
redis.call('SET', KEYS[1], cur, 'PX', ARGV[2])
return cur`

// NewRedisStamps returns stamps kept under prefix ("tapline" in production).
func NewRedisStamps(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *RedisStamps {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &RedisStamps{rdb: rdb, prefix: prefix, raise: redis.NewScript(raiseStamp), logger: logger}
}

func (r *RedisStamps) key(tenantID string) string { return r.prefix + ":{" + tenantID + "}:authstamp" }

// AuthStamp implements StampStore.
func (r *RedisStamps) AuthStamp(ctx context.Context, tenantID string) (int64, bool, error) {
	return parseStamp(r.rdb.Get(ctx, r.key(tenantID)).Result())
}

// QueueAuthStamp implements PipelinedStampStore.
func (r *RedisStamps) QueueAuthStamp(ctx context.Context, pipe redis.Pipeliner, tenantID string) func() (int64, bool, error) {
	cmd := pipe.Get(ctx, r.key(tenantID))
	return func() (int64, bool, error) { return parseStamp(cmd.Result()) }
}

func parseStamp(v string, err error) (int64, bool, error) {
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("auth stamp: %w", redisconn.InterpretError(err))
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, nil // not ours to trust: verify
	}
	return n, true, nil
}

// RaiseAuthStamp implements StampStore.
func (r *RedisStamps) RaiseAuthStamp(ctx context.Context, tenantID string, stamp int64) error {
	err := r.raise.Run(ctx, r.rdb, []string{r.key(tenantID)}, stamp, stampTTL.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("raise auth stamp: %w", redisconn.InterpretError(err))
	}
	return nil
}

// Publish raises the tenant's stamp after a change that took rights away; it is meant for
// tenant.Store.OnAuthChange. Until it succeeds, cached keys of the tenant could still be
// used on pods whose Redis reads succeed, so a failure is retried in the background for as
// long as a cache entry can live.
func (r *RedisStamps) Publish(ctx context.Context, tenantID string, stamp int64) {
	if err := r.RaiseAuthStamp(ctx, tenantID, stamp); err == nil {
		return
	}
	go func() {
		deadline := time.Now().Add(keyCacheMaxAge)
		for delay := 50 * time.Millisecond; time.Now().Before(deadline); delay = min(2*delay, 5*time.Second) {
			time.Sleep(delay)
			err := r.RaiseAuthStamp(ctx, tenantID, stamp)
			if err == nil {
				return
			}
			r.logger.WarnContext(ctx, "auth stamp not raised yet; cached api keys of the tenant may be reused",
				slog.String("tenant_id", tenantID), slog.Any("error", err))
		}
	}()
}
