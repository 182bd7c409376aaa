package tenant_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
)

// whileLocked starts each call in a goroutine of wg while tx, which holds its tenant's lock,
// stays open, and returns once every call has either finished or waits, directly or behind
// another waiting call, for a lock tx holds. The waiting calls go on once tx ends; wg.Wait
// waits for them.
func whileLocked(ctx context.Context, t *testing.T, tx pgx.Tx, wg *sync.WaitGroup, calls ...func()) error {
	t.Helper()
	var pid int
	if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		return err
	}
	var finished atomic.Int32
	for _, call := range calls {
		wg.Go(func() {
			call()
			finished.Add(1)
		})
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		// Another connection: a transaction keeps one snapshot of the activity statistics.
		var waiting int
		if err := dbtest.OwnerPool(t).QueryRow(ctx, `with recursive blocked(pid) as (
				select $1::int
				union
				select a.pid from pg_stat_activity a join blocked b on b.pid = any (pg_blocking_pids(a.pid)))
			select count(*) - 1 from blocked`, pid).Scan(&waiting); err != nil {
			return err
		}
		done := int(finished.Load())
		if done+waiting >= len(calls) {
			return nil
		}
		if time.Now().After(deadline) {
			t.Errorf("%d calls finished and %d wait for the lock, want %d in all", done, waiting, len(calls))
			return nil
		}
	}
}

func TestMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("AddListChangeRemove", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		ch, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "New.Person@Example.test", tenant.RoleMember, tenant.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Member.Role != tenant.RoleMember || ch.Member.User.Email != "New.Person@Example.test" || !tenant.ValidID(ch.Member.User.ID) {
			t.Fatalf("added %+v", ch.Member)
		}
		if _, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "new.person@example.test", tenant.RoleViewer, tenant.RoleOwner); !errors.Is(err, tenant.ErrConflict) {
			t.Fatalf("adding twice = %v, want ErrConflict", err)
		}
		page, err := bu.store.ListMembers(ctx, bu.a.Tenant.ID, tenant.ListParams{Limit: 1})
		if err != nil || len(page.Items) != 1 || page.Items[0].User.ID != bu.a.User.ID || page.NextCursor == "" {
			t.Fatalf("first page = %+v, %v", page, err)
		}
		page, err = bu.store.ListMembers(ctx, bu.a.Tenant.ID, tenant.ListParams{Limit: 1, Cursor: page.NextCursor})
		if err != nil || len(page.Items) != 1 || page.Items[0].User.ID != ch.Member.User.ID || page.NextCursor != "" {
			t.Fatalf("second page = %+v, %v", page, err)
		}
		up, err := bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, ch.Member.User.ID, tenant.RoleAdmin, tenant.RoleAdmin)
		if err != nil || up.Member.Role != tenant.RoleAdmin || up.Previous != tenant.RoleMember {
			t.Fatalf("promote = %+v, %v", up, err)
		}
		if _, err := bu.store.RemoveMember(ctx, bu.a.Tenant.ID, ch.Member.User.ID, tenant.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if _, err := bu.store.GetMember(ctx, bu.a.Tenant.ID, ch.Member.User.ID); !errors.Is(err, tenant.ErrNotFound) {
			t.Fatalf("removed member still there: %v", err)
		}
	})
	t.Run("ExistingUserJoinsAnotherTenant", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		ch, err := bu.store.AddMember(ctx, bu.b.Tenant.ID, bu.a.User.Email, tenant.RoleViewer, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Member.User.ID != bu.a.User.ID {
			t.Fatalf("a second user was created for %s", bu.a.User.Email)
		}
		m, err := bu.store.MemberByEmail(ctx, bu.b.Tenant.ID, bu.a.User.Email)
		if err != nil || m.Role != tenant.RoleViewer {
			t.Fatalf("member by email in b = %+v, %v", m, err)
		}
	})
	t.Run("OnlyOwnersTouchOwners", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		if _, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "o2@x.test", tenant.RoleOwner, tenant.RoleAdmin); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Fatalf("admin granting owner = %v", err)
		}
		if _, err := bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, bu.a.User.ID, tenant.RoleViewer, tenant.RoleAdmin); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Fatalf("admin demoting owner = %v", err)
		}
		if _, err := bu.store.RemoveMember(ctx, bu.a.Tenant.ID, bu.a.User.ID, tenant.RoleAdmin); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Fatalf("admin removing owner = %v", err)
		}
		ch, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "m@x.test", tenant.RoleMember, tenant.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, ch.Member.User.ID, tenant.RoleAdmin, tenant.RoleMember); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Fatalf("member promoting to admin = %v", err)
		}
		if _, err := bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, ch.Member.User.ID, tenant.RoleOwner, tenant.RoleOwner); err != nil {
			t.Fatalf("owner granting owner: %v", err)
		}
	})
	t.Run("LastOwnerStays", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		if _, err := bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, bu.a.User.ID, tenant.RoleAdmin, tenant.RoleOwner); !errors.Is(err, tenant.ErrLastOwner) {
			t.Fatalf("demoting the last owner = %v", err)
		}
		if _, err := bu.store.RemoveMember(ctx, bu.a.Tenant.ID, bu.a.User.ID, tenant.RoleOwner); !errors.Is(err, tenant.ErrLastOwner) {
			t.Fatalf("removing the last owner = %v", err)
		}
	})
	t.Run("TwoOwnersDemotingEachOtherLeaveOne", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		second, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "o2@x.test", tenant.RoleOwner, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []string{bu.a.User.ID, second.Member.User.ID} {
			wg.Go(func() {
				_, errs[i] = bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, id, tenant.RoleMember, tenant.RoleOwner)
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, tenant.ErrLastOwner):
				t.Fatal(err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d demotions succeeded, want exactly 1 (%v)", ok, errs)
		}
	})
	t.Run("APrincipalDemotedWhileItWaitsActsWithWhatIsLeft", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		// A pool of its own, with a connection for every call that waits at once.
		cfg, err := pgxpool.ParseConfig(dbtest.SharedURL(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 8
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		bu.store = tenant.NewStore(pool)
		second, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "o2@x.test", tenant.RoleOwner, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		uid := second.Member.User.ID
		key, _, err := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleOwner, CreatedByUser: uid})
		if err != nil {
			t.Fatal(err)
		}
		c, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "c@x.test", tenant.RoleMember, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		viaKey := tenant.Actor{Role: tenant.RoleOwner, UserID: uid, KeyID: key.ID}
		viaJWT := tenant.Actor{Role: tenant.RoleOwner, UserID: uid}
		// While the first owner demotes the second to admin (which revokes the second's owner
		// key), requests the second owner authenticated before that ask for owner rights;
		// each waits for the tenant's lock, if it waits at all, and must then find the
		// demotion.
		var promoteErr, addErr, removeErr, keyErr error
		var made *tenant.APIKey
		var wg sync.WaitGroup
		_, err = bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, uid, tenant.RoleAdmin, tenant.RoleOwner,
			func(ctx context.Context, tx pgx.Tx, _ *tenant.MemberChange) error {
				return whileLocked(ctx, t, tx, &wg,
					func() {
						_, promoteErr = bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, c.Member.User.ID, tenant.RoleOwner, viaKey)
					},
					func() { _, addErr = bu.store.AddMember(ctx, bu.a.Tenant.ID, "o3@x.test", tenant.RoleOwner, viaJWT) },
					func() { _, removeErr = bu.store.RemoveMember(ctx, bu.a.Tenant.ID, bu.a.User.ID, viaJWT) },
					func() {
						made, _, keyErr = bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{
							Role: tenant.RoleOwner, CreatedByUser: uid, CreatedByKey: key.ID, By: viaKey,
						})
					})
			})
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		for name, err := range map[string]error{"promoting to owner": promoteErr, "adding an owner": addErr, "removing the other owner": removeErr, "minting an owner key": keyErr} {
			if !errors.Is(err, tenant.ErrRoleTooHigh) {
				t.Errorf("the demoted owner %s after the demotion = %v, want ErrRoleTooHigh", name, err)
			}
		}
		if made != nil {
			if _, err := bu.store.ActiveAPIKey(ctx, bu.a.Tenant.ID, made.ID); err == nil {
				t.Errorf("the demoted owner's new owner key %s is active", made.ID)
			}
		}
		page, err := bu.store.ListMembers(ctx, bu.a.Tenant.ID, tenant.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Items {
			if m.Role == tenant.RoleOwner && m.User.ID != bu.a.User.ID {
				t.Errorf("%s is an owner", m.User.Email)
			}
		}
		if len(page.Items) != 3 {
			t.Errorf("tenant a has %d members, want 3", len(page.Items))
		}
		// Tenant b is untouched, and an actor of tenant a has no rights there.
		if _, err := bu.store.AddMember(ctx, bu.b.Tenant.ID, "x@x.test", tenant.RoleViewer, tenant.Actor{Role: tenant.RoleOwner, UserID: bu.a.User.ID}); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("tenant a's owner adding to tenant b = %v, want ErrRoleTooHigh", err)
		}
		if _, err := bu.store.AddMember(ctx, bu.b.Tenant.ID, "x@x.test", tenant.RoleViewer, tenant.Actor{Role: tenant.RoleOwner, KeyID: bu.a.Key.ID}); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("tenant a's owner key adding to tenant b = %v, want ErrRoleTooHigh", err)
		}
		if _, err := bu.store.AddMember(ctx, bu.b.Tenant.ID, "x@x.test", tenant.RoleOwner, tenant.Actor{Role: tenant.RoleOwner, KeyID: bu.b.Key.ID}); err != nil {
			t.Errorf("tenant b's owner key adding an owner: %v", err)
		}
	})
	t.Run("RevokingAKeyWhileItsCreatorIsRemovedDoesNotDeadlock", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		ch, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "leaver@x.test", tenant.RoleAdmin, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		uid := ch.Member.User.ID
		key, _, err := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleMember, CreatedByUser: uid})
		if err != nil {
			t.Fatal(err)
		}
		// The removal holds the tenant's lock and is about to revoke the leaver's keys when
		// an admin revokes one of them. Both must succeed; a deadlock would fail one.
		var revokeErr error
		var wg sync.WaitGroup
		gone, err := bu.store.RemoveMember(ctx, bu.a.Tenant.ID, uid, tenant.GranterFunc(func(ctx context.Context, tx pgx.Tx) tenant.Role {
			if err := whileLocked(ctx, t, tx, &wg, func() { _, revokeErr = bu.store.RevokeAPIKey(ctx, bu.a.Tenant.ID, key.ID) }); err != nil {
				t.Error(err)
			}
			return tenant.RoleOwner
		}))
		wg.Wait()
		if err != nil || revokeErr != nil {
			t.Fatalf("removal = %v, revocation = %v; want both done", err, revokeErr)
		}
		if len(gone.RevokedKeys) != 1 || gone.RevokedKeys[0] != key.ID {
			t.Errorf("the removal revoked %v, want %s", gone.RevokedKeys, key.ID)
		}
		if _, err := bu.store.ActiveAPIKey(ctx, bu.a.Tenant.ID, key.ID); !errors.Is(err, tenant.ErrInvalidKey) {
			t.Errorf("the key is still active: %v", err)
		}
		if _, err := bu.store.VerifyAPIKey(ctx, bu.b.Secret); err != nil {
			t.Errorf("tenant b's key: %v", err)
		}
	})
	t.Run("KeysNeverOutrankTheirCreator", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		ch, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "adm@x.test", tenant.RoleAdmin, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		uid := ch.Member.User.ID
		adminKey, _, _ := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleAdmin, CreatedByUser: uid})
		viewerKey, _, _ := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleViewer, CreatedByUser: uid})
		down, err := bu.store.ChangeMemberRole(ctx, bu.a.Tenant.ID, uid, tenant.RoleMember, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		if len(down.RevokedKeys) != 1 || down.RevokedKeys[0] != adminKey.ID {
			t.Fatalf("demotion revoked %v, want only the admin key %s", down.RevokedKeys, adminKey.ID)
		}
		gone, err := bu.store.RemoveMember(ctx, bu.a.Tenant.ID, uid, tenant.RoleOwner)
		if err != nil {
			t.Fatal(err)
		}
		if len(gone.RevokedKeys) != 1 || gone.RevokedKeys[0] != viewerKey.ID {
			t.Fatalf("removal revoked %v, want the viewer key %s", gone.RevokedKeys, viewerKey.ID)
		}
		if _, err := bu.store.ActiveAPIKey(ctx, bu.a.Tenant.ID, viewerKey.ID); !errors.Is(err, tenant.ErrInvalidKey) {
			t.Fatalf("removed member's key still active: %v", err)
		}
		if _, err := bu.store.ActiveAPIKey(ctx, bu.a.Tenant.ID, bu.a.Key.ID); err != nil {
			t.Fatalf("owner's key: %v", err)
		}
	})
	t.Run("InvalidInputNamesField", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		var ve *tenant.ValidationError
		if _, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "not an email", tenant.RoleViewer, tenant.RoleOwner); !errors.As(err, &ve) || ve.Field != "email" {
			t.Fatalf("bad email = %v", err)
		}
		if _, err := bu.store.AddMember(ctx, bu.a.Tenant.ID, "a@b.test", "root", tenant.RoleOwner); !errors.As(err, &ve) || ve.Field != "role" {
			t.Fatalf("bad role = %v", err)
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		if _, err := bu.store.ChangeMemberRole(ctx, bu.b.Tenant.ID, bu.a.User.ID, tenant.RoleViewer, tenant.RoleOwner); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("change other tenant's member = %v, want ErrNotFound", err)
		}
		if _, err := bu.store.RemoveMember(ctx, bu.b.Tenant.ID, bu.a.User.ID, tenant.RoleOwner); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("remove other tenant's member = %v, want ErrNotFound", err)
		}
		if _, err := bu.store.MemberByEmail(ctx, bu.b.Tenant.ID, bu.a.User.Email); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("member by email across tenants = %v, want ErrNotFound", err)
		}
		if _, err := bu.store.ActiveAPIKey(ctx, bu.b.Tenant.ID, bu.a.Key.ID); !errors.Is(err, tenant.ErrInvalidKey) {
			t.Errorf("active key across tenants = %v, want ErrInvalidKey", err)
		}
		page, err := bu.store.ListMembers(ctx, bu.b.Tenant.ID, tenant.ListParams{})
		if err != nil || len(page.Items) != 1 || page.Items[0].User.ID != bu.b.User.ID {
			t.Fatalf("tenant b's members = %+v, %v", page, err)
		}
		if m, err := bu.store.GetMember(ctx, bu.a.Tenant.ID, bu.a.User.ID); err != nil || m.Role != tenant.RoleOwner {
			t.Fatalf("tenant a's owner changed: %+v, %v", m, err)
		}
	})
}

func TestQuotas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	defaults := tenant.Quotas{MaxLiveSessions: 50, EventRetentionDays: 30}
	bu := setup(t)
	if q, err := bu.store.Quotas(ctx, bu.a.Tenant.ID, defaults); err != nil || q != defaults {
		t.Fatalf("fresh tenant quotas = %+v, %v", q, err)
	}
	five, forever := 5, 0
	if err := bu.store.SetQuotas(ctx, bu.a.Tenant.ID, tenant.QuotaOverrides{MaxLiveSessions: &five, EventRetentionDays: &forever}); err != nil {
		t.Fatal(err)
	}
	if q, _ := bu.store.Quotas(ctx, bu.a.Tenant.ID, defaults); q != (tenant.Quotas{MaxLiveSessions: 5, EventRetentionDays: 0}) {
		t.Fatalf("overridden quotas = %+v", q)
	}
	seven := 7
	_ = bu.store.SetQuotas(ctx, bu.a.Tenant.ID, tenant.QuotaOverrides{EventRetentionDays: &seven})
	if q, _ := bu.store.Quotas(ctx, bu.a.Tenant.ID, defaults); q != (tenant.Quotas{MaxLiveSessions: 5, EventRetentionDays: 7}) {
		t.Fatalf("partly overridden quotas = %+v", q)
	}
	var ve *tenant.ValidationError
	zero := 0
	if err := bu.store.SetQuotas(ctx, bu.a.Tenant.ID, tenant.QuotaOverrides{MaxLiveSessions: &zero}); !errors.As(err, &ve) {
		t.Fatalf("zero live sessions = %v", err)
	}
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		if q, _ := bu.store.Quotas(ctx, bu.b.Tenant.ID, defaults); q != defaults {
			t.Fatalf("tenant b's quotas changed with a's: %+v", q)
		}
		// Reset puts a back to the defaults; b is untouched either way.
		if err := bu.store.SetQuotas(ctx, bu.a.Tenant.ID, tenant.QuotaOverrides{Reset: true}); err != nil {
			t.Fatal(err)
		}
		if q, _ := bu.store.Quotas(ctx, bu.a.Tenant.ID, defaults); q != defaults {
			t.Fatalf("after reset = %+v", q)
		}
		if err := bu.store.SetQuotas(ctx, "0192f0c4-aaaa-7bbb-8ccc-000000000009", tenant.QuotaOverrides{Reset: true}); !errors.Is(err, tenant.ErrNotFound) {
			t.Fatalf("unknown tenant = %v", err)
		}
	})
}
