package tracker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/redistest"
)

// 200 goroutines on two nodes claim one request: exactly one wins; the others,
// and later retries, get the winner's stored result.
func TestClaimInFlightExactlyOnce(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		nodes := []*node{startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")}
		ctx := ctxT(t)

		var (
			wg       sync.WaitGroup
			start    = make(chan struct{})
			winners  atomic.Int32
			dups     atomic.Int32
			mu       sync.Mutex
			claim    *Claim
			claimer  *node
			otherErr error
		)
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := nodes[i%2]
				<-start
				c, err := n.ClaimInFlight(ctx, "acme", "sess-1", "call-7")
				switch {
				case err == nil:
					winners.Add(1)
					mu.Lock()
					claim, claimer = c, n
					mu.Unlock()
				case errors.Is(err, ErrDuplicate):
					dups.Add(1)
					var d *DuplicateError
					if !errors.As(err, &d) || d.Done || d.Holder == "" {
						mu.Lock()
						otherErr = err
						mu.Unlock()
					}
				default:
					mu.Lock()
					otherErr = err
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		if otherErr != nil {
			t.Fatalf("unexpected claim error: %v", otherErr)
		}
		if winners.Load() != 1 || dups.Load() != 199 {
			t.Fatalf("winners=%d duplicates=%d, want 1 and 199", winners.Load(), dups.Load())
		}

		// A duplicate waits (bounded) for the result while the winner works.
		other := nodes[0]
		if claimer == nodes[0] {
			other = nodes[1]
		}
		if _, err := other.AwaitResult(ctx, "acme", "sess-1", "call-7", 50*time.Millisecond); !errors.Is(err, ErrNoResult) {
			t.Fatalf("await before completion: %v, want ErrNoResult", err)
		}
		got := make(chan []byte, 1)
		go func() {
			res, err := other.AwaitResult(ctx, "acme", "sess-1", "call-7", 5*time.Second)
			if err != nil {
				t.Errorf("await: %v", err)
			}
			got <- res
		}()
		must(t, claimer.CompleteInFlight(ctx, claim, []byte(`{"result":42}`)))
		if res := <-got; string(res) != `{"result":42}` {
			t.Fatalf("awaited result %q", res)
		}
		// A retry after completion gets the same answer instead of running again.
		_, err := other.ClaimInFlight(ctx, "acme", "sess-1", "call-7")
		var d *DuplicateError
		if !errors.As(err, &d) || !d.Done || string(d.Result) != `{"result":42}` {
			t.Fatalf("retry after completion: %v, want stored result", err)
		}
		if err := claimer.CompleteInFlight(ctx, claim, []byte("again")); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("second complete: %v, want ErrNotHeld", err)
		}
	})
}

func TestClaimRenewAndRelease(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)

		// Release lets a retry claim again.
		c, err := a.ClaimInFlight(ctx, "acme", "s", "r1")
		must(t, err)
		must(t, a.RenewInFlight(ctx, c))
		must(t, a.ReleaseInFlight(ctx, c))
		if err := a.RenewInFlight(ctx, c); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("renew after release: %v", err)
		}
		c2, err := bn.ClaimInFlight(ctx, "acme", "s", "r1")
		must(t, err)

		// The background renewer keeps a held claim past its TTL.
		consistently(t, 2*testClaimTTL, "claim kept alive while held", func() bool {
			_, err := a.ClaimInFlight(ctx, "acme", "s", "r1")
			return errors.Is(err, ErrDuplicate)
		})

		// A holder that stops renewing loses the claim; its late calls fail.
		bn.halt()
		var c3 *Claim
		redistest.Eventually(t, 3*testClaimTTL, "claim expires after its holder stops", func() bool {
			c3, err = a.ClaimInFlight(ctx, "acme", "s", "r1")
			return err == nil
		})
		if err := bn.RenewInFlight(ctx, c2); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("stale renew: %v, want ErrLeaseLost", err)
		}
		if err := bn.CompleteInFlight(ctx, c2, []byte("x")); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("stale complete: %v, want ErrLeaseLost", err)
		}
		select {
		case <-c2.Done():
		default:
			t.Fatal("lost claim's Done not closed")
		}
		must(t, a.CompleteInFlight(ctx, c3, []byte("ok")))
	})
}

// A stored result can be traded for a new claim by exactly one of many nodes, and only while
// it is the result stored: not once another result, or nothing, is there.
func TestReclaimInFlight(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		nodes := []*node{startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")}
		ctx := ctxT(t)
		c, err := nodes[0].ClaimInFlight(ctx, "acme", "s", "r")
		must(t, err)
		must(t, nodes[0].CompleteInFlight(ctx, c, []byte("failed-1")))
		if _, err := nodes[1].ReclaimInFlight(ctx, "acme", "s", "r", []byte("failed-0")); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("reclaim over another result: %v, want ErrLeaseLost", err)
		}
		var (
			wg      sync.WaitGroup
			winners atomic.Int32
			won     atomic.Pointer[Claim]
			owner   atomic.Pointer[node]
		)
		for i := range 50 {
			wg.Go(func() {
				n := nodes[i%2]
				c, err := n.ReclaimInFlight(ctx, "acme", "s", "r", []byte("failed-1"))
				switch {
				case err == nil:
					winners.Add(1)
					won.Store(c)
					owner.Store(n)
				case !errors.Is(err, ErrLeaseLost):
					t.Errorf("reclaim: %v", err)
				}
			})
		}
		wg.Wait()
		if winners.Load() != 1 {
			t.Fatalf("%d reclaims won, want 1", winners.Load())
		}
		// The new claim is held, renewed and completed like any other.
		_, err = nodes[0].ClaimInFlight(ctx, "acme", "s", "r")
		var d *DuplicateError
		if !errors.As(err, &d) || d.Done || d.Holder != owner.Load().NodeID() {
			t.Fatalf("claim while reclaimed: %v, want held by %s", err, owner.Load().NodeID())
		}
		consistently(t, 2*testClaimTTL, "reclaimed claim kept alive while held", func() bool {
			_, err := nodes[0].ClaimInFlight(ctx, "acme", "s", "r")
			return errors.Is(err, ErrDuplicate)
		})
		must(t, owner.Load().CompleteInFlight(ctx, won.Load(), []byte("ok")))
		if res, err := nodes[1].AwaitResult(ctx, "acme", "s", "r", time.Second); err != nil || string(res) != "ok" {
			t.Fatalf("result after reclaim = %q, %v", res, err)
		}
		// Nothing stored: nothing to reclaim.
		if _, err := nodes[0].ReclaimInFlight(ctx, "acme", "s", "gone", []byte("ok")); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("reclaim of nothing: %v, want ErrLeaseLost", err)
		}
	})
}

func TestResultCacheExpiry(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		a := startNode(t, rdb, redistest.Prefix(t), "a", func(c *Config) { c.ResultTTL = 400 * time.Millisecond })
		ctx := ctxT(t)
		c, err := a.ClaimInFlight(ctx, "acme", "s", "r")
		must(t, err)
		must(t, a.CompleteInFlight(ctx, c, []byte("done")))
		res, err := a.AwaitResult(ctx, "acme", "s", "r", time.Second)
		if err != nil || string(res) != "done" {
			t.Fatalf("result %q %v", res, err)
		}
		redistest.Eventually(t, 2*time.Second, "result expires and the request can be claimed again", func() bool {
			c, err = a.ClaimInFlight(ctx, "acme", "s", "r")
			return err == nil
		})
		must(t, a.ReleaseInFlight(ctx, c))
		if _, err := a.AwaitResult(ctx, "acme", "s", "r", 10*time.Millisecond); !errors.Is(err, ErrNotFound) {
			t.Fatalf("await on nothing: %v, want ErrNotFound", err)
		}
	})
}

func TestPresence(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)

		must(t, a.Track(ctx, SessionRef("acme", "s1"), Meta{"proto": "2025-11-25"}))
		must(t, bn.Track(ctx, SessionRef("acme", "s2"), nil))
		must(t, a.Track(ctx, RequestRef("acme", "s1", "elic-1"), Meta{"type": "elicitation"}))
		must(t, a.Track(ctx, StreamRef("acme", "s1", "sse-a"), Meta{"user": "ann"}))
		must(t, bn.Track(ctx, StreamRef("acme", "s1", "sse-b"), Meta{"user": "bob"}))

		sessions, err := bn.ListSessions(ctx, "acme")
		must(t, err)
		if got := ids(sessions); !slices.Equal(got, []string{"s1", "s2"}) {
			t.Fatalf("sessions %v", got)
		}
		if sessions[0].NodeID != a.NodeID() || sessions[0].Addr != "http://a.internal:8081" || sessions[0].Meta["proto"] != "2025-11-25" {
			t.Fatalf("session entry %+v", sessions[0])
		}
		streams, err := a.StreamsOf(ctx, "acme", "s1")
		must(t, err)
		if got := ids(streams); !slices.Equal(got, []string{"s1/sse-a", "s1/sse-b"}) {
			t.Fatalf("streams of s1 across nodes: %v", got)
		}
		if streams[1].NodeID != bn.NodeID() || streams[1].Meta["user"] != "bob" {
			t.Fatalf("stream entry %+v", streams[1])
		}
		reqs, err := bn.ListRequests(ctx, "acme")
		must(t, err)
		if got := ids(reqs); !slices.Equal(got, []string{"s1/elic-1"}) {
			t.Fatalf("requests %v", got)
		}

		own, err := bn.Owner(ctx, RequestRef("acme", "s1", "elic-1"))
		must(t, err)
		if own.NodeID != a.NodeID() || own.Addr != "http://a.internal:8081" {
			t.Fatalf("owner %+v", own)
		}
		if _, err := bn.Owner(ctx, SessionRef("acme", "nope")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("owner of unknown: %v", err)
		}

		// Metadata: merged by the holder only.
		meta, err := a.UpdateMeta(ctx, SessionRef("acme", "s1"), Meta{"caps": `{"elicitation":{}}`})
		must(t, err)
		if meta["proto"] != "2025-11-25" || meta["caps"] == "" {
			t.Fatalf("merged meta %v", meta)
		}
		e, err := bn.Get(ctx, SessionRef("acme", "s1"))
		must(t, err)
		if e.Meta["caps"] != `{"elicitation":{}}` || e.Meta["proto"] != "2025-11-25" {
			t.Fatalf("meta seen by b: %v", e.Meta)
		}
		if _, err := bn.UpdateMeta(ctx, SessionRef("acme", "s1"), Meta{"x": "y"}); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("update by non-holder: %v", err)
		}
		if err := bn.Untrack(ctx, SessionRef("acme", "s1")); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("untrack by non-holder: %v", err)
		}

		// Untrack one; UntrackNode the rest of a node.
		must(t, a.Untrack(ctx, StreamRef("acme", "s1", "sse-a")))
		streams, err = bn.StreamsOf(ctx, "acme", "s1")
		must(t, err)
		if got := ids(streams); !slices.Equal(got, []string{"s1/sse-b"}) {
			t.Fatalf("streams after untrack %v", got)
		}
		if _, err := a.UntrackNode(ctx, bn.NodeID()); !errors.Is(err, ErrNodeAlive) {
			t.Fatalf("untrack live remote node: %v", err)
		}
		n, err := a.UntrackNode(ctx, a.NodeID())
		must(t, err)
		if n != 2 {
			t.Fatalf("untracked %d entries of a, want 2", n)
		}
		sessions, err = bn.ListSessions(ctx, "acme")
		must(t, err)
		reqs, err = bn.ListRequests(ctx, "acme")
		must(t, err)
		if got := ids(sessions); !slices.Equal(got, []string{"s2"}) || len(reqs) != 0 {
			t.Fatalf("after UntrackNode: sessions %v requests %v", got, ids(reqs))
		}
	})
}

// A node whose heartbeat stops vanishes from every listing within its TTL;
// the elected reaper then deletes its entries.
func TestDeadNodeDisappears(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)

		must(t, a.Track(ctx, SessionRef("acme", "s1"), nil))
		must(t, a.Track(ctx, RequestRef("acme", "s1", "r1"), nil))
		must(t, a.Track(ctx, StreamRef("acme", "s1", "x1"), nil))
		must(t, a.SubscribeResource(ctx, "acme", "s1", "file:///a.txt"))
		must(t, bn.Track(ctx, StreamRef("acme", "s1", "x2"), nil))

		visible := func() (sessions, requests, streams, listeners int) {
			s, err := bn.ListSessions(ctx, "acme")
			must(t, err)
			r, err := bn.ListRequests(ctx, "acme")
			must(t, err)
			x, err := bn.StreamsOf(ctx, "acme", "s1")
			must(t, err)
			l, err := bn.ListResourceListeners(ctx, "acme")
			must(t, err)
			return len(s), len(r), len(x), len(l)
		}
		if s, r, x, l := visible(); s != 1 || r != 1 || x != 2 || l != 1 {
			t.Fatalf("before: %d %d %d %d", s, r, x, l)
		}

		a.halt() // the process freezes or dies: no cleanup, no more heartbeats
		halted := time.Now()
		redistest.Eventually(t, testNodeTTL+time.Second, "dead node's entries leave every listing", func() bool {
			s, r, x, l := visible()
			return s == 0 && r == 0 && x == 1 && l == 0
		})
		if took := time.Since(halted); took > testNodeTTL+300*time.Millisecond {
			t.Fatalf("entries vanished after %v, NodeTTL is %v", took, testNodeTTL)
		}
		if _, err := bn.Owner(ctx, SessionRef("acme", "s1")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("owner of dead node's session: %v", err)
		}

		// The reaper (b is the only live node, so it is elected) purges them.
		et := "acme"
		redistest.Eventually(t, 5*time.Second, "reaper deletes the dead node's entries", func() bool {
			n1, _ := rdb.HLen(ctx, bn.k.sessions(et)).Result()
			n2, _ := rdb.HLen(ctx, bn.k.requests(et)).Result()
			n3, _ := rdb.HLen(ctx, bn.k.rsubs(et)).Result()
			n4, _ := rdb.Exists(ctx, bn.k.nodeEntries(a.NodeID())).Result()
			n5, _ := rdb.ZScore(ctx, bn.k.nodes(), a.NodeID()).Result()
			return n1+n2+n3+n4 == 0 && n5 == 0
		})
		x, err := bn.StreamsOf(ctx, "acme", "s1")
		must(t, err)
		if got := ids(x); !slices.Equal(got, []string{"s1/x2"}) {
			t.Fatalf("live node's stream lost: %v", got)
		}
	})
}

func TestLeaseFencing(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)

		la, err := a.ClaimLease(ctx, "acme", "sess-1", 0)
		must(t, err)
		if la.Epoch() != 1 || !la.Valid() {
			t.Fatalf("first epoch %d valid %v", la.Epoch(), la.Valid())
		}
		_, err = bn.ClaimLease(ctx, "acme", "sess-1", 0)
		var held *LeaseHeldError
		if !errors.As(err, &held) || held.Holder != a.NodeID() || held.Epoch != 1 {
			t.Fatalf("claim of held lease: %v", err)
		}
		// The renew loop keeps it past its TTL.
		consistently(t, 2*testLeaseTTL, "lease kept while its node runs", func() bool {
			n, e, err := bn.LeaseHolder(ctx, "acme", "sess-1")
			return err == nil && n == a.NodeID() && e == 1
		})

		// a stops heartbeating and renewing (crash, SIGSTOP): b takes over at epoch 2.
		a.halt()
		var lb *Lease
		redistest.Eventually(t, 3*testLeaseTTL, "lease taken over after expiry", func() bool {
			lb, err = bn.ClaimLease(ctx, "acme", "sess-1", 0)
			return err == nil
		})
		if lb.Epoch() != 2 {
			t.Fatalf("takeover epoch %d, want 2", lb.Epoch())
		}
		if err := a.RenewLease(ctx, la); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("stale renew: %v, want ErrLeaseLost", err)
		}
		if la.Valid() || !errors.Is(la.Err(), ErrLeaseLost) {
			t.Fatalf("stale lease still valid: %v", la.Err())
		}
		if err := a.ReleaseLease(ctx, la); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("stale release: %v", err)
		}
		if n, e, err := bn.LeaseHolder(ctx, "acme", "sess-1"); err != nil || n != bn.NodeID() || e != 2 {
			t.Fatalf("holder after stale release: %s %d %v", n, e, err)
		}

		// Drain: b hands its leases over; c claims at once with epoch 3.
		c := startNode(t, rdb, prefix, "c")
		released, err := bn.HandOverLeases(ctx)
		must(t, err)
		if len(released) != 1 || !errors.Is(lb.Err(), ErrNotHeld) {
			t.Fatalf("handed over %d leases, err %v", len(released), lb.Err())
		}
		lc, err := c.ClaimLease(ctx, "acme", "sess-1", 0)
		must(t, err)
		if lc.Epoch() != 3 {
			t.Fatalf("epoch after hand-over %d, want 3", lc.Epoch())
		}
		if err := bn.RenewLease(ctx, lb); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("renew after hand-over: %v", err)
		}

		// A graceful Stop releases too.
		c.Stop()
		ld, err := bn.ClaimLease(ctx, "acme", "sess-1", 0)
		must(t, err)
		if ld.Epoch() != 4 {
			t.Fatalf("epoch after stop %d, want 4", ld.Epoch())
		}

		// The floor from Postgres wins over a lower Redis counter...
		lf, err := bn.ClaimLease(ctx, "acme", "sess-2", 41)
		must(t, err)
		if lf.Epoch() != 42 {
			t.Fatalf("seeded epoch %d, want 42", lf.Epoch())
		}
		// The counter expires with its session (EpochTTL), it does not pile up.
		if ttl, err := rdb.PTTL(ctx, bn.k.epoch("acme", "sess-2")).Result(); err != nil || ttl <= 0 {
			t.Fatalf("epoch counter ttl %v %v", ttl, err)
		}
		must(t, bn.ReleaseLease(ctx, lf))
		// ...and after Redis lost the counter, a claim with the floor still
		// beats every earlier epoch.
		must(t, redistest.DeletePrefix(ctx, rdb, prefix+":{acme:sess-2}"))
		lf2, err := bn.ClaimLease(ctx, "acme", "sess-2", lf.Epoch())
		must(t, err)
		if lf2.Epoch() != 43 {
			t.Fatalf("epoch after counter loss %d, want 43", lf2.Epoch())
		}
	})
}

// Notifications reach exactly the subscribed listeners, on other nodes, and
// never another tenant's.
func TestNotificationsReachSubscribers(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn, c := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b"), startNode(t, rdb, prefix, "c")
		ctx := ctxT(t)
		const u, v = "file:///shared.txt", "file:///other.txt"

		must(t, a.Track(ctx, SessionRef("acme", "s1"), nil))
		must(t, a.SubscribeResource(ctx, "acme", "s1", u))
		must(t, bn.Track(ctx, SessionRef("acme", "s2"), nil))
		must(t, bn.SubscribeResource(ctx, "acme", "s2", u))
		must(t, bn.Track(ctx, SessionRef("acme", "s3"), nil))
		must(t, bn.SubscribeResource(ctx, "acme", "s3", v))
		// Another tenant with the same session ids and URI.
		must(t, bn.Track(ctx, SessionRef("globex", "s1"), nil))
		must(t, bn.SubscribeResource(ctx, "globex", "s1", u))
		// Unsubscribed listeners are not told.
		must(t, a.SubscribeResource(ctx, "acme", "s1", v))
		must(t, a.UnsubscribeResource(ctx, "acme", "s1", v))
		must(t, a.Track(ctx, RequestRef("acme", "s1", "elic-9"), nil))

		ls, err := c.ListResourceListeners(ctx, "acme")
		must(t, err)
		if got := listenerIDs(ls); !slices.Equal(got, []string{"s1 " + u, "s2 " + u, "s3 " + v}) {
			t.Fatalf("listeners %v", got)
		}

		n, err := c.NotifyResourceUpdated(ctx, "acme", u)
		must(t, err)
		if n != 2 {
			t.Fatalf("addressed %d listeners, want 2", n)
		}
		n, err = c.NotifyToolsListChanged(ctx, "acme")
		must(t, err)
		if n != 3 {
			t.Fatalf("tools list changed addressed %d sessions, want 3", n)
		}
		must(t, c.NotifyElicitationComplete(ctx, "acme", "s1", "elic-9"))
		if err := c.NotifyElicitationComplete(ctx, "acme", "s2", "elic-9"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("elicitation of another session: %v", err)
		}

		// Inbox messages from one publisher arrive in order: once the last
		// one (prompts list changed) is in, nothing else is on the way.
		_, err = c.NotifyPromptsListChanged(ctx, "acme")
		must(t, err)
		_, err = c.NotifyPromptsListChanged(ctx, "globex")
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "last notifications arrive", func() bool {
			return a.rec.has(PromptsListChanged, "s1") && bn.rec.has(PromptsListChanged, "s3") &&
				bn.rec.has(PromptsListChanged, "s1")
		})
		skipFence := func(n Notification) bool { return n.Kind == PromptsListChanged }
		wantA := []string{
			"elicitation_complete acme/s1 elic-9",
			"resource_updated acme/s1 " + u,
			"tools_list_changed acme/s1 ",
		}
		wantB := []string{
			"resource_updated acme/s2 " + u,
			"tools_list_changed acme/s2 ",
			"tools_list_changed acme/s3 ",
		}
		if got := a.rec.summary(skipFence); !slices.Equal(got, wantA) {
			t.Fatalf("node a got %q\nwant %q", got, wantA)
		}
		if got := bn.rec.summary(skipFence); !slices.Equal(got, wantB) {
			t.Fatalf("node b got %q\nwant %q", got, wantB)
		}
		if got := c.rec.notifications(); len(got) != 0 {
			t.Fatalf("node c holds nothing but got %v", got)
		}
		for _, nd := range []*node{a, bn, c} {
			if g := nd.rec.gapList(); len(g) != 0 {
				t.Fatalf("unexpected gaps %v", g)
			}
		}
	})
}

// A subscriber that misses messages learns it: from the sequence numbers when
// the next message comes, or from the heartbeat when none comes.
func TestNotificationGapDetected(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)
		must(t, a.Track(ctx, SessionRef("acme", "s1"), nil))
		must(t, a.SubscribeResource(ctx, "acme", "s1", "res://x"))

		_, err := bn.NotifyResourceUpdated(ctx, "acme", "res://x")
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "first message", func() bool { return len(a.rec.notifications()) == 1 })

		// Message 2 is "lost": numbered but never delivered. Message 3 arrives.
		must(t, rdb.Incr(ctx, a.k.nodeSeq(a.NodeID())).Err())
		_, err = bn.NotifyResourceUpdated(ctx, "acme", "res://x")
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "gap reported", func() bool { return len(a.rec.gapList()) == 1 })
		if g := a.rec.gapList()[0]; g.Reason != GapSequence || g.Expected != 2 || g.Got != 3 {
			t.Fatalf("gap %+v", g)
		}
		if n := a.rec.notifications(); len(n) != 2 || n[1].Seq != 3 {
			t.Fatalf("notifications %+v", n)
		}

		// The last message is lost and nothing follows: the heartbeat sees it.
		must(t, rdb.Incr(ctx, a.k.nodeSeq(a.NodeID())).Err())
		redistest.Eventually(t, 4*testHeartbeat, "trailing gap reported", func() bool { return len(a.rec.gapList()) == 2 })
		if g := a.rec.gapList()[1]; g.Reason != GapMissed || g.Expected != 4 || g.Got != 4 {
			t.Fatalf("trailing gap %+v", g)
		}
	})
}

// After Redis loses everything, every node re-asserts what it holds within
// one heartbeat. Single: a private redis-server and a real FLUSHALL. Cluster:
// the cluster is shared with other packages' tests, so the loss is simulated by
// deleting every key under this test's prefix on every master.
func TestRebuildAfterDataLoss(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		var rdb redis.UniversalClient
		if b.Cluster {
			rdb = backendClient(t, b)
		} else {
			rdb = redistest.Single(t, redistest.StartServer(t).URL)
		}
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)

		must(t, a.Track(ctx, SessionRef("acme", "s1"), Meta{"k": "v"}))
		must(t, a.Track(ctx, RequestRef("acme", "s1", "r1"), nil))
		must(t, a.Track(ctx, StreamRef("acme", "s1", "x1"), nil))
		must(t, bn.Track(ctx, StreamRef("acme", "s1", "x2"), nil))
		must(t, bn.Track(ctx, SessionRef("globex", "s9"), nil))
		must(t, a.SubscribeResource(ctx, "acme", "s1", "res://r"))
		la, err := a.ClaimLease(ctx, "acme", "s1", 0)
		must(t, err)
		lb, err := bn.ClaimLease(ctx, "globex", "s9", 0)
		must(t, err)
		claim, err := bn.ClaimInFlight(ctx, "acme", "s1", "call-1")
		must(t, err)

		type state struct{ acme, globex, reqs, streams, listeners []string }
		snapshot := func() state {
			var s state
			e, err := a.ListSessions(ctx, "acme")
			must(t, err)
			s.acme = ids(e)
			e, err = a.ListSessions(ctx, "globex")
			must(t, err)
			s.globex = ids(e)
			e, err = a.ListRequests(ctx, "acme")
			must(t, err)
			s.reqs = ids(e)
			e, err = a.StreamsOf(ctx, "acme", "s1")
			must(t, err)
			s.streams = ids(e)
			l, err := a.ListResourceListeners(ctx, "acme")
			must(t, err)
			s.listeners = listenerIDs(l)
			return s
		}
		equal := func(x, y state) bool {
			return slices.Equal(x.acme, y.acme) && slices.Equal(x.globex, y.globex) && slices.Equal(x.reqs, y.reqs) &&
				slices.Equal(x.streams, y.streams) && slices.Equal(x.listeners, y.listeners)
		}
		before := snapshot()
		if len(before.acme) != 1 || len(before.streams) != 2 || len(before.listeners) != 1 {
			t.Fatalf("before %+v", before)
		}

		if b.Cluster {
			must(t, redistest.DeletePrefix(ctx, rdb, prefix))
		} else {
			must(t, rdb.FlushAll(ctx).Err())
		}
		lost := time.Now()
		if s := snapshot(); len(s.acme)+len(s.streams) != 0 {
			t.Fatalf("data loss did not happen: %+v", s)
		}
		redistest.Eventually(t, 5*time.Second, "every live entry is back", func() bool { return equal(snapshot(), before) })
		if took := time.Since(lost); took > testHeartbeat+400*time.Millisecond {
			t.Fatalf("rebuild took %v, heartbeat is %v", took, testHeartbeat)
		}
		// Leases and claims are back with their holders and epochs.
		for _, l := range []*Lease{la, lb} {
			redistest.Eventually(t, 2*time.Second, "lease re-asserted", func() bool {
				n, e, err := a.LeaseHolder(ctx, l.Tenant(), l.Name())
				return err == nil && e == l.Epoch() && n != ""
			})
			if l.Err() != nil {
				t.Fatalf("lease lost across rebuild: %v", l.Err())
			}
		}
		// On the Cluster the prefix is deleted master by master, so a rebuild can run while a
		// later master is still being emptied; the generation markers catch that on the next
		// heartbeat. A claim that wins here would be a real double dispatch, so release it.
		redistest.Eventually(t, 2*time.Second, "claim re-asserted", func() bool {
			c, err := a.ClaimInFlight(ctx, "acme", "s1", "call-1")
			if err == nil {
				_ = a.ReleaseInFlight(ctx, c)
			}
			return errors.Is(err, ErrDuplicate)
		})
		must(t, bn.CompleteInFlight(ctx, claim, []byte("r")))
		// Both nodes were told to resync.
		for _, nd := range []*node{a, bn} {
			redistest.Eventually(t, 2*time.Second, "data-loss gap reported", func() bool {
				for _, g := range nd.rec.gapList() {
					if g.Reason == GapDataLoss {
						return true
					}
				}
				return false
			})
		}
		// Notifications flow again after the sequence restarted.
		_, err = bn.NotifyResourceUpdated(ctx, "acme", "res://r")
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "notification after rebuild", func() bool {
			return a.rec.has(ResourceUpdated, "s1")
		})
		// The metadata survived too.
		e, err := bn.Get(ctx, SessionRef("acme", "s1"))
		must(t, err)
		if e.Meta["k"] != "v" {
			t.Fatalf("meta after rebuild %v", e.Meta)
		}
	})
}

// Hostile ids are escaped, never break a hash tag or collide, and too long or
// empty ones are refused.
func TestHostileIDs(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a := startNode(t, rdb, prefix, "a")
		ctx := ctxT(t)

		tenant := "t{x}:* |%"
		hostile := []string{"{", "}", "a:b", "a}:{b", "*", "with space", "100%", "ünï|cødé", "x\x00y", strings.Repeat("z", MaxIDLen)}
		for _, s := range hostile {
			must(t, a.Track(ctx, SessionRef(tenant, s), Meta{"id": s}))
			must(t, a.Track(ctx, StreamRef(tenant, s, "x}{"), nil))
			c, err := a.ClaimInFlight(ctx, tenant, s, s)
			must(t, err)
			must(t, a.CompleteInFlight(ctx, c, []byte(s)))
			l, err := a.ClaimLease(ctx, tenant, s, 0)
			must(t, err)
			must(t, a.ReleaseLease(ctx, l))
			must(t, a.SubscribeResource(ctx, tenant, s, "file:///{"+s+"}"))
		}
		sessions, err := a.ListSessions(ctx, tenant)
		must(t, err)
		want := slices.Sorted(slices.Values(hostile))
		if got := ids(sessions); !slices.Equal(got, want) {
			t.Fatalf("sessions %q\nwant %q", got, want)
		}
		for _, e := range sessions {
			if e.Meta["id"] != e.Ref.Session {
				t.Fatalf("meta mixed up: %+v", e)
			}
			streams, err := a.StreamsOf(ctx, tenant, e.Ref.Session)
			must(t, err)
			if got := ids(streams); len(got) != 1 || got[0] != e.Ref.Session+"/x}{" {
				t.Fatalf("streams of %q: %q", e.Ref.Session, got)
			}
		}
		// ids that would collide if ':' were a separator do not.
		must(t, a.Track(ctx, RequestRef("acme", "a:b", "c"), nil))
		must(t, a.Track(ctx, RequestRef("acme", "a", "b:c"), nil))
		reqs, err := a.ListRequests(ctx, "acme")
		must(t, err)
		if got := ids(reqs); !slices.Equal(got, []string{"a/b:c", "a:b/c"}) {
			t.Fatalf("requests %q", got)
		}
		// Every key has exactly one hash tag, made of escaped characters only.
		var keys []string
		collect := func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			return iter.Err()
		}
		var mu sync.Mutex
		switch c := rdb.(type) {
		case *redis.ClusterClient:
			must(t, c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
				mu.Lock()
				defer mu.Unlock()
				return collect(ctx, m)
			}))
		case *redis.Client:
			must(t, collect(ctx, c))
		}
		if len(keys) == 0 {
			t.Fatal("no keys found")
		}
		for _, k := range keys {
			if strings.Count(k, "{") != 1 && !strings.HasSuffix(k, ":nodes") && !strings.HasSuffix(k, ":reaper") {
				t.Fatalf("key %q has %d '{'", k, strings.Count(k, "{"))
			}
			if strings.ContainsAny(k, " *|\x00") {
				t.Fatalf("unescaped character in key %q", k)
			}
		}

		for _, bad := range []string{"", strings.Repeat("z", MaxIDLen+1), "\xff\xfe"} {
			if err := a.Track(ctx, SessionRef(tenant, bad), nil); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("session %q: %v, want ErrInvalidID", bad, err)
			}
			if _, err := a.ClaimInFlight(ctx, bad, "s", "r"); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("tenant %q: %v, want ErrInvalidID", bad, err)
			}
			if _, err := a.ClaimLease(ctx, "acme", bad, 0); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("lease %q: %v, want ErrInvalidID", bad, err)
			}
		}
		if err := a.SubscribeResource(ctx, "acme", "s", strings.Repeat("u", MaxURILen+1)); !errors.Is(err, ErrInvalidID) {
			t.Fatalf("long uri: %v", err)
		}
	})
}

// Two tenants with identical session, request and stream ids never see each
// other's entries, claims, leases or notifications.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)

		for _, tn := range []struct {
			tenant string
			n      *node
		}{{"acme", a}, {"globex", bn}} {
			must(t, tn.n.Track(ctx, SessionRef(tn.tenant, "s1"), Meta{"tenant": tn.tenant}))
			must(t, tn.n.Track(ctx, RequestRef(tn.tenant, "s1", "r1"), Meta{"tenant": tn.tenant}))
			must(t, tn.n.Track(ctx, StreamRef(tn.tenant, "s1", "x1"), Meta{"tenant": tn.tenant}))
			must(t, tn.n.SubscribeResource(ctx, tn.tenant, "s1", "res://same"))
		}
		must(t, a.Track(ctx, SessionRef("acme", "s2"), Meta{"tenant": "acme"}))

		for _, tenant := range []string{"acme", "globex"} {
			s, err := a.ListSessions(ctx, tenant)
			must(t, err)
			r, err := a.ListRequests(ctx, tenant)
			must(t, err)
			x, err := a.StreamsOf(ctx, tenant, "s1")
			must(t, err)
			for _, e := range slices.Concat(s, r, x) {
				if e.Meta["tenant"] != tenant || e.Ref.Tenant != tenant {
					t.Fatalf("tenant %s listing leaked %+v", tenant, e)
				}
			}
			l, err := a.ListResourceListeners(ctx, tenant)
			must(t, err)
			if len(l) != 1 || l[0].Tenant != tenant {
				t.Fatalf("tenant %s listeners %+v", tenant, l)
			}
		}
		s, err := bn.ListSessions(ctx, "globex")
		must(t, err)
		if got := ids(s); !slices.Equal(got, []string{"s1"}) {
			t.Fatalf("globex sessions %v", got)
		}

		// Same request id in two tenants: two independent claims.
		ca, err := a.ClaimInFlight(ctx, "acme", "s1", "r1")
		must(t, err)
		cb, err := bn.ClaimInFlight(ctx, "globex", "s1", "r1")
		must(t, err)
		must(t, a.CompleteInFlight(ctx, ca, []byte("acme")))
		must(t, bn.CompleteInFlight(ctx, cb, []byte("globex")))
		res, err := bn.AwaitResult(ctx, "acme", "s1", "r1", time.Second)
		must(t, err)
		if string(res) != "acme" {
			t.Fatalf("acme result %q", res)
		}
		// Same lease name in two tenants: both epoch 1.
		la, err := a.ClaimLease(ctx, "acme", "s1", 0)
		must(t, err)
		lb, err := bn.ClaimLease(ctx, "globex", "s1", 0)
		must(t, err)
		if la.Epoch() != 1 || lb.Epoch() != 1 {
			t.Fatalf("epochs %d %d", la.Epoch(), lb.Epoch())
		}

		// A notification for acme reaches acme's listener only.
		_, err = bn.NotifyResourceUpdated(ctx, "acme", "res://same")
		must(t, err)
		_, err = a.NotifyPromptsListChanged(ctx, "globex") // fence for node b
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "notifications arrive", func() bool {
			return a.rec.has(ResourceUpdated, "s1") && bn.rec.has(PromptsListChanged, "s1")
		})
		for _, n := range bn.rec.notifications() {
			if n.Tenant != "globex" || n.Kind == ResourceUpdated {
				t.Fatalf("globex node got %+v", n)
			}
		}
		for _, n := range a.rec.notifications() {
			if n.Tenant != "acme" {
				t.Fatalf("acme node got %+v", n)
			}
		}
	})
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	for name, cfg := range map[string]*Config{
		"brace prefix":   {Prefix: "a{b}"},
		"space prefix":   {Prefix: "a b"},
		"bad node name":  {NodeName: "a b"},
		"short ttl":      {NodeTTL: time.Millisecond},
		"slow heartbeat": {NodeTTL: time.Second, HeartbeatInterval: time.Second},
	} {
		if _, err := New(rdb, cfg); err == nil {
			t.Errorf("%s: accepted %+v", name, cfg)
		}
	}
	tr, err := New(rdb, nil)
	must(t, err)
	if tr.cfg.Prefix != "tapline:trk" || tr.cfg.HeartbeatInterval != 5*time.Second || !strings.HasPrefix(tr.NodeID(), tr.cfg.NodeName+"-") {
		t.Fatalf("defaults %+v id %s", tr.cfg, tr.NodeID())
	}
	tr.Stop() // never started: a no-op
	if _, err := New(nil, nil); err == nil {
		t.Fatal("nil client accepted")
	}
}

func TestEscapeID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain-id_1.2~": "plain-id_1.2~",
		"a:b":           "a%3Ab",
		"{x}":           "%7Bx%7D",
		"a b*":          "a%20b%2A",
		"100%":          "100%25",
		"é":             "%C3%A9",
	} {
		got, err := escapeID("id", in)
		if err != nil || got != want {
			t.Errorf("escapeID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	// The tag chosen for a generation marker lands in the asked range.
	for _, r := range [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}} {
		tag, ok := tagInRange(r[0], r[1])
		if s := slotOfTag(tag); !ok || s < r[0] || s > r[1] {
			t.Errorf("tag %q slot %d not in %v", tag, s, r)
		}
	}
	if slotOfTag("123456789") != 12739 { // the CRC16 check value from the Redis Cluster spec
		t.Errorf("crc16 slot %d", slotOfTag("123456789"))
	}
}

// The inbox subscription survives a killed connection: a message numbered
// while it was down is reported as a gap, and later messages arrive.
func TestInboxSurvivesReconnect(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		prefix := redistest.Prefix(t)
		name := strings.ReplaceAll(prefix, ":", "-")
		rdbA, rdb := b.NewNamed(t, name), b.New(t)
		a, bn := startNode(t, rdbA, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)
		must(t, a.Track(ctx, SessionRef("acme", "s1"), nil))
		must(t, a.SubscribeResource(ctx, "acme", "s1", "res://x"))
		count := func() int { return len(a.rec.notifications()) }

		_, err := bn.NotifyResourceUpdated(ctx, "acme", "res://x")
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "first message", func() bool { return count() == 1 })

		killed, err := redistest.KillClients(ctx, rdbA, name, "sub=1")
		must(t, err)
		if killed != 1 {
			t.Fatalf("killed %d subscriber connections, want 1", killed)
		}
		must(t, rdb.Incr(ctx, a.k.nodeSeq(a.NodeID())).Err()) // lost while down
		redistest.Eventually(t, 5*time.Second, "gap reported after reconnect", func() bool {
			for _, g := range a.rec.gapList() {
				if g.Reason == GapReconnect || g.Reason == GapMissed {
					return true
				}
			}
			return false
		})
		redistest.Eventually(t, 5*time.Second, "messages flow after reconnect", func() bool {
			_, err := bn.NotifyResourceUpdated(ctx, "acme", "res://x")
			must(t, err)
			return count() >= 2
		})
	})
}

// Redis being away is ErrUnavailable (an api answers 503), not a bare error.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	rdb := redistest.Single(t, srv.URL)
	a := startNode(t, rdb, redistest.Prefix(t), "a")
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer down.Close()
	tr, err := New(down, &Config{NodeName: "x"})
	must(t, err)
	ctx := ctxT(t)
	if err := tr.Start(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("start: %v", err)
	}
	if _, err := tr.ClaimInFlight(ctx, "acme", "s", "r"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim: %v", err)
	}
	if err := tr.Track(ctx, SessionRef("acme", "s"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("track: %v", err)
	}
	if _, err := a.ListSessions(ctx, "acme"); err != nil {
		t.Fatalf("healthy node: %v", err)
	}
}

// Loss that spares the node key (another shard restarted, or a failover lost
// recent writes elsewhere) is caught by the generation markers.
func TestRebuildAfterPartialLoss(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		a := startNode(t, rdb, prefix, "a")
		ctx := ctxT(t)
		must(t, a.Track(ctx, SessionRef("acme", "s1"), nil))
		must(t, a.Track(ctx, StreamRef("acme", "s1", "x"), nil))
		rebuilds := a.rebuilds.Load()

		// Delete every key of this test except the node's own keys.
		deleted := 0
		del := func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				if strings.Contains(iter.Val(), ":node:{") {
					continue
				}
				if err := c.Del(ctx, iter.Val()).Err(); err != nil {
					return err
				}
				deleted++
			}
			return iter.Err()
		}
		switch c := rdb.(type) {
		case *redis.ClusterClient:
			var mu sync.Mutex
			must(t, c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
				mu.Lock()
				defer mu.Unlock()
				return del(ctx, m)
			}))
		case *redis.Client:
			must(t, del(ctx, c))
		}
		if deleted == 0 {
			t.Fatal("nothing deleted")
		}
		redistest.Eventually(t, 3*testHeartbeat, "entries re-asserted", func() bool {
			s, err := a.ListSessions(ctx, "acme")
			must(t, err)
			x, err := a.StreamsOf(ctx, "acme", "s1")
			must(t, err)
			return len(s) == 1 && len(x) == 1
		})
		if a.rebuilds.Load() == rebuilds {
			t.Fatal("no rebuild recorded")
		}
		if b.Cluster && len(a.genTags) != 3 {
			t.Fatalf("generation markers %v, want one per master", a.genTags)
		}
	})
}
