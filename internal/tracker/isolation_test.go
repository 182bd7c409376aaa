package tracker

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/redistest"
)

// TestTenantIsolationOfEveryOperation covers what TestTenantIsolation leaves out: with the
// same session, request, stream and lease ids in two tenants, reading, changing, removing,
// releasing or notifying one tenant's entry never reaches the other's, and ids that would
// meet if tenant and session were joined by ':' do not.
func TestTenantIsolationOfEveryOperation(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		rdb := backendClient(t, b)
		prefix := redistest.Prefix(t)
		na, nb := startNode(t, rdb, prefix, "a"), startNode(t, rdb, prefix, "b")
		ctx := ctxT(t)
		const uri = "res://same"
		for _, tn := range []struct {
			tenant string
			n      *node
		}{{"acme", na}, {"globex", nb}} {
			must(t, tn.n.Track(ctx, SessionRef(tn.tenant, "s1"), Meta{"tenant": tn.tenant}))
			must(t, tn.n.Track(ctx, RequestRef(tn.tenant, "s1", "e1"), Meta{"tenant": tn.tenant}))
			must(t, tn.n.Track(ctx, StreamRef(tn.tenant, "s1", "x1"), Meta{"tenant": tn.tenant}))
			must(t, tn.n.SubscribeResource(ctx, tn.tenant, "s1", uri))
		}
		requireGlobex := func(what string) {
			t.Helper()
			for _, ref := range []Ref{SessionRef("globex", "s1"), RequestRef("globex", "s1", "e1"), StreamRef("globex", "s1", "x1")} {
				e, err := nb.Get(ctx, ref)
				if err != nil || e.Meta["tenant"] != "globex" || e.NodeID != nb.NodeID() {
					t.Fatalf("after %s, globex's %+v = %+v, %v", what, ref, e, err)
				}
			}
			l, err := nb.ListResourceListeners(ctx, "globex")
			if err != nil || len(l) != 1 || l[0].Tenant != "globex" {
				t.Fatalf("after %s, globex's listeners = %+v, %v", what, l, err)
			}
		}

		// Get, Owner, UpdateMeta: each tenant's own.
		if o, err := na.Owner(ctx, SessionRef("globex", "s1")); err != nil || o.NodeID != nb.NodeID() {
			t.Fatalf("owner of globex's s1 = %+v, %v", o, err)
		}
		if _, err := na.UpdateMeta(ctx, SessionRef("acme", "s1"), Meta{"tenant": "acme", "changed": "yes"}); err != nil {
			t.Fatal(err)
		}
		requireGlobex("acme's UpdateMeta")
		if _, err := nb.Get(ctx, SessionRef("initech", "s1")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a tenant without s1 gets %v, want ErrNotFound", err)
		}

		// Notifications for acme reach acme's node only.
		_, err := nb.NotifyToolsListChanged(ctx, "acme")
		must(t, err)
		_, err = nb.NotifyResourcesListChanged(ctx, "acme")
		must(t, err)
		must(t, nb.NotifyElicitationComplete(ctx, "acme", "s1", "e1"))
		_, err = na.NotifyPromptsListChanged(ctx, "globex") // the fence for node b
		must(t, err)
		redistest.Eventually(t, 5*time.Second, "notifications arrive", func() bool {
			return na.rec.has(ElicitationComplete, "s1") && na.rec.has(ToolsListChanged, "s1") &&
				na.rec.has(ResourcesListChanged, "s1") && nb.rec.has(PromptsListChanged, "s1")
		})
		for _, n := range nb.rec.notifications() {
			if n.Tenant != "globex" || n.Kind != PromptsListChanged {
				t.Fatalf("globex's node got %+v", n)
			}
		}
		for _, n := range na.rec.notifications() {
			if n.Tenant != "acme" {
				t.Fatalf("acme's node got %+v", n)
			}
		}

		// Untrack and UnsubscribeResource of acme's entries leave globex's.
		must(t, na.Untrack(ctx, StreamRef("acme", "s1", "x1")))
		must(t, na.Untrack(ctx, RequestRef("acme", "s1", "e1")))
		must(t, na.UnsubscribeResource(ctx, "acme", "s1", uri))
		must(t, na.Untrack(ctx, SessionRef("acme", "s1")))
		requireGlobex("acme's Untrack and UnsubscribeResource")
		if s, err := na.StreamsOf(ctx, "acme", "s1"); err != nil || len(s) != 0 {
			t.Fatalf("acme's streams = %+v, %v", s, err)
		}

		// In-flight claims: acme's claim, renewed, released or failed and reclaimed, is
		// acme's; globex's claim of the same ids stays held, and its result is its own.
		ca, err := na.ClaimInFlight(ctx, "acme", "s1", "r1")
		must(t, err)
		cb, err := nb.ClaimInFlight(ctx, "globex", "s1", "r1")
		must(t, err)
		must(t, na.RenewInFlight(ctx, ca))
		must(t, na.ReleaseInFlight(ctx, ca))
		if _, err := nb.ClaimInFlight(ctx, "globex", "s1", "r1"); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("globex's claim after acme's release = %v, want ErrDuplicate", err)
		}
		if _, err := na.AwaitResult(ctx, "acme", "s1", "r1", 10*time.Millisecond); !errors.Is(err, ErrNotFound) {
			t.Fatalf("acme's released claim = %v, want ErrNotFound", err)
		}
		must(t, nb.CompleteInFlight(ctx, cb, []byte("globex failed")))
		if _, err := na.ReclaimInFlight(ctx, "acme", "s1", "r1", []byte("globex failed")); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("acme reclaims with globex's result = %v, want ErrLeaseLost", err)
		}
		if res, err := na.AwaitResult(ctx, "globex", "s1", "r1", time.Second); err != nil || string(res) != "globex failed" {
			t.Fatalf("globex's result = %q, %v", res, err)
		}

		// Leases: same name, two tenants, two holders; renewing and releasing acme's
		// leaves globex's.
		la, err := na.ClaimLease(ctx, "acme", "s1", 0)
		must(t, err)
		lb, err := nb.ClaimLease(ctx, "globex", "s1", 0)
		must(t, err)
		must(t, na.RenewLease(ctx, la))
		must(t, na.ReleaseLease(ctx, la))
		if node, epoch, err := na.LeaseHolder(ctx, "globex", "s1"); err != nil || node != nb.NodeID() || epoch != lb.Epoch() {
			t.Fatalf("globex's lease after acme's release = %s %d, %v", node, epoch, err)
		}
		if _, _, err := na.LeaseHolder(ctx, "acme", "s1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("acme's released lease = %v, want ErrNotFound", err)
		}
		requireGlobex("acme's claims and leases")

		// Tenant "t" with session "a:b" and tenant "t:a" with session "b" are apart.
		for _, tn := range [][2]string{{"t", "a:b"}, {"t:a", "b"}} {
			must(t, na.Track(ctx, StreamRef(tn[0], tn[1], "x"), Meta{"tenant": tn[0]}))
			l, err := na.ClaimLease(ctx, tn[0], tn[1], 0)
			must(t, err)
			if l.Epoch() != 1 {
				t.Fatalf("lease of %q/%q has epoch %d, want 1", tn[0], tn[1], l.Epoch())
			}
			c, err := na.ClaimInFlight(ctx, tn[0], tn[1], "r")
			must(t, err)
			must(t, na.CompleteInFlight(ctx, c, []byte(tn[0])))
		}
		for _, tn := range [][2]string{{"t", "a:b"}, {"t:a", "b"}} {
			s, err := na.StreamsOf(ctx, tn[0], tn[1])
			if err != nil || len(s) != 1 || s[0].Meta["tenant"] != tn[0] {
				t.Fatalf("streams of %q/%q = %+v, %v", tn[0], tn[1], s, err)
			}
			if res, err := na.AwaitResult(ctx, tn[0], tn[1], "r", time.Second); err != nil || string(res) != tn[0] {
				t.Fatalf("result of %q/%q = %q, %v", tn[0], tn[1], res, err)
			}
		}
		if s, err := na.ListSessions(ctx, "t"); err != nil || slices.ContainsFunc(s, func(e Entry) bool { return e.Ref.Tenant != "t" }) {
			t.Fatalf("tenant t's sessions = %+v, %v", s, err)
		}
	})
}
