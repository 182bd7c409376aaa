package tenant_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tapline/tapline/internal/tenant"
)

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
