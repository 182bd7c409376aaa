package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/tenant"
)

var roles = []tenant.Role{tenant.RoleViewer, tenant.RoleMember, tenant.RoleAdmin, tenant.RoleOwner} //nolint:gochecknoglobals // test table

// keyWithRole mints a key of role in tenant a, created by a's owner.
func (e *env) keyWithRole(t *testing.T, role tenant.Role) string {
	t.Helper()
	_, secret, err := e.tenants.CreateAPIKey(context.Background(), e.a.Tenant.ID, tenant.CreateAPIKeyParams{
		Name: string(role), Role: role, CreatedByUser: e.a.User.ID,
	})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// TestEveryOperationHasARequiredRole keeps new endpoints from escaping the permission
// matrix: each operation in openapi.yaml names its least role.
func TestEveryOperationHasARequiredRole(t *testing.T) {
	t.Parallel()
	spec, err := apigen.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	if missing := httpapi.UnclassifiedOperations(spec); len(missing) > 0 {
		t.Fatalf("operations without a valid x-required-role (none, viewer, member, admin, owner): %s", strings.Join(missing, ", "))
	}
	// Public operations are the few that must be.
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if need, _ := httpapi.RequiredRole(op); need == httpapi.RoleNone {
				if !slices.Contains([]string{"/healthz", "/readyz", "/v1/auth/token"}, path) {
					t.Errorf("%s %s needs no credentials; only health checks and the token exchange may", method, path)
				}
			}
		}
	}
}

// TestRoleMatrix calls every operation in openapi.yaml with a key of every role: a role below
// the operation's x-required-role answers 403, a role at or above it gets past the gate (any
// answer but 401/403). Path ids are fresh uuids and bodies are {}, so allowed calls end in
// 400 or 404 and change nothing.
func TestRoleMatrix(t *testing.T) {
	t.Parallel()
	e := setup(t)
	keys := map[tenant.Role]string{}
	for _, r := range roles {
		keys[r] = e.keyWithRole(t, r)
	}
	spec, err := apigen.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	paths := spec.Paths.InMatchingOrder()
	slices.Sort(paths)
	client := &http.Client{Timeout: 15e9}
	for _, path := range paths {
		item := spec.Paths.Value(path)
		for method, op := range item.Operations() {
			need, _ := httpapi.RequiredRole(op)
			if need == httpapi.RoleNone {
				continue
			}
			url := e.srv.URL + param.ReplaceAllStringFunc(path, func(string) string { return uuid.NewString() })
			for _, role := range roles {
				t.Run(fmt.Sprintf("%s/%s_%s/%s", need, method, strings.ReplaceAll(path, "/", "_"), role), func(t *testing.T) {
					var body *strings.Reader
					if op.RequestBody != nil {
						body = strings.NewReader("{}")
					} else {
						body = strings.NewReader("")
					}
					req, _ := http.NewRequest(method, url, body)
					if op.RequestBody != nil {
						req.Header.Set("Content-Type", "application/json")
					}
					req.Header.Set("Authorization", "Bearer "+keys[role])
					res, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					res.Body.Close()
					allowed := role.AtLeast(tenant.Role(need))
					switch {
					case !allowed && res.StatusCode != http.StatusForbidden:
						t.Errorf("%s %s as %s = %d, want 403 (needs %s)", method, path, role, res.StatusCode, need)
					case allowed && (res.StatusCode == http.StatusForbidden || res.StatusCode == http.StatusUnauthorized || res.StatusCode >= 500):
						t.Errorf("%s %s as %s = %d, want the gate passed (needs %s)", method, path, role, res.StatusCode, need)
					}
				})
			}
		}
	}
}

// TestKeysCannotMintHigherRoles: neither an API key nor a token minted from one grants
// more than its own role.
func TestKeysCannotMintHigherRoles(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for i, creator := range roles {
		key := e.keyWithRole(t, creator)
		for _, want := range roles[i+1:] {
			r := e.do(t, "POST", "/v1/api-keys", key, map[string]any{"role": want})
			requireProblem(t, r, 403, "")
		}
	}
	admin := e.keyWithRole(t, tenant.RoleAdmin)
	requireProblem(t, e.do(t, "POST", "/v1/members", admin, map[string]any{"email": "x@y.test", "role": "owner"}), 403, "")
	if r := e.do(t, "POST", "/v1/api-keys", admin, map[string]any{"role": "admin"}); r.status != 201 {
		t.Fatalf("admin minting admin = %d %s", r.status, r.raw)
	}
}
