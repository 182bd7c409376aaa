package tracker

import (
	"testing"
	"time"

	"github.com/tapline/tapline/internal/redistest"
)

// A claim held by a live node survives Redis losing its data, whichever of the claims'
// renewal and the heartbeat's rebuild notices the loss first: dropping it would let another
// node claim a request this one still runs.
func TestClaimSurvivesDataLossNoticedByItsRenewal(t *testing.T) {
	rdb := redistest.Single(t, redistest.StartServer(t).URL)
	prefix := redistest.Prefix(t)
	// Claims renew every 100 ms, well before the heartbeat (600 ms) sees the loss.
	a := startNode(t, rdb, prefix, "a", func(c *Config) {
		c.HeartbeatInterval = 600 * time.Millisecond
		c.ClaimTTL = 300 * time.Millisecond
	})
	ctx := ctxT(t)
	claim, err := a.ClaimInFlight(ctx, "acme", "s1", "call-1")
	must(t, err)
	must(t, rdb.FlushAll(ctx).Err())
	redistest.Eventually(t, 5*time.Second, "a rebuild after the loss", func() bool { return a.rebuilds.Load() > 0 })
	time.Sleep(400 * time.Millisecond) // more renewals
	if err := claim.Err(); err != nil {
		t.Fatalf("a live node's claim was lost with Redis's data: %v", err)
	}
	b := startNode(t, rdb, prefix, "b")
	if _, err := b.ClaimInFlight(ctx, "acme", "s1", "call-1"); err == nil {
		t.Fatal("another node claimed call-1 while node a still runs it")
	}
	must(t, a.CompleteInFlight(ctx, claim, []byte("ok")))
	// A claim released is not written back by a renewal.
	again, err := a.ClaimInFlight(ctx, "acme", "s1", "call-2")
	must(t, err)
	must(t, a.ReleaseInFlight(ctx, again))
	time.Sleep(300 * time.Millisecond)
	if n, _ := rdb.Exists(ctx, again.key).Result(); n != 0 {
		t.Fatal("a released claim came back")
	}
}

// A holder superseded while it was paused must not bring its old epoch back after Redis
// loses its data: the current holder keeps the lease, and the epoch never goes backwards.
func TestSupersededLeaseIsNotReassertedAfterDataLoss(t *testing.T) {
	rdb := redistest.Single(t, redistest.StartServer(t).URL)
	prefix := redistest.Prefix(t)
	a, bn := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
	ctx := ctxT(t)
	la, err := a.ClaimLease(ctx, "acme", "sess-1", 0)
	must(t, err)
	a.halt() // paused or cut off: no more renewals
	var lb *Lease
	redistest.Eventually(t, 3*testLeaseTTL, "b takes the lease over", func() bool {
		lb, err = bn.ClaimLease(ctx, "acme", "sess-1", 0)
		return err == nil
	})
	if lb.Epoch() != la.Epoch()+1 {
		t.Fatalf("b got epoch %d after a's %d", lb.Epoch(), la.Epoch())
	}
	must(t, rdb.FlushAll(ctx).Err()) // Redis loses its data
	errA := a.RenewLease(ctx, la)    // a wakes first
	errB := bn.RenewLease(ctx, lb)
	node, epoch, _ := bn.LeaseHolder(ctx, "acme", "sess-1")
	if errA == nil || errB != nil || epoch != lb.Epoch() {
		t.Fatalf("stale a renewed: %v; current b renewed: %v; holder %s at epoch %d, want b at %d", errA, errB, node, epoch, lb.Epoch())
	}
}
