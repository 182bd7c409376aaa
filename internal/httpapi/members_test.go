package httpapi_test

import (
	"strings"
	"testing"

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
