package tracker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease is an exclusive, expiring hold on a named resource (an inspector
// session) with a fencing epoch that grows on every grant. The tracker renews
// it every LeaseTTL/3 while held. Writes made on the lease's behalf must carry
// Epoch so the protected store (Postgres sessions.epoch) refuses a stale
// holder: the Redis lease alone cannot stop a paused process.
type Lease struct {
	tenant, name  string
	key, epochKey string
	token         string
	epoch         uint64
	ttl           time.Duration

	mu      sync.Mutex
	renewed time.Time // start of the last successful grant or renewal (monotonic)
	err     error     // nil while held
	done    chan struct{}
}

// Tenant returns the lease's tenant.
func (l *Lease) Tenant() string { return l.tenant }

// Name returns the leased resource's name.
func (l *Lease) Name() string { return l.name }

// Epoch returns the fencing epoch of this grant.
func (l *Lease) Epoch() uint64 { return l.epoch }

// Done is closed when the lease ends: released, or lost.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err is nil while held, ErrNotHeld after release and ErrLeaseLost after a
// takeover or expiry.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// recent is "1" when the lease was renewed recently enough to be re-asserted if Redis
// lost it (see renewLease), else "0".
func (l *Lease) recent() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return recent(l.renewed, l.ttl)
}

// recent is "1" when renewed is within nine tenths of ttl ago, the margin Valid keeps for
// the clocks of Redis and this process.
func recent(renewed time.Time, ttl time.Duration) string {
	if time.Since(renewed) < ttl*9/10 {
		return "1"
	}
	return "0"
}

// Valid reports whether the lease is held and was renewed recently enough
// that it cannot have expired in Redis yet, measured on the monotonic clock
// (no cross-machine clock comparison). Check it before acting for the lease.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err == nil && time.Since(l.renewed) < l.ttl*9/10
}

func (l *Lease) end(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return false
	}
	l.err = err
	close(l.done)
	return true
}

// ClaimLease takes the lease on (tenant, name) for LeaseTTL. The new epoch is
// one more than the larger of the last epoch Redis granted and minEpoch: pass
// the high-water mark from Postgres (sessions.epoch) so that, after Redis lost
// its data or the counter expired (EpochTTL after the last grant or renewal),
// a new grant still beats every earlier one. It returns a *LeaseHeldError
// (errors.Is ErrLeaseHeld) while another holder has it.
func (t *Tracker) ClaimLease(ctx context.Context, tenant, name string, minEpoch uint64) (l *Lease, err error) {
	ctx, span := startSpan(ctx, "tracker.ClaimLease")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return nil, err
	}
	en, err := escapeID("lease name", name)
	if err != nil {
		return nil, err
	}
	if t.isStopped() {
		return nil, ErrStopped
	}
	l = &Lease{tenant: tenant, name: name, key: t.k.lease(et, en), epochKey: t.k.epoch(et, en),
		token: t.nodeID + "/" + strconv.FormatUint(t.counter.Add(1), 36), ttl: t.cfg.LeaseTTL,
		done: make(chan struct{})}
	start := time.Now()
	res, err := claimLease.Run(ctx, t.rdb, []string{l.key, l.epochKey}, l.token, t.nodeID,
		t.cfg.LeaseTTL.Milliseconds(), strconv.FormatUint(minEpoch, 10), t.cfg.EpochTTL.Milliseconds()).Slice()
	if err != nil {
		return nil, mapErr("claim lease", err)
	}
	if len(res) < 2 {
		return nil, fmt.Errorf("tracker: claim lease: unexpected reply %v", res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		holder, _ := res[1].(string)
		var e uint64
		if len(res) > 2 {
			s, _ := res[2].(string)
			e, _ = strconv.ParseUint(s, 10, 64)
		}
		var ttl time.Duration
		if len(res) > 3 {
			if ms, _ := res[3].(int64); ms > 0 {
				ttl = time.Duration(ms) * time.Millisecond
			}
		}
		return nil, &LeaseHeldError{Holder: holder, Epoch: e, TTL: ttl}
	}
	es, _ := res[1].(string)
	if l.epoch, err = strconv.ParseUint(es, 10, 64); err != nil {
		return nil, fmt.Errorf("tracker: claim lease: bad epoch %q", es)
	}
	l.renewed = start
	t.mu.Lock()
	t.leases[l] = struct{}{}
	t.mu.Unlock()
	return l, nil
}

// RenewLease extends the lease by LeaseTTL. It fails with ErrLeaseLost once
// another holder was granted a newer epoch (the old holder is stale), and with
// ErrNotHeld after release.
func (t *Tracker) RenewLease(ctx context.Context, l *Lease) (err error) {
	ctx, span := startSpan(ctx, "tracker.RenewLease")
	defer func() { endSpan(span, err) }()
	var lost bool
	defer func() {
		if lost {
			t.leaseLost(l)
		}
	}()
	// leaseMu orders renewals and releases of this node's leases: a renewal
	// may re-assert a missing lease, so it must never run after a release.
	t.leaseMu.Lock()
	defer t.leaseMu.Unlock()
	if err := l.Err(); err != nil {
		return err
	}
	start := time.Now()
	n, err := renewLease.Run(ctx, t.rdb, []string{l.key, l.epochKey}, l.token, t.nodeID,
		strconv.FormatUint(l.epoch, 10), l.ttl.Milliseconds(), t.cfg.EpochTTL.Milliseconds(), l.recent()).Int()
	if err != nil {
		return mapErr("renew lease", err)
	}
	if lost = !t.renewed(l, n == 1, start); lost {
		return ErrLeaseLost
	}
	return nil
}

// renewed records a renewal, or ends a lost lease; it reports whether the
// lease is still held. Called with leaseMu held.
func (t *Tracker) renewed(l *Lease, ok bool, start time.Time) bool {
	if ok {
		l.mu.Lock()
		if start.After(l.renewed) {
			l.renewed = start
		}
		l.mu.Unlock()
		return true
	}
	t.mu.Lock()
	delete(t.leases, l)
	t.mu.Unlock()
	l.end(ErrLeaseLost)
	return false
}

// leaseLost logs and reports a lost lease; called without leaseMu, so the
// callback may use the tracker.
func (t *Tracker) leaseLost(l *Lease) {
	t.log.Warn("tracker: lease lost", "tenant", l.tenant, "name", l.name, "epoch", l.epoch)
	if t.cfg.OnLeaseLost != nil {
		t.cfg.OnLeaseLost(l)
	}
}

// ReleaseLease gives the lease up at once, so another node can claim it
// (with a newer epoch) without waiting for it to expire: the hand-over a
// draining worker does. ErrLeaseLost if it was no longer held.
func (t *Tracker) ReleaseLease(ctx context.Context, l *Lease) (err error) {
	ctx, span := startSpan(ctx, "tracker.ReleaseLease")
	defer func() { endSpan(span, err) }()
	t.leaseMu.Lock()
	defer t.leaseMu.Unlock()
	if err := l.Err(); err != nil {
		return err
	}
	n, err := releaseLease.Run(ctx, t.rdb, []string{l.key}, l.token).Int()
	if err != nil {
		return mapErr("release lease", err)
	}
	t.mu.Lock()
	delete(t.leases, l)
	t.mu.Unlock()
	if n == 0 {
		l.end(ErrLeaseLost)
		return ErrLeaseLost
	}
	l.end(ErrNotHeld)
	return nil
}

// HandOverLeases releases every lease this node holds, for a worker that
// drains before shutdown: each session can be claimed by another worker at
// once. It returns the leases released.
func (t *Tracker) HandOverLeases(ctx context.Context) ([]*Lease, error) {
	var out []*Lease
	var errs []error
	for _, l := range t.Leases() {
		err := t.ReleaseLease(ctx, l)
		switch {
		case err == nil:
			out = append(out, l)
		case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrNotHeld):
		default:
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// Leases returns the leases this node holds.
func (t *Tracker) Leases() []*Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Lease, 0, len(t.leases))
	for l := range t.leases {
		out = append(out, l)
	}
	return out
}

// LeaseHolder returns the node holding (tenant, name) and its epoch;
// ErrNotFound when the lease is free.
func (t *Tracker) LeaseHolder(ctx context.Context, tenant, name string) (node string, epoch uint64, err error) {
	ctx, span := startSpan(ctx, "tracker.LeaseHolder")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return "", 0, err
	}
	en, err := escapeID("lease name", name)
	if err != nil {
		return "", 0, err
	}
	v, err := t.rdb.HMGet(ctx, t.k.lease(et, en), "node", "epoch").Result()
	if err != nil {
		return "", 0, mapErr("lease holder", err)
	}
	node, _ = v[0].(string)
	es, _ := v[1].(string)
	if node == "" {
		return "", 0, ErrNotFound
	}
	epoch, _ = strconv.ParseUint(es, 10, 64)
	return node, epoch, nil
}

// renewLeases renews every held lease in pipelines; lost ones end. A lease
// whose key is gone (Redis lost data, or it expired unrenewed) is re-asserted
// at its epoch unless a newer epoch was granted meanwhile.
func (t *Tracker) renewLeases(ctx context.Context) error {
	var lost []*Lease
	defer func() {
		for _, l := range lost {
			t.leaseLost(l)
		}
	}()
	t.leaseMu.Lock()
	defer t.leaseMu.Unlock()
	leases := t.Leases()
	const batch = 1000
	for i := 0; i < len(leases); i += batch {
		part := leases[i:min(i+batch, len(leases))]
		cmds := make([]*redis.Cmd, len(part))
		start := time.Now()
		_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, l := range part {
				cmds[j] = renewLease.Eval(ctx, p, []string{l.key, l.epochKey}, l.token, t.nodeID,
					strconv.FormatUint(l.epoch, 10), l.ttl.Milliseconds(), t.cfg.EpochTTL.Milliseconds(), l.recent())
			}
			return nil
		})
		if err != nil {
			return mapErr("renew leases", err)
		}
		for j, c := range cmds {
			n, _ := c.Int()
			if !t.renewed(part[j], n == 1, start) {
				lost = append(lost, part[j])
			}
		}
	}
	return nil
}

// renewLoop keeps held leases and claims alive.
func (t *Tracker) renewLoop(ctx context.Context) {
	leaseTick := time.NewTicker(t.cfg.LeaseTTL / 3)
	defer leaseTick.Stop()
	claimTick := time.NewTicker(t.cfg.ClaimTTL / 3)
	defer claimTick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-leaseTick.C:
			err = t.renewLeases(ctx)
		case <-claimTick.C:
			err = t.renewClaims(ctx)
		}
		if err != nil && ctx.Err() == nil {
			t.log.Warn("tracker renew failed", "err", err)
		}
	}
}
