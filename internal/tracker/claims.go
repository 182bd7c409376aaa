package tracker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Claim is an in-flight claim on one request of a session, held by this node.
// The tracker renews it every ClaimTTL/3 until CompleteInFlight or
// ReleaseInFlight; if the node dies, it expires after ClaimTTL.
type Claim struct {
	tenant, session, requestID string
	key                        string
	value                      string // "c|<node>|<token>"

	mu   sync.Mutex
	err  error         // nil while held
	done chan struct{} // made on first Done call: most claims never need it
	// renewed is when the claim was last granted or renewed (monotonic), guarded by the
	// tracker's rebuildMu: a claim whose key is gone may be written back only while it is
	// recent, as a lease is.
	renewed time.Time
}

// Tenant returns the claim's tenant.
func (c *Claim) Tenant() string { return c.tenant }

// Session returns the claim's session (or any scope, e.g. an API key for an
// Idempotency-Key).
func (c *Claim) Session() string { return c.session }

// RequestID returns the claimed request id.
func (c *Claim) RequestID() string { return c.requestID }

// Done is closed when the claim ends: completed, released or lost.
func (c *Claim) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

// Err is nil while the claim is held, ErrNotHeld once completed or released,
// and ErrLeaseLost if another holder took it over.
func (c *Claim) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// end marks the claim finished with err; it reports whether it was held.
func (c *Claim) end(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	return true
}

// ClaimInFlight claims a request of a session so it runs once across every
// node. The winner pays exactly one SET NX PX round trip; a duplicate pays one
// more GET to learn what it collided with. It returns the claim, or a
// *DuplicateError (errors.Is ErrDuplicate) carrying the stored result if the
// winner already completed, or the holder if it still runs. Use AwaitResult to
// wait for the winner's result. session may be any scope, e.g. an API key for
// REST Idempotency-Key handling.
func (t *Tracker) ClaimInFlight(ctx context.Context, tenant, session, requestID string) (c *Claim, err error) {
	ctx, span := startSpan(ctx, "tracker.ClaimInFlight")
	defer func() { endSpan(span, err) }()
	key, err := t.inflightKey(tenant, session, requestID)
	if err != nil {
		return nil, err
	}
	c = t.newClaim(tenant, session, requestID, key)
	for attempt := 0; ; attempt++ {
		// SET NX (not SET NX GET): go-redis handles the nil reply as an error,
		// which would tax every winning claim with its error path.
		ok, err := t.rdb.SetNX(ctx, key, c.value, t.cfg.ClaimTTL).Result()
		if err != nil {
			return nil, mapErr("claim in-flight", err)
		}
		if ok {
			return t.holdClaim(ctx, c)
		}
		old, err := t.rdb.Get(ctx, key).Result()
		if err == nil {
			return nil, duplicate(old)
		}
		if !errors.Is(err, redis.Nil) {
			return nil, mapErr("claim in-flight", err)
		}
		if attempt == 2 { // released again and again under our feet: call it a duplicate
			return nil, &DuplicateError{}
		}
	}
}

// ReclaimInFlight claims a request whose stored result is result, replacing it, for a caller
// that reads that result as "run it again" (REST Idempotency-Key handling keeps a server
// fault that way, so that every attempt of one request is known as such). It returns the
// claim, or ErrLeaseLost when the key no longer holds that result: another node reclaimed
// it first, or it expired (then ClaimInFlight may claim the request).
func (t *Tracker) ReclaimInFlight(ctx context.Context, tenant, session, requestID string, result []byte) (c *Claim, err error) {
	ctx, span := startSpan(ctx, "tracker.ReclaimInFlight")
	defer func() { endSpan(span, err) }()
	key, err := t.inflightKey(tenant, session, requestID)
	if err != nil {
		return nil, err
	}
	c = t.newClaim(tenant, session, requestID, key)
	n, err := completeScript.Run(ctx, t.rdb, []string{key}, "r|"+string(result), c.value, t.cfg.ClaimTTL.Milliseconds()).Int()
	if err != nil {
		return nil, mapErr("reclaim in-flight", err)
	}
	if n == 0 {
		return nil, ErrLeaseLost
	}
	return t.holdClaim(ctx, c)
}

// newClaim makes this node's claim on key, with a token of its own.
func (t *Tracker) newClaim(tenant, session, requestID, key string) *Claim {
	var tok [16]byte
	return &Claim{tenant: tenant, session: session, requestID: requestID, key: key,
		value: t.claimPrefix + string(strconv.AppendUint(tok[:0], t.counter.Add(1), 36)), renewed: time.Now()}
}

// holdClaim starts renewing a claim just written to Redis, or takes it back when the tracker has
// stopped, since nobody would renew it.
func (t *Tracker) holdClaim(ctx context.Context, c *Claim) (*Claim, error) {
	t.mu.Lock()
	stopped := t.stopped
	if !stopped {
		t.claims[c] = struct{}{}
	}
	t.mu.Unlock()
	if stopped {
		_ = cmpDelete.Run(ctx, t.rdb, []string{c.key}, c.value).Err()
		return nil, ErrStopped
	}
	return c, nil
}

func duplicate(v string) *DuplicateError {
	if res, ok := strings.CutPrefix(v, "r|"); ok {
		return &DuplicateError{Done: true, Result: []byte(res)}
	}
	holder, _, _ := strings.Cut(strings.TrimPrefix(v, "c|"), "|")
	return &DuplicateError{Holder: holder}
}

func (t *Tracker) inflightKey(tenant, session, requestID string) (string, error) {
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return "", err
	}
	es, err := escapeID("session id", session)
	if err != nil {
		return "", err
	}
	er, err := escapeID("request id", requestID)
	if err != nil {
		return "", err
	}
	return t.k.inflight(et, es, er), nil
}

// RenewInFlight extends a claim by ClaimTTL now. The tracker already renews
// held claims in the background; call this before a long step if you want to
// know the claim is still yours. ErrLeaseLost if another holder has it.
func (t *Tracker) RenewInFlight(ctx context.Context, c *Claim) (err error) {
	ctx, span := startSpan(ctx, "tracker.RenewInFlight")
	defer func() { endSpan(span, err) }()
	// As renewClaims: a claim whose key Redis lost is written back while it is recent.
	t.rebuildMu.Lock()
	defer t.rebuildMu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	start := time.Now()
	n, err := renewClaim.Run(ctx, t.rdb, []string{c.key}, c.value, t.cfg.ClaimTTL.Milliseconds(), recent(c.renewed, t.cfg.ClaimTTL)).Int()
	if err != nil {
		return mapErr("renew in-flight", err)
	}
	if n == 0 {
		t.dropClaim(c, ErrLeaseLost)
		return ErrLeaseLost
	}
	c.renewed = start
	return nil
}

// CompleteInFlight stores the request's final result for ResultTTL and ends
// the claim: duplicates get this result instead of running the request again.
// ErrLeaseLost if the claim was lost meanwhile (the result is not stored).
func (t *Tracker) CompleteInFlight(ctx context.Context, c *Claim, result []byte) (err error) {
	ctx, span := startSpan(ctx, "tracker.CompleteInFlight")
	defer func() { endSpan(span, err) }()
	t.rebuildMu.RLock()
	defer t.rebuildMu.RUnlock()
	if err := c.Err(); err != nil {
		return err
	}
	n, err := completeScript.Run(ctx, t.rdb, []string{c.key}, c.value, "r|"+string(result),
		t.cfg.ResultTTL.Milliseconds()).Int()
	if err != nil {
		return mapErr("complete in-flight", err)
	}
	if n == 0 {
		t.dropClaim(c, ErrLeaseLost)
		return ErrLeaseLost
	}
	t.dropClaim(c, ErrNotHeld)
	return nil
}

// ReleaseInFlight ends a claim without a result, so a retry may claim the
// request again (e.g. the work failed before it had any effect).
func (t *Tracker) ReleaseInFlight(ctx context.Context, c *Claim) (err error) {
	ctx, span := startSpan(ctx, "tracker.ReleaseInFlight")
	defer func() { endSpan(span, err) }()
	t.rebuildMu.RLock()
	defer t.rebuildMu.RUnlock()
	if err := c.Err(); err != nil {
		return err
	}
	n, err := cmpDelete.Run(ctx, t.rdb, []string{c.key}, c.value).Int()
	if err != nil {
		return mapErr("release in-flight", err)
	}
	if n == 0 {
		t.dropClaim(c, ErrLeaseLost)
		return ErrLeaseLost
	}
	t.dropClaim(c, ErrNotHeld)
	return nil
}

func (t *Tracker) dropClaim(c *Claim, why error) {
	t.mu.Lock()
	delete(t.claims, c)
	t.mu.Unlock()
	c.end(why)
}

// AwaitResult waits up to wait for the result of a request another node
// claimed. It returns the result, ErrNoResult when the wait ends first, or
// ErrNotFound when nothing is claimed or stored (the holder released without
// a result, or the result expired): the caller may claim the request itself.
func (t *Tracker) AwaitResult(ctx context.Context, tenant, session, requestID string, wait time.Duration) (res []byte, err error) {
	ctx, span := startSpan(ctx, "tracker.AwaitResult")
	defer func() { endSpan(span, err) }()
	key, err := t.inflightKey(tenant, session, requestID)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	delay := 2 * time.Millisecond
	for {
		v, err := t.rdb.Get(ctx, key).Result()
		if err != nil {
			return nil, mapErr("await result", err)
		}
		if d := duplicate(v); d.Done {
			return d.Result, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, ErrNoResult
		}
		if !sleepCtx(ctx, min(delay, left)) {
			return nil, ctx.Err()
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// renewClaims extends every held claim in pipelines and drops the lost ones. A claim whose
// key is gone (Redis lost its data, and this tick came before the heartbeat's rebuild) is
// written back if it was renewed recently, as reassertClaims would: dropping it would let
// another node claim a request this one still runs. Completes and releases wait, so a
// finished claim is never revived.
func (t *Tracker) renewClaims(ctx context.Context) error {
	t.rebuildMu.Lock()
	defer t.rebuildMu.Unlock()
	t.mu.Lock()
	claims := make([]*Claim, 0, len(t.claims))
	for c := range t.claims {
		claims = append(claims, c)
	}
	t.mu.Unlock()
	ttl := t.cfg.ClaimTTL.Milliseconds()
	const batch = 1000
	for i := 0; i < len(claims); i += batch {
		part := claims[i:min(i+batch, len(claims))]
		cmds := make([]*redis.Cmd, len(part))
		start := time.Now()
		_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, c := range part {
				cmds[j] = renewClaim.Eval(ctx, p, []string{c.key}, c.value, ttl, recent(c.renewed, t.cfg.ClaimTTL))
			}
			return nil
		})
		if err != nil {
			return mapErr("renew claims", err)
		}
		for j, cmd := range cmds {
			if n, _ := cmd.Int(); n == 1 {
				part[j].renewed = start
			} else {
				t.log.Warn("tracker: in-flight claim lost", "tenant", part[j].tenant, "session", part[j].session,
					"request", part[j].requestID)
				t.dropClaim(part[j], ErrLeaseLost)
			}
		}
	}
	return nil
}

// reassertClaims writes back the claims this node holds after Redis lost
// them; completes and releases wait, so a finished claim is never revived.
func (t *Tracker) reassertClaims(ctx context.Context) error {
	t.rebuildMu.Lock()
	defer t.rebuildMu.Unlock()
	t.mu.Lock()
	claims := make([]*Claim, 0, len(t.claims))
	for c := range t.claims {
		claims = append(claims, c)
	}
	t.mu.Unlock()
	const batch = 1000
	for i := 0; i < len(claims); i += batch {
		part := claims[i:min(i+batch, len(claims))]
		_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range part {
				p.SetNX(ctx, c.key, c.value, t.cfg.ClaimTTL)
			}
			return nil
		})
		if err != nil {
			return mapErr("reassert claims", err)
		}
	}
	return nil
}
