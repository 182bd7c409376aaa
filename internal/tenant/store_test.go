package tenant_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

type bundle struct {
	store *tenant.Store
	a, b  *tenant.BootstrapResult
}

func setup(t *testing.T) *bundle {
	t.Helper()
	store := tenant.NewStore(dbtest.Pool(t))
	ctx := context.Background()
	mk := func(name string) *tenant.BootstrapResult {
		res, err := store.Bootstrap(ctx, tenant.BootstrapParams{
			TenantName: name + "-" + t.Name() + "-" + time.Now().Format("150405.000000000"),
			Email:      name + "@" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", ".")) + ".test",
		})
		if err != nil {
			t.Fatalf("bootstrap %s: %v", name, err)
		}
		return res
	}
	return &bundle{store: store, a: mk("a"), b: mk("b")}
}

func TestBootstrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("CreatesOwnerAndWorkingKey", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		if !strings.HasPrefix(bu.a.Secret, "tpl_") || len(bu.a.Secret) != 74 {
			t.Fatalf("secret %q does not look like a key", bu.a.Secret)
		}
		if !strings.HasPrefix(bu.a.Secret, bu.a.Key.Prefix) {
			t.Fatalf("secret %q does not start with its prefix %q", bu.a.Secret, bu.a.Key.Prefix)
		}
		key, err := bu.store.VerifyAPIKey(ctx, bu.a.Secret)
		if err != nil {
			t.Fatal(err)
		}
		if key.TenantID != bu.a.Tenant.ID || key.Role != tenant.RoleOwner || key.CreatedByUser != bu.a.User.ID {
			t.Fatalf("verified key = %+v", key)
		}
		m, err := bu.store.GetMember(ctx, bu.a.Tenant.ID, bu.a.User.ID)
		if err != nil || m.Role != tenant.RoleOwner {
			t.Fatalf("member = %+v, %v", m, err)
		}
	})
	t.Run("DuplicateTenantNameConflicts", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		_, err := bu.store.Bootstrap(ctx, tenant.BootstrapParams{TenantName: strings.ToUpper(bu.a.Tenant.Name), Email: "x@y.test"})
		if !errors.Is(err, tenant.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
	})
	t.Run("InvalidInputNamesField", func(t *testing.T) {
		t.Parallel()
		store := tenant.NewStore(dbtest.Pool(t))
		for _, tc := range []struct{ name, email, field string }{
			{"", "a@b.test", "tenant"},
			{"ok", "not an email", "email"},
			{"ok", "Name <a@b.test>", "email"},
		} {
			_, err := store.Bootstrap(ctx, tenant.BootstrapParams{TenantName: tc.name, Email: tc.email})
			var ve *tenant.ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Errorf("Bootstrap(%q, %q) = %v, want ValidationError on %s", tc.name, tc.email, err, tc.field)
			}
		}
	})
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("CreateVerifyRevoke", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		key, secret, err := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{
			Name: "ci", Role: tenant.RoleMember, CreatedByKey: bu.a.Key.ID,
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := bu.store.VerifyAPIKey(ctx, secret)
		if err != nil || got.ID != key.ID || got.Role != tenant.RoleMember || got.LastUsedAt != nil {
			t.Fatalf("verify = %+v, %v", got, err)
		}
		again, _ := bu.store.GetAPIKey(ctx, bu.a.Tenant.ID, key.ID)
		if again.LastUsedAt == nil {
			t.Error("last_used_at not recorded")
		}
		if _, err := bu.store.RevokeAPIKey(ctx, bu.a.Tenant.ID, key.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := bu.store.VerifyAPIKey(ctx, secret); !errors.Is(err, tenant.ErrInvalidKey) {
			t.Fatalf("revoked key verify = %v, want ErrInvalidKey", err)
		}
		revoked, err := bu.store.RevokeAPIKey(ctx, bu.a.Tenant.ID, key.ID)
		if err != nil || revoked.RevokedAt == nil {
			t.Fatalf("second revoke = %+v, %v", revoked, err)
		}
		// The bootstrap key is untouched.
		if _, err := bu.store.VerifyAPIKey(ctx, bu.a.Secret); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("RevokerIsReadAgainUnderTheLock", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		newKey := func(tenantID, name string, role tenant.Role) *tenant.APIKey {
			t.Helper()
			k, _, err := bu.store.CreateAPIKey(ctx, tenantID, tenant.CreateAPIKeyParams{Name: name, Role: role})
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		admin, target := newKey(bu.a.Tenant.ID, "admin", tenant.RoleAdmin), newKey(bu.a.Tenant.ID, "target", tenant.RoleMember)
		theirs := newKey(bu.b.Tenant.ID, "theirs", tenant.RoleMember)
		// The admin key authenticated, then was revoked while its request waited for the lock.
		if _, err := bu.store.RevokeAPIKey(ctx, bu.a.Tenant.ID, admin.ID); err != nil {
			t.Fatal(err)
		}
		asAdmin := tenant.Actor{Role: tenant.RoleAdmin, KeyID: admin.ID}
		if _, err := bu.store.RevokeAPIKeyAs(ctx, bu.a.Tenant.ID, target.ID, asAdmin); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Fatalf("revoke by a key revoked meanwhile = %v, want ErrRoleTooHigh", err)
		}
		if k, _ := bu.store.GetAPIKey(ctx, bu.a.Tenant.ID, target.ID); k.RevokedAt != nil {
			t.Fatal("a key revoked meanwhile still revoked another")
		}
		// An admin key may not revoke an owner key; a live one revokes a member key.
		live := newKey(bu.a.Tenant.ID, "live admin", tenant.RoleAdmin)
		asLive := tenant.Actor{Role: tenant.RoleAdmin, KeyID: live.ID}
		if _, err := bu.store.RevokeAPIKeyAs(ctx, bu.a.Tenant.ID, bu.a.Key.ID, asLive); !errors.Is(err, tenant.ErrRoleTooHigh) {
			t.Fatalf("revoke of the owner key by an admin = %v, want ErrRoleTooHigh", err)
		}
		if k, err := bu.store.RevokeAPIKeyAs(ctx, bu.a.Tenant.ID, target.ID, asLive); err != nil || k.RevokedAt == nil {
			t.Fatalf("revoke by a live admin key = %+v, %v", k, err)
		}
		// Another tenant's key is not there for it.
		if _, err := bu.store.RevokeAPIKeyAs(ctx, bu.a.Tenant.ID, theirs.ID, asLive); !errors.Is(err, tenant.ErrNotFound) {
			t.Fatalf("revoke of another tenant's key = %v, want ErrNotFound", err)
		}
		if k, _ := bu.store.GetAPIKey(ctx, bu.b.Tenant.ID, theirs.ID); k.RevokedAt != nil {
			t.Fatal("another tenant's key was revoked")
		}
	})
	t.Run("NameLimitCountsCharacters", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		// openapi.yaml's maxLength and the column's check both count characters, not bytes.
		name := strings.Repeat("é", 100)
		key, _, err := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Name: name, Role: tenant.RoleViewer})
		if err != nil || key.Name != name {
			t.Fatalf("a 100-character name of 200 bytes = %+v, %v", key, err)
		}
		var ve *tenant.ValidationError
		if _, _, err := bu.store.CreateAPIKey(ctx, bu.b.Tenant.ID, tenant.CreateAPIKeyParams{Name: name + "e", Role: tenant.RoleViewer}); !errors.As(err, &ve) || ve.Field != "name" {
			t.Fatalf("a 101-character name = %v, want a validation error on name", err)
		}
		page, err := bu.store.ListAPIKeys(ctx, bu.b.Tenant.ID, tenant.ListParams{})
		if err != nil || len(page.Items) != 1 || page.Items[0].ID != bu.b.Key.ID {
			t.Fatalf("tenant b's keys = %+v, %v", page, err)
		}
	})
	t.Run("RejectsForgedAndMangledKeys", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		s := bu.a.Secret
		flip := func(i int) string {
			b := []byte(s)
			if b[i] == 'a' {
				b[i] = 'b'
			} else {
				b[i] = 'a'
			}
			return string(b)
		}
		for name, token := range map[string]string{
			"Empty":         "",
			"NoPrefix":      s[4:],
			"Truncated":     s[:len(s)-1],
			"Longer":        s + "a",
			"Uppercase":     strings.ToUpper(s),
			"SecretChanged": flip(30),
			"LookupChanged": flip(6),
			"CheckChanged":  flip(len(s) - 1),
			"JWTLike":       "eyJhbGciOiJub25lIn0.e30.",
		} {
			if _, err := bu.store.VerifyAPIKey(ctx, token); !errors.Is(err, tenant.ErrInvalidKey) {
				t.Errorf("%s: verify = %v, want ErrInvalidKey", name, err)
			}
		}
	})
	t.Run("ExpiredKeyIsInvalid", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		exp := time.Now().Add(1500 * time.Millisecond)
		_, secret, err := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleViewer, ExpiresAt: &exp})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bu.store.VerifyAPIKey(ctx, secret); err != nil {
			t.Fatalf("fresh key: %v", err)
		}
		past := time.Now().Add(-time.Second)
		_, _, err = bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleViewer, ExpiresAt: &past})
		var ve *tenant.ValidationError
		if !errors.As(err, &ve) || ve.Field != "expires_at" {
			t.Fatalf("past expiry = %v, want ValidationError on expires_at", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := bu.store.VerifyAPIKey(ctx, secret); errors.Is(err, tenant.ErrInvalidKey) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("expired key still verifies")
	})
	t.Run("ListPagesNewestFirst", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		for range 4 {
			if _, _, err := bu.store.CreateAPIKey(ctx, bu.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleViewer}); err != nil {
				t.Fatal(err)
			}
		}
		var all []tenant.APIKey
		cur := ""
		for {
			page, err := bu.store.ListAPIKeys(ctx, bu.a.Tenant.ID, tenant.ListParams{Limit: 2, Cursor: cur})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, page.Items...)
			if page.NextCursor == "" {
				break
			}
			cur = page.NextCursor
		}
		if len(all) != 5 {
			t.Fatalf("listed %d keys, want 5", len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i].CreatedAt.After(all[i-1].CreatedAt) {
				t.Fatal("not newest first")
			}
		}
		var ve *tenant.ValidationError
		if _, err := bu.store.ListAPIKeys(ctx, bu.a.Tenant.ID, tenant.ListParams{Cursor: "garbage"}); !errors.As(err, &ve) || ve.Field != "cursor" {
			t.Fatalf("bad cursor = %v", err)
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		bu := setup(t)
		if _, err := bu.store.GetAPIKey(ctx, bu.b.Tenant.ID, bu.a.Key.ID); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("get other tenant's key = %v, want ErrNotFound", err)
		}
		if _, err := bu.store.RevokeAPIKey(ctx, bu.b.Tenant.ID, bu.a.Key.ID); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("revoke other tenant's key = %v, want ErrNotFound", err)
		}
		page, err := bu.store.ListAPIKeys(ctx, bu.b.Tenant.ID, tenant.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Items {
			if k.TenantID != bu.b.Tenant.ID {
				t.Fatalf("tenant b's listing shows %+v", k)
			}
		}
		if _, err := bu.store.VerifyAPIKey(ctx, bu.a.Secret); err != nil {
			t.Fatal("tenant a's key stopped working")
		}
		if _, err := bu.store.GetAPIKey(ctx, bu.a.Tenant.ID, "not-a-uuid"); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("malformed id = %v, want ErrNotFound", err)
		}
	})
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"owner", "Admin", " member ", "viewer"} {
		if _, err := tenant.ParseRole(s); err != nil {
			t.Errorf("ParseRole(%q): %v", s, err)
		}
	}
	if _, err := tenant.ParseRole("root"); err == nil {
		t.Error("ParseRole accepted root")
	}
	if !tenant.RoleOwner.AtLeast(tenant.RoleAdmin) || tenant.RoleViewer.AtLeast(tenant.RoleMember) || tenant.Role("x").AtLeast(tenant.RoleViewer) {
		t.Error("AtLeast order wrong")
	}
}
