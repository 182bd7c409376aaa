package auth_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/redistest"
	"github.com/tapline/tapline/internal/tenant"
)

// countingKeys is the real store, counting the verifications that reach PostgreSQL.
type countingKeys struct {
	*tenant.Store
	n atomic.Int64
}

func (c *countingKeys) VerifyAPIKeyStamped(ctx context.Context, token string) (*tenant.APIKey, int64, error) {
	c.n.Add(1)
	return c.Store.VerifyAPIKeyStamped(ctx, token)
}

// Two api pods cache verified keys. A key is verified once per pod while nothing changes;
// revoking it (on any pod), removing its creator from the tenant or expiring it is seen at
// once by both, and only the tenant concerned loses its cached keys. Redis losing the stamps
// sends requests back to PostgreSQL.
func TestKeyCacheFollowsRevocations(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, be redistest.Backend) {
		ctx := context.Background()
		rdb := be.New(t)
		prefix := redistest.Prefix(t)
		stamps := auth.NewRedisStamps(rdb, prefix, nil)
		store := tenant.NewStore(dbtest.Pool(t))
		store.OnAuthChange(stamps.Publish)
		mk := func(n string) *tenant.BootstrapResult {
			res, err := store.Bootstrap(ctx, tenant.BootstrapParams{TenantName: n + "-" + t.Name() + "-" + time.Now().Format("150405.000000000"), Email: n + "@example.test"})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		a, b := mk("a"), mk("b")
		pod1, pod2 := &countingKeys{Store: store}, &countingKeys{Store: store}
		auth1 := auth.NewAuthenticator(store, nil, auth.WithKeyCache(pod1, stamps))
		auth2 := auth.NewAuthenticator(store, nil, auth.WithKeyCache(pod2, stamps))

		accepts := func(a *auth.Authenticator, token, tenantID string) {
			t.Helper()
			p, err := a.Authenticate(ctx, token)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if p.TenantID != tenantID {
				t.Fatalf("principal of tenant %s, want %s", p.TenantID, tenantID)
			}
		}
		refuses := func(a *auth.Authenticator, token string) {
			t.Helper()
			if _, err := a.Authenticate(ctx, token); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("accepted, or refused for the wrong reason: %v", err)
			}
		}
		verifications := func(c *countingKeys, want int64) {
			t.Helper()
			if got := c.n.Swap(0); got != want {
				t.Fatalf("%d verifications reached the database, want %d", got, want)
			}
		}

		for range 3 {
			accepts(auth1, a.Secret, a.Tenant.ID)
			accepts(auth2, a.Secret, a.Tenant.ID)
			accepts(auth2, b.Secret, b.Tenant.ID)
		}
		verifications(pod1, 1)
		verifications(pod2, 2)

		// A second key of a, revoked on pod 1: both pods refuse it at once, a's other key is
		// verified again, b's stays cached.
		key, secret, err := store.CreateAPIKey(ctx, a.Tenant.ID, tenant.CreateAPIKeyParams{Name: "ci", Role: tenant.RoleMember, CreatedByUser: a.User.ID})
		if err != nil {
			t.Fatal(err)
		}
		accepts(auth1, secret, a.Tenant.ID)
		accepts(auth2, secret, a.Tenant.ID)
		verifications(pod1, 1)
		verifications(pod2, 1)
		if _, err := store.RevokeAPIKey(ctx, a.Tenant.ID, key.ID); err != nil {
			t.Fatal(err)
		}
		refuses(auth1, secret)
		refuses(auth2, secret)
		refuses(auth2, secret)
		accepts(auth2, a.Secret, a.Tenant.ID)
		accepts(auth2, b.Secret, b.Tenant.ID)
		verifications(pod1, 1)
		verifications(pod2, 3)

		// Removing a member revokes the keys they made.
		m, err := store.AddMember(ctx, a.Tenant.ID, "leaver@example.test", tenant.RoleMember, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		_, leaverSecret, err := store.CreateAPIKey(ctx, a.Tenant.ID, tenant.CreateAPIKeyParams{Name: "leaver", Role: tenant.RoleMember, CreatedByUser: m.Member.User.ID})
		if err != nil {
			t.Fatal(err)
		}
		accepts(auth2, leaverSecret, a.Tenant.ID)
		accepts(auth2, leaverSecret, a.Tenant.ID)
		if _, err := store.RemoveMember(ctx, a.Tenant.ID, m.Member.User.ID, tenant.RoleOwner); err != nil {
			t.Fatal(err)
		}
		refuses(auth2, leaverSecret)
		pod2.n.Store(0)

		// Redis loses b's stamp: the next request is verified, and the stamp written back.
		if err := rdb.Del(ctx, prefix+":{"+b.Tenant.ID+"}:authstamp").Err(); err != nil {
			t.Fatal(err)
		}
		accepts(auth2, b.Secret, b.Tenant.ID)
		accepts(auth2, b.Secret, b.Tenant.ID)
		verifications(pod2, 1)

		// A key's own expiry needs no stamp to be honoured.
		soon := time.Now().Add(1500 * time.Millisecond)
		_, short, err := store.CreateAPIKey(ctx, b.Tenant.ID, tenant.CreateAPIKeyParams{Name: "short", Role: tenant.RoleViewer, CreatedByUser: b.User.ID, ExpiresAt: &soon})
		if err != nil {
			t.Fatal(err)
		}
		accepts(auth2, short, b.Tenant.ID)
		time.Sleep(time.Until(soon) + 50*time.Millisecond)
		refuses(auth2, short)
	})
}

// A stamp only goes up: a pod that verified a key before a revocation and writes the stamp
// it read afterwards does not undo the revocation's raise.
func TestAuthStampsNeverGoBack(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, be redistest.Backend) {
		ctx := context.Background()
		stamps := auth.NewRedisStamps(be.New(t), redistest.Prefix(t), nil)
		const tenantID = "8d8c8f0e-4c4e-4a55-9a57-3e0b7c1d2a11"
		if _, ok, err := stamps.AuthStamp(ctx, tenantID); err != nil || ok {
			t.Fatalf("a stamp before any was written: %v %v", ok, err)
		}
		for _, raise := range []int64{3, 7, 5, 0} {
			if err := stamps.RaiseAuthStamp(ctx, tenantID, raise); err != nil {
				t.Fatal(err)
			}
		}
		if got, ok, err := stamps.AuthStamp(ctx, tenantID); err != nil || !ok || got != 7 {
			t.Fatalf("stamp %d %v %v, want 7", got, ok, err)
		}
	})
}
