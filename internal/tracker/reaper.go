package tracker

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// reapLoop runs on every node; only the node holding the reaper lease reaps.
func (t *Tracker) reapLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.ReapInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		leader, err := t.electReaper(ctx)
		if err == nil && leader {
			_, err = t.reap(ctx)
		}
		if err != nil && ctx.Err() == nil {
			t.log.Warn("tracker reaper failed", "err", err)
		}
	}
}

// electReaper renews or takes the reaper lease (a plain SET NX PX lease: the
// reaper's work is idempotent, so it needs no fencing).
func (t *Tracker) electReaper(ctx context.Context) (bool, error) {
	ttl := 3 * t.cfg.ReapInterval
	n, err := cmpExpire.Run(ctx, t.rdb, []string{t.k.reaper()}, t.nodeID, ttl.Milliseconds()).Int()
	if err != nil {
		return false, mapErr("reaper lease", err)
	}
	if n == 1 {
		return true, nil
	}
	ok, err := t.rdb.SetNX(ctx, t.k.reaper(), t.nodeID, ttl).Result()
	return ok, mapErr("reaper lease", err)
}

// reap purges the entries of every known node whose key has expired, and
// returns how many nodes it purged. A purged node that turns out to be alive
// (it was paused past its TTL) is asked to re-assert its entries.
func (t *Tracker) reap(ctx context.Context) (int, error) {
	ctx, span := startSpan(ctx, "tracker.reap")
	nodes, err := t.rdb.ZRange(ctx, t.k.nodes(), 0, -1).Result()
	if err != nil {
		endSpan(span, err)
		return 0, mapErr("reap", err)
	}
	cmds := make([]*redis.IntCmd, len(nodes))
	_, err = t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			cmds[i] = p.Exists(ctx, t.k.node(n))
		}
		return nil
	})
	if err != nil {
		endSpan(span, err)
		return 0, mapErr("reap", err)
	}
	purged := 0
	var errs []error
	for i, n := range nodes {
		if cmds[i].Val() == 1 || n == t.nodeID {
			continue
		}
		if !validNodeID(n) {
			t.rdb.ZRem(ctx, t.k.nodes(), n)
			continue
		}
		count, err := t.purgeNode(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		purged++
		t.log.Info("tracker reaped dead node", "dead", n, "entries", count)
		if back, _ := t.rdb.Exists(ctx, t.k.node(n)).Result(); back == 1 {
			errs = append(errs, t.publish(ctx, n, wireMsg{K: kindRebuild}))
		}
	}
	err = errors.Join(errs...)
	endSpan(span, err)
	return purged, err
}
