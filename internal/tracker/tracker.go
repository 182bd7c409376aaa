package tracker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

var tracer = otel.Tracer("github.com/tapline/tapline/internal/tracker")

var spanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

func startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	return tracer.Start(ctx, name, spanOpts...)
}

// endSpan records err on the span unless it is an expected answer
// (duplicate, lease held, not found), then ends it.
func endSpan(span trace.Span, err error) {
	if err != nil && !errors.Is(err, ErrDuplicate) && !errors.Is(err, ErrLeaseHeld) && !errors.Is(err, ErrNotFound) {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Tracker is one node's view of the cluster-wide tracker: it registers the
// node, keeps what the node holds (presence entries, resource listeners,
// leases, in-flight claims) in an in-process registry, mirrors it to Redis,
// and re-asserts it after Redis loses data. Create it with New, then Start;
// Stop releases everything the node holds. All methods are safe for
// concurrent use.
type Tracker struct {
	rdb    redis.UniversalClient
	cfg    Config
	k      keys
	log    *slog.Logger
	nodeID string
	prefix string // "<nodeID>|": start of every hash value this node writes

	claimPrefix string // "c|<nodeID>|": start of this node's claim values

	counter atomic.Uint64 // claim and lease tokens

	leaseMu sync.Mutex // orders lease renewals and releases (see RenewLease)
	// rebuildMu: rebuild re-asserts under the write lock; untracks, claim
	// completes and releases hold the read lock, so nothing ended is revived.
	rebuildMu sync.RWMutex

	mu      sync.Mutex
	entries map[string]*held // by ref
	claims  map[*Claim]struct{}
	leases  map[*Lease]struct{}
	started bool
	stopped bool

	// Owned by the heartbeat goroutine (and Start, before it runs).
	genTags    []string
	genValues  []string
	prevRemote uint64

	lastSeq   atomic.Uint64 // last inbox sequence number seen
	rebuildCh chan struct{}
	rebuilds  atomic.Uint64 // completed rebuilds, for tests and logs

	ps     *redis.PubSub
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a tracker for one node. It does not touch Redis; Start does.
func New(client redis.UniversalClient, cfg *Config) (*Tracker, error) {
	if client == nil {
		return nil, errors.New("tracker: nil redis client")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	var inc [6]byte
	if _, err := rand.Read(inc[:]); err != nil {
		return nil, fmt.Errorf("tracker: incarnation: %w", err)
	}
	id := c.NodeName + "-" + hex.EncodeToString(inc[:])
	return &Tracker{
		rdb:         client,
		cfg:         c,
		k:           keys{p: c.Prefix},
		log:         c.Logger.With("node", id),
		nodeID:      id,
		prefix:      id + "|",
		claimPrefix: "c|" + id + "|",
		entries:     make(map[string]*held),
		claims:      make(map[*Claim]struct{}),
		leases:      make(map[*Lease]struct{}),
		rebuildCh:   make(chan struct{}, 1),
	}, nil
}

// NodeID returns this node's id: the node name plus a per-boot incarnation.
func (t *Tracker) NodeID() string { return t.nodeID }

// Start registers the node, subscribes to its inbox and starts the heartbeat,
// renew, reaper and subscriber goroutines. They run until Stop is called or
// ctx is cancelled.
func (t *Tracker) Start(ctx context.Context) (err error) {
	ctx, span := startSpan(ctx, "tracker.Start")
	defer func() { endSpan(span, err) }()
	t.mu.Lock()
	if t.started || t.stopped {
		t.mu.Unlock()
		return errors.New("tracker: Start called twice")
	}
	t.started = true
	t.mu.Unlock()

	if err := t.loadGenTags(ctx); err != nil {
		return err
	}
	if err := t.register(ctx); err != nil {
		return err
	}
	if err := t.syncGenerations(ctx); err != nil {
		return err
	}
	ps := t.rdb.Subscribe(ctx, t.k.inbox(t.nodeID))
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		_ = ps.Close()
		return mapErr("subscribe inbox", err)
	}
	t.ps = ps

	run, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	t.wg.Add(4)
	go func() { defer t.wg.Done(); t.heartbeatLoop(run) }()
	go func() { defer t.wg.Done(); t.renewLoop(run) }()
	go func() { defer t.wg.Done(); t.reapLoop(run) }()
	go func() { defer t.wg.Done(); t.receiveLoop(run) }()
	return nil
}

// Stop stops the goroutines and, within a few seconds, releases what the node
// holds: leases (so another node takes them at once), in-flight claims,
// presence entries, resource listeners and the node key. It is safe to call
// more than once and on a tracker that never started.
func (t *Tracker) Stop() {
	if !t.halt() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.cleanup(ctx); err != nil {
		t.log.Warn("tracker stop: cleanup incomplete", "err", err)
	}
}

// halt stops the goroutines without touching Redis, as a crash would. It
// reports whether the tracker was running.
func (t *Tracker) halt() bool {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return false
	}
	t.stopped = true
	started := t.started
	t.mu.Unlock()
	if !started || t.cancel == nil {
		return false
	}
	t.cancel()
	_ = t.ps.Close() // unblocks the receive loop
	t.wg.Wait()
	return true
}

func (t *Tracker) isStopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopped
}

// cleanup removes everything the node holds from Redis.
func (t *Tracker) cleanup(ctx context.Context) error {
	t.mu.Lock()
	leases := make([]*Lease, 0, len(t.leases))
	for l := range t.leases {
		leases = append(leases, l)
	}
	claims := make([]*Claim, 0, len(t.claims))
	for c := range t.claims {
		claims = append(claims, c)
	}
	t.mu.Unlock()
	var errs []error
	for _, l := range leases {
		if err := t.ReleaseLease(ctx, l); err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrLeaseLost) {
			errs = append(errs, err)
		}
	}
	for _, c := range claims {
		if err := t.ReleaseInFlight(ctx, c); err != nil && !errors.Is(err, ErrNotHeld) {
			errs = append(errs, err)
		}
	}
	if _, err := t.untrackAllLocal(ctx); err != nil {
		errs = append(errs, err)
	}
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, t.k.node(t.nodeID))
		p.Del(ctx, t.k.nodeEntries(t.nodeID))
		p.Del(ctx, t.k.nodeSeq(t.nodeID))
		p.ZRem(ctx, t.k.nodes(), t.nodeID)
		// EVAL, not EVALSHA: a pipeline has no NOSCRIPT fallback (fresh Redis, SCRIPT FLUSH).
		cmpDelete.Eval(ctx, p, []string{t.k.reaper()}, t.nodeID)
		return nil
	})
	if err != nil {
		errs = append(errs, mapErr("unregister", err))
	}
	return errors.Join(errs...)
}

// register writes the node key and adds the node to the node index.
func (t *Tracker) register(ctx context.Context) error {
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		nk := t.k.node(t.nodeID)
		p.HSet(ctx, nk, "name", t.cfg.NodeName, "addr", t.cfg.Addr, "started", time.Now().UnixMilli())
		p.PExpire(ctx, nk, t.cfg.NodeTTL)
		p.ZAdd(ctx, t.k.nodes(), redis.Z{Score: float64(time.Now().UnixMilli()), Member: t.nodeID})
		return nil
	})
	return mapErr("register node", err)
}

// loadGenTags chooses one generation-marker hash tag per cluster master (one
// in total on a single node or Sentinel), so data loss on any shard is seen.
func (t *Tracker) loadGenTags(ctx context.Context) error {
	cc, ok := t.rdb.(*redis.ClusterClient)
	if !ok {
		t.genTags = []string{"g0"}
		t.genValues = make([]string, 1)
		return nil
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return mapErr("cluster slots", err)
	}
	firstRange := map[string]redis.ClusterSlot{}
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		m := s.Nodes[0].Addr
		if cur, ok := firstRange[m]; !ok || s.Start < cur.Start {
			firstRange[m] = s
		}
	}
	var tags []string
	for _, s := range firstRange {
		if tag, ok := tagInRange(s.Start, s.End); ok {
			tags = append(tags, tag)
		}
	}
	if len(tags) == 0 {
		tags = []string{"g0"}
	}
	sort.Strings(tags)
	t.genTags = tags
	t.genValues = make([]string, len(tags))
	return nil
}

// syncGenerations creates missing generation markers and remembers their
// values. A marker that later vanishes or changes means Redis lost data.
func (t *Tracker) syncGenerations(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	fresh := hex.EncodeToString(b[:])
	cmds := make([]*redis.StringCmd, len(t.genTags))
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, tag := range t.genTags {
			p.SetNX(ctx, t.k.gen(tag), fresh, 0)
			cmds[i] = p.Get(ctx, t.k.gen(tag))
		}
		return nil
	})
	if err != nil {
		return mapErr("generation markers", err)
	}
	for i, c := range cmds {
		t.genValues[i] = c.Val()
	}
	return nil
}

func (t *Tracker) heartbeatLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.rebuildCh:
			t.rebuild(ctx, "requested by reaper")
			continue
		}
		lost, err := t.heartbeat(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.log.Warn("tracker heartbeat failed", "err", err)
			}
			continue
		}
		if lost != "" {
			t.rebuild(ctx, lost)
		}
	}
}

// heartbeat refreshes the node key and checks for data loss and for missed
// notifications in one pipeline: 1 round trip (one per master on a cluster),
// whatever the number of entries the node holds. It returns a non-empty reason
// when Redis lost the node's data and the node must re-assert it.
func (t *Tracker) heartbeat(ctx context.Context) (lost string, err error) {
	ctx, span := startSpan(ctx, "tracker.heartbeat")
	defer func() { endSpan(span, err) }()
	var (
		alive *redis.BoolCmd
		seq   *redis.StringCmd
		gens  = make([]*redis.StringCmd, len(t.genTags))
	)
	_, err = t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		alive = p.PExpire(ctx, t.k.node(t.nodeID), t.cfg.NodeTTL)
		seq = p.Get(ctx, t.k.nodeSeq(t.nodeID))
		for i, tag := range t.genTags {
			gens[i] = p.Get(ctx, t.k.gen(tag))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", mapErr("heartbeat", err)
	}
	if err := alive.Err(); err != nil {
		return "", mapErr("heartbeat", err)
	}
	if !alive.Val() {
		return "node key vanished", nil
	}
	for i, g := range gens {
		if g.Val() != t.genValues[i] {
			return "generation marker " + t.genTags[i] + " changed", nil
		}
	}
	remote, _ := strconv.ParseUint(seq.Val(), 10, 64)
	t.checkTrailingGap(ctx, remote)
	return "", nil
}

// checkTrailingGap reports a gap when the inbox sequence in Redis was ahead of
// what the subscriber saw at the previous beat and still is: that message had a
// whole heartbeat to arrive.
func (t *Tracker) checkTrailingGap(ctx context.Context, remote uint64) {
	last := t.lastSeq.Load()
	prev := t.prevRemote
	t.prevRemote = remote
	if remote > last && prev > last {
		if t.advanceSeq(last, remote) {
			t.gap(ctx, Gap{Reason: GapMissed, Expected: last + 1, Got: remote})
		}
	}
}

// advanceSeq moves lastSeq from old to n if nobody moved it meanwhile.
func (t *Tracker) advanceSeq(old, n uint64) bool { return t.lastSeq.CompareAndSwap(old, n) }

// rebuild re-asserts everything the node holds after Redis lost it. Entries
// are written only where missing, so a newer owner's entry is never replaced.
func (t *Tracker) rebuild(ctx context.Context, reason string) {
	ctx, span := startSpan(ctx, "tracker.rebuild")
	start := time.Now()
	err := t.reassert(ctx)
	endSpan(span, err)
	if err != nil {
		t.log.Warn("tracker rebuild failed; retrying next heartbeat", "reason", reason, "err", err)
		return
	}
	t.rebuilds.Add(1)
	t.log.Info("tracker rebuilt after redis data loss", "reason", reason, "took", time.Since(start))
	t.lastSeq.Store(0)
	t.prevRemote = 0
	t.gap(ctx, Gap{Reason: GapDataLoss})
}

func (t *Tracker) reassert(ctx context.Context) error {
	if err := t.register(ctx); err != nil {
		return err
	}
	if err := t.reassertEntries(ctx); err != nil {
		return err
	}
	if err := t.renewLeases(ctx); err != nil {
		return err
	}
	if err := t.reassertClaims(ctx); err != nil {
		return err
	}
	if err := t.renewClaims(ctx); err != nil { // finds claims taken meanwhile
		return err
	}
	return t.syncGenerations(ctx)
}

func (t *Tracker) reassertEntries(ctx context.Context) error {
	t.rebuildMu.Lock()
	defer t.rebuildMu.Unlock()
	t.mu.Lock()
	entries := make([]*held, 0, len(t.entries))
	for _, h := range t.entries {
		entries = append(entries, h)
	}
	t.mu.Unlock()
	const batch = 1000
	for i := 0; i < len(entries); i += batch {
		part := entries[i:min(i+batch, len(entries))]
		_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range part {
				h.write(ctx, t, p, true)
			}
			return nil
		})
		if err != nil {
			return mapErr("reassert entries", err)
		}
	}
	return nil
}

func (t *Tracker) gap(ctx context.Context, g Gap) {
	t.log.Info("tracker notification gap", "reason", g.Reason.String(), "expected", g.Expected, "got", g.Got)
	if t.cfg.OnGap != nil {
		t.cfg.OnGap(ctx, g)
	}
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}
