package httpapi

import (
	"fmt"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/tenant"
)

// RequiredRoleExtension is the openapi.yaml extension naming the least role an operation
// needs: none, viewer, member, admin or owner.
const RequiredRoleExtension = "x-required-role"

// RoleNone marks operations that need no credentials.
const RoleNone = "none"

// roleGate enforces each operation's x-required-role before its handler runs, so the
// permission matrix in openapi.yaml is the one the server applies. Handlers check again
// (auth.Require), and check what depends on the object (owners only by owners).
type roleGate struct {
	ops *operations
}

func newRoleGate(ops *operations) (*roleGate, error) {
	if missing := UnclassifiedOperations(ops.spec); len(missing) > 0 {
		return nil, fmt.Errorf("operations without a valid %s: %s", RequiredRoleExtension, strings.Join(missing, ", "))
	}
	return &roleGate{ops: ops}, nil
}

// RequiredRole returns an operation's x-required-role and whether it is one of the known
// values.
func RequiredRole(op *openapi3.Operation) (string, bool) {
	v, _ := op.Extensions[RequiredRoleExtension].(string)
	if v == RoleNone {
		return v, true
	}
	return v, tenant.Role(v).Valid()
}

// UnclassifiedOperations lists "METHOD path" of every operation in spec without a valid
// x-required-role, sorted.
func UnclassifiedOperations(spec *openapi3.T) []string {
	var out []string
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if _, ok := RequiredRole(op); !ok {
				out = append(out, method+" "+path)
			}
		}
	}
	sort.Strings(out)
	return out
}

func (g *roleGate) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		route, _, ok := g.ops.find(c)
		if !ok {
			// Not an operation (web assets, /metrics) or a wrong method: the router answers.
			return next(c)
		}
		need, _ := RequiredRole(route.Operation)
		if need == RoleNone {
			return next(c)
		}
		if _, err := auth.Require(req.Context(), tenant.Role(need)); err != nil {
			return err
		}
		return next(c)
	}
}
