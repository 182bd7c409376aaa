package httpapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
)

func TestMembersEndpoints(t *testing.T) {
	t.Parallel()
	t.Run("AddListUpdateRemove", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "dev@team.test", "role": "member"})
		if r.status != 201 || r.body["email"] != "dev@team.test" || r.body["role"] != "member" {
			t.Fatalf("add = %d %s", r.status, r.raw)
		}
		id := r.body["id"].(string)
		requireProblem(t, e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "DEV@team.test", "role": "viewer"}), 409, "")
		list := e.do(t, "GET", "/v1/members", e.a.Secret, nil)
		if list.status != 200 || len(list.body["items"].([]any)) != 2 || !strings.Contains(list.raw, id) {
			t.Fatalf("list = %d %s", list.status, list.raw)
		}
		if r := e.do(t, "PATCH", "/v1/members/"+id, e.a.Secret, map[string]any{"role": "admin"}); r.status != 200 || r.body["role"] != "admin" {
			t.Fatalf("patch = %d %s", r.status, r.raw)
		}
		if r := e.do(t, "DELETE", "/v1/members/"+id, e.a.Secret, nil); r.status != 204 {
			t.Fatalf("delete = %d %s", r.status, r.raw)
		}
		requireProblem(t, e.do(t, "DELETE", "/v1/members/"+id, e.a.Secret, nil), 404, "")
	})
	t.Run("OnlyOwnersTouchOwners", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		admin := e.keyWithRole(t, tenant.RoleAdmin)
		requireProblem(t, e.do(t, "POST", "/v1/members", admin, map[string]any{"email": "o@team.test", "role": "owner"}), 403, "")
		requireProblem(t, e.do(t, "PATCH", "/v1/members/"+e.a.User.ID, admin, map[string]any{"role": "viewer"}), 403, "")
		requireProblem(t, e.do(t, "DELETE", "/v1/members/"+e.a.User.ID, admin, nil), 403, "")
		r := e.do(t, "POST", "/v1/members", admin, map[string]any{"email": "adm@team.test", "role": "admin"})
		if r.status != 201 {
			t.Fatalf("admin adding admin = %d %s", r.status, r.raw)
		}
		second := e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "o2@team.test", "role": "owner"})
		if second.status != 201 {
			t.Fatalf("owner adding owner = %d %s", second.status, second.raw)
		}
		if r := e.do(t, "PATCH", "/v1/members/"+second.body["id"].(string), e.a.Secret, map[string]any{"role": "member"}); r.status != 200 {
			t.Fatalf("owner demoting owner = %d %s", r.status, r.raw)
		}
	})
	t.Run("LastOwnerIsConflict", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		requireProblem(t, e.do(t, "PATCH", "/v1/members/"+e.a.User.ID, e.a.Secret, map[string]any{"role": "admin"}), 409, "")
		requireProblem(t, e.do(t, "DELETE", "/v1/members/"+e.a.User.ID, e.a.Secret, nil), 409, "")
	})
	t.Run("RemovingAMemberRevokesTheirKeys", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		r := e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "leaver@team.test", "role": "admin"})
		uid := r.body["id"].(string)
		_, secret, err := e.tenants.CreateAPIKey(t.Context(), e.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleMember, CreatedByUser: uid})
		if err != nil {
			t.Fatal(err)
		}
		if e.do(t, "GET", "/v1/me", secret, nil).status != 200 {
			t.Fatal("leaver's key does not work before")
		}
		if r := e.do(t, "DELETE", "/v1/members/"+uid, e.a.Secret, nil); r.status != 204 {
			t.Fatalf("remove = %d %s", r.status, r.raw)
		}
		requireProblem(t, e.do(t, "GET", "/v1/me", secret, nil), 401, "")
	})
	t.Run("AnOwnerDemotedWhileTheRequestWaitsIsRefused", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		ctx := t.Context()
		second := e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "o2@team.test", "role": "owner"})
		other := e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "c@team.test", "role": "member"})
		if second.status != 201 || other.status != 201 {
			t.Fatalf("add = %d %s, %d %s", second.status, second.raw, other.status, other.raw)
		}
		uid, cid := second.body["id"].(string), other.body["id"].(string)
		_, secret, err := e.tenants.CreateAPIKey(ctx, e.a.Tenant.ID, tenant.CreateAPIKeyParams{Role: tenant.RoleOwner, CreatedByUser: uid})
		if err != nil {
			t.Fatal(err)
		}
		if r := e.do(t, "GET", "/v1/me", secret, nil); r.body["role"] != "owner" {
			t.Fatalf("the second owner's key: %d %s", r.status, r.raw)
		}
		// Another owner's demotion of the second owner holds the tenant's lock (as the store
		// does) while the second owner's requests for owner rights arrive, authenticated
		// with the key the demotion revokes.
		tx, err := dbtest.OwnerPool(t).Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		var pid int
		if err := tx.QueryRow(ctx, `select pg_backend_pid() from tenants where id = $1 for update`, e.a.Tenant.ID).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `update memberships set role = 'admin' where tenant_id = $1 and user_id = $2`, e.a.Tenant.ID, uid); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `update api_keys set revoked_at = now() where tenant_id = $1 and created_by_user = $2 and role = 'owner'`, e.a.Tenant.ID, uid); err != nil {
			t.Fatal(err)
		}
		calls := map[string]func() response{
			"promote": func() response { return e.do(t, "PATCH", "/v1/members/"+cid, secret, map[string]any{"role": "owner"}) },
			"add": func() response {
				return e.do(t, "POST", "/v1/members", secret, map[string]any{"email": "o3@team.test", "role": "owner"})
			},
			"remove":   func() response { return e.do(t, "DELETE", "/v1/members/"+e.a.User.ID, secret, nil) },
			"mint_key": func() response { return e.do(t, "POST", "/v1/api-keys", secret, map[string]any{"role": "owner"}) },
		}
		results := make(map[string]chan response, len(calls))
		for name, call := range calls {
			ch := make(chan response, 1)
			results[name] = ch
			go func() { ch <- call() }()
		}
		// Every request waits for the lock, directly or behind another, or has finished.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			var waiting int
			if err := dbtest.OwnerPool(t).QueryRow(ctx, `with recursive blocked(pid) as (
					select $1::int
					union
					select a.pid from pg_stat_activity a join blocked b on b.pid = any (pg_blocking_pids(a.pid)))
				select count(*) - 1 from blocked`, pid).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			finished := 0
			for _, ch := range results {
				finished += len(ch)
			}
			if waiting+finished >= len(calls) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d requests wait for the lock and %d finished, want %d in all", waiting, finished, len(calls))
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for name, ch := range results {
			t.Run(name, func(t *testing.T) { requireProblem(t, <-ch, 403, "") })
		}
		list := e.do(t, "GET", "/v1/members", e.a.Secret, nil)
		members, _ := list.body["items"].([]any)
		owners := 0
		for _, m := range members {
			if m.(map[string]any)["role"] == "owner" {
				owners++
			}
		}
		if list.status != 200 || owners != 1 || len(members) != 3 {
			t.Fatalf("members after the demotion: %d %s", list.status, list.raw)
		}
		keys := e.do(t, "GET", "/v1/api-keys", e.a.Secret, nil)
		if keys.status != 200 {
			t.Fatalf("keys after the demotion: %d %s", keys.status, keys.raw)
		}
		for _, k := range keys.body["items"].([]any) {
			k := k.(map[string]any)
			if k["role"] == "owner" && k["revoked_at"] == nil && k["id"] != e.a.Key.ID {
				t.Fatalf("an owner key besides the bootstrap key is live: %s", keys.raw)
			}
		}
	})
	t.Run("InvalidInputNamesField", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		for name, tc := range map[string]struct {
			method, path string
			body         any
			field        string
		}{
			"BadEmail":     {"POST", "/v1/members", map[string]any{"email": "nope", "role": "viewer"}, "email"},
			"NoRole":       {"POST", "/v1/members", map[string]any{"email": "a@b.test"}, "role"},
			"UnknownRole":  {"PATCH", "/v1/members/" + e.a.User.ID, map[string]any{"role": "god"}, "role"},
			"UnknownField": {"PATCH", "/v1/members/" + e.a.User.ID, map[string]any{"role": "viewer", "x": 1}, "x"},
		} {
			t.Run(name, func(t *testing.T) {
				requireProblem(t, e.do(t, tc.method, tc.path, e.a.Secret, tc.body), 400, tc.field)
			})
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		requireProblem(t, e.do(t, "PATCH", "/v1/members/"+e.a.User.ID, e.b.Secret, map[string]any{"role": "viewer"}), 404, "")
		requireProblem(t, e.do(t, "DELETE", "/v1/members/"+e.a.User.ID, e.b.Secret, nil), 404, "")
		requireProblem(t, e.do(t, "DELETE", "/v1/members/not-an-id", e.b.Secret, nil), 404, "")
		list := e.do(t, "GET", "/v1/members", e.b.Secret, nil)
		if list.status != 200 || strings.Contains(list.raw, e.a.User.ID) || len(list.body["items"].([]any)) != 1 {
			t.Fatalf("tenant b's members = %d %s", list.status, list.raw)
		}
		if r := e.do(t, "GET", "/v1/me", e.a.Secret, nil); r.body["role"] != "owner" {
			t.Fatalf("tenant a's owner changed: %s", r.raw)
		}
	})
}
