// Package tenant holds Tapline's teams: tenants, their users and roles, and the API keys that
// scripts and the browser authenticate with.
//
// Every method that touches tenant-owned rows takes the tenant id right after the context and
// runs in a tenant transaction (db.WithTenantTx), so a forgotten filter is a visible omission
// and row-level security is the second wall. Another tenant's object is ErrNotFound.
package tenant

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
)

// Errors the store returns.
var (
	// ErrNotFound is db.ErrNotFound: unknown id or another tenant's.
	ErrNotFound = db.ErrNotFound
	// ErrConflict is db.ErrConflict: a name or email is taken.
	ErrConflict = db.ErrConflict
	// ErrInvalidKey means an API key is malformed, unknown, revoked or expired. Callers
	// answer 401 without saying which.
	ErrInvalidKey = errors.New("invalid api key")
	// ErrRoleTooHigh means a principal tried to grant a role above its own.
	ErrRoleTooHigh = errors.New("role above the granter's")
	// ErrLastOwner means a change would leave a tenant without an owner.
	ErrLastOwner = errors.New("a tenant keeps at least one owner")
)

// Role is a member's or key's permission level.
type Role string

// The roles, from most to least powerful.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
	RoleViewer Role = "viewer"
)

var roleRank = map[Role]int{RoleViewer: 1, RoleMember: 2, RoleAdmin: 3, RoleOwner: 4} //nolint:gochecknoglobals // lookup table

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if _, ok := roleRank[r]; !ok {
		return "", fmt.Errorf("unknown role %q: want owner, admin, member or viewer", s)
	}
	return r, nil
}

// AtLeast reports whether r grants everything min grants.
func (r Role) AtLeast(min Role) bool { return roleRank[r] >= roleRank[min] && roleRank[min] > 0 }

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool { return roleRank[r] > 0 }

// Tenant is a team.
type Tenant struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// User is a person; a user may belong to several tenants.
type User struct {
	ID        string
	Email     string
	Name      string
	CreatedAt time.Time
}

// Member is a user's membership in one tenant.
type Member struct {
	TenantID  string
	User      User
	Role      Role
	CreatedAt time.Time
}

// APIKey is a stored key without its secret.
type APIKey struct {
	ID            string
	TenantID      string
	Name          string
	Role          Role
	Prefix        string // "tpl_" + the lookup id: safe to show, identifies the key
	CreatedByUser string
	CreatedByKey  string
	CreatedAt     time.Time
	ExpiresAt     *time.Time
	LastUsedAt    *time.Time
	RevokedAt     *time.Time
}

// After runs inside a store method's transaction once the change is made, before commit;
// an error rolls the change back. Handlers record the change's audit event with it, so the
// change and its audit event commit together or not at all.
type After[T any] func(ctx context.Context, tx pgx.Tx, changed *T) error

func runAfter[T any](ctx context.Context, tx pgx.Tx, changed *T, after []After[T]) error {
	for _, fn := range after {
		if fn == nil {
			continue
		}
		if err := fn(ctx, tx, changed); err != nil {
			return err
		}
	}
	return nil
}

// Page is one page of a listing; NextCursor is empty on the last page.
type Page[T any] struct {
	Items      []T
	NextCursor string
}

// ListParams selects a page. Limit is clamped to [1, 200], 50 by default.
type ListParams struct {
	Limit  int
	Cursor string
}

func (p ListParams) limit() int {
	switch {
	case p.Limit <= 0:
		return 50
	case p.Limit > 200:
		return 200
	}
	return p.Limit
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// ValidID reports whether s looks like an id this package issues; callers answer 404 for
// anything else without a query.
func ValidID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}
