package tenant_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
)

// TestTenantIsolation walks every method of the Store that reads or changes a tenant's rows
// as tenant b against tenant a's: a's members, keys and quotas are ErrNotFound (or
// ErrInvalidKey) to b, b's lists hold none of them, a principal of a's has no rights in b,
// and a user who is a member of both (users are shared) loses nothing in a when b demotes or
// removes them. Only b's auth stamp moves with b's changes.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := tenant.NewStore(dbtest.Pool(t))
	var mu sync.Mutex
	var changed []string
	store.OnAuthChange(func(_ context.Context, tenantID string, _ int64) {
		mu.Lock()
		changed = append(changed, tenantID)
		mu.Unlock()
	})
	suffix := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	mk := func(name string) *tenant.BootstrapResult {
		res, err := store.Bootstrap(ctx, tenant.BootstrapParams{TenantName: name + "-" + suffix, Email: name + "-owner@" + strings.ToLower(strings.ReplaceAll(suffix, "/", ".")) + ".test"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := mk("a"), mk("b")
	A, B := a.Tenant.ID, b.Tenant.ID
	// a has a viewer and a second key, created by its owner.
	viewer, err := store.AddMember(ctx, A, "viewer-"+a.User.Email, tenant.RoleViewer, tenant.RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	keyA, secretA, err := store.CreateAPIKey(ctx, A, tenant.CreateAPIKeyParams{Name: "a's", Role: tenant.RoleAdmin, CreatedByUser: a.User.ID})
	if err != nil {
		t.Fatal(err)
	}
	defaults := tenant.Quotas{MaxLiveSessions: 50, EventRetentionDays: 30}
	five := 5
	if err := store.SetQuotas(ctx, A, tenant.QuotaOverrides{MaxLiveSessions: &five}); err != nil {
		t.Fatal(err)
	}
	_, stampA, err := store.VerifyAPIKeyStamped(ctx, a.Secret)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	changed = nil // from here on, only b changes anything
	mu.Unlock()
	ownerB := tenant.Actor{Role: tenant.RoleOwner, KeyID: b.Key.ID}

	// a's objects named in b: not found.
	notFound := map[string]func() error{
		"GetMember":     func() error { _, err := store.GetMember(ctx, B, viewer.Member.User.ID); return err },
		"MemberByEmail": func() error { _, err := store.MemberByEmail(ctx, B, viewer.Member.User.Email); return err },
		"ChangeMemberRole": func() error {
			_, err := store.ChangeMemberRole(ctx, B, viewer.Member.User.ID, tenant.RoleAdmin, ownerB)
			return err
		},
		"RemoveMember":   func() error { _, err := store.RemoveMember(ctx, B, viewer.Member.User.ID, ownerB); return err },
		"GetAPIKey":      func() error { _, err := store.GetAPIKey(ctx, B, keyA.ID); return err },
		"RevokeAPIKey":   func() error { _, err := store.RevokeAPIKey(ctx, B, keyA.ID); return err },
		"RevokeAPIKeyAs": func() error { _, err := store.RevokeAPIKeyAs(ctx, B, keyA.ID, ownerB); return err },
		// a's owner is not b's member either, until the shared-user case below.
		"GetMember/owner": func() error { _, err := store.GetMember(ctx, B, a.User.ID); return err },
		"ChangeMemberRole/owner": func() error {
			_, err := store.ChangeMemberRole(ctx, B, a.User.ID, tenant.RoleViewer, tenant.RoleOwner)
			return err
		},
	}
	for name, do := range notFound {
		if err := do(); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("%s of a's object in b = %v, want ErrNotFound", name, err)
		}
	}
	if _, err := store.ActiveAPIKey(ctx, B, keyA.ID); !errors.Is(err, tenant.ErrInvalidKey) {
		t.Errorf("ActiveAPIKey of a's key in b = %v, want ErrInvalidKey", err)
	}

	// a's principals have no rights in b.
	for name, by := range map[string]tenant.Actor{
		"a's key":   {Role: tenant.RoleOwner, KeyID: a.Key.ID},
		"a's owner": {Role: tenant.RoleOwner, UserID: a.User.ID},
	} {
		if _, err := store.AddMember(ctx, B, "new@b.test", tenant.RoleViewer, by); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("AddMember in b by %s = %v, want ErrRoleTooHigh", name, err)
		}
		if _, err := store.ChangeMemberRole(ctx, B, b.User.ID, tenant.RoleViewer, by); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("ChangeMemberRole in b by %s = %v, want ErrRoleTooHigh", name, err)
		}
		if _, err := store.RemoveMember(ctx, B, b.User.ID, by); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("RemoveMember in b by %s = %v, want ErrRoleTooHigh", name, err)
		}
		if _, _, err := store.CreateAPIKey(ctx, B, tenant.CreateAPIKeyParams{Role: tenant.RoleViewer, By: by}); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("CreateAPIKey in b by %s = %v, want ErrRoleTooHigh", name, err)
		}
		if _, err := store.RevokeAPIKeyAs(ctx, B, b.Key.ID, by); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Errorf("RevokeAPIKeyAs in b by %s = %v, want ErrRoleTooHigh", name, err)
		}
	}

	// b's writes: its own rows, and none of a's quotas.
	if _, _, err := store.CreateAPIKey(ctx, B, tenant.CreateAPIKeyParams{Name: "b's", Role: tenant.RoleViewer, By: ownerB}); err != nil {
		t.Fatal(err)
	}
	seven := 7
	if err := store.SetQuotas(ctx, B, tenant.QuotaOverrides{MaxLiveSessions: &seven, EventRetentionDays: &seven}); err != nil {
		t.Fatal(err)
	}
	if q, err := store.Quotas(ctx, A, defaults); err != nil || q != (tenant.Quotas{MaxLiveSessions: 5, EventRetentionDays: 30}) {
		t.Errorf("a's quotas after b's change = %+v, %v", q, err)
	}
	if q, err := store.Quotas(ctx, B, defaults); err != nil || q != (tenant.Quotas{MaxLiveSessions: 7, EventRetentionDays: 7}) {
		t.Errorf("b's quotas = %+v, %v", q, err)
	}
	if tn, err := store.GetTenant(ctx, B); err != nil || tn.ID != B {
		t.Errorf("GetTenant(b) = %+v, %v", tn, err)
	}

	// A user in both tenants: b adds a's owner, mints a key for them, demotes and removes
	// them; a's membership and a's keys by that user are untouched.
	shared, err := store.AddMember(ctx, B, a.User.Email, tenant.RoleAdmin, ownerB)
	if err != nil || shared.Member.User.ID != a.User.ID || shared.Member.TenantID != B || shared.Member.Role != tenant.RoleAdmin {
		t.Fatalf("b adds a's owner = %+v, %v", shared, err)
	}
	keyB, _, err := store.CreateAPIKey(ctx, B, tenant.CreateAPIKeyParams{Role: tenant.RoleAdmin, CreatedByUser: a.User.ID, By: tenant.Actor{Role: tenant.RoleAdmin, UserID: a.User.ID}})
	if err != nil {
		t.Fatal(err)
	}
	demoted, err := store.ChangeMemberRole(ctx, B, a.User.ID, tenant.RoleViewer, ownerB)
	if err != nil || !slices.Equal(demoted.RevokedKeys, []string{keyB.ID}) {
		t.Fatalf("b demotes the shared user = %+v, %v; want only b's key revoked", demoted, err)
	}
	removed, err := store.RemoveMember(ctx, B, a.User.ID, ownerB)
	if err != nil || len(removed.RevokedKeys) != 0 {
		t.Fatalf("b removes the shared user = %+v, %v", removed, err)
	}
	if m, err := store.GetMember(ctx, A, a.User.ID); err != nil || m.Role != tenant.RoleOwner {
		t.Errorf("a's owner after b's changes = %+v, %v", m, err)
	}
	for _, secret := range []string{a.Secret, secretA} {
		if k, stamp, err := store.VerifyAPIKeyStamped(ctx, secret); err != nil || k.TenantID != A || stamp != stampA {
			t.Errorf("a's key after b's changes = %+v, stamp %d (was %d), %v", k, stamp, stampA, err)
		}
	}
	if k, err := store.VerifyAPIKey(ctx, b.Secret); err != nil || k.TenantID != B {
		t.Errorf("b's key = %+v, %v", k, err)
	}

	// b's lists hold b's rows only; a's lists are a's, unchanged.
	membersB, err := store.ListMembers(ctx, B, tenant.ListParams{Limit: 200})
	if err != nil || len(membersB.Items) != 1 || membersB.Items[0].User.ID != b.User.ID {
		t.Errorf("b's members = %+v, %v", membersB, err)
	}
	keysB, err := store.ListAPIKeys(ctx, B, tenant.ListParams{Limit: 200})
	if err != nil || len(keysB.Items) != 3 {
		t.Errorf("b's keys = %+v, %v", keysB, err)
	}
	for _, k := range keysB.Items {
		if k.TenantID != B || k.ID == keyA.ID || k.ID == a.Key.ID {
			t.Errorf("b lists key %+v", k)
		}
	}
	membersA, err := store.ListMembers(ctx, A, tenant.ListParams{Limit: 200})
	if err != nil || len(membersA.Items) != 2 {
		t.Errorf("a's members = %+v, %v", membersA, err)
	}
	keysA, err := store.ListAPIKeys(ctx, A, tenant.ListParams{Limit: 200})
	if err != nil || len(keysA.Items) != 2 || slices.ContainsFunc(keysA.Items, func(k tenant.APIKey) bool { return k.RevokedAt != nil }) {
		t.Errorf("a's keys = %+v, %v", keysA, err)
	}

	// Only b's changes were told, as b's.
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(changed, A) || !slices.Contains(changed, B) {
		t.Errorf("auth changes told for %v; want b's only (a is %s)", changed, A)
	}
}
