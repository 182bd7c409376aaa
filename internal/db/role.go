package db

import (
	"context"
	"errors"
	"fmt"
)

// ErrPrivilegedRole means the application connected as a role that row-level security does
// not apply to. The api and the worker refuse to start with one (see CheckAppRole).
var ErrPrivilegedRole = errors.New("database role bypasses row-level security")

// RoleInfo describes the role a pool's connections act as.
type RoleInfo struct {
	Name      string
	Superuser bool
	BypassRLS bool
	// OwnsTables is true when the role owns (or inherits the rights of the owner of) a table
	// in the public schema.
	OwnsTables bool
}

// CurrentRole reports the role behind q's connections.
func CurrentRole(ctx context.Context, q DBTX) (RoleInfo, error) {
	var ri RoleInfo
	err := q.QueryRow(ctx, `select r.rolname, r.rolsuper, r.rolbypassrls,
		exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
		        where n.nspname = 'public' and c.relkind in ('r', 'p')
		          and pg_has_role(current_user, c.relowner, 'USAGE'))
		from pg_roles r where r.rolname = current_user`).Scan(&ri.Name, &ri.Superuser, &ri.BypassRLS, &ri.OwnsTables)
	if err != nil {
		return ri, fmt.Errorf("current role: %w", InterpretError(err))
	}
	return ri, nil
}

// CheckAppRole returns ErrPrivilegedRole when q's role is a superuser, has BYPASSRLS or owns
// the tables: tenant isolation would then rest on query filters alone. The application must
// connect as tapline_app (or a member of it); migrations run as the owner.
func CheckAppRole(ctx context.Context, q DBTX) error {
	ri, err := CurrentRole(ctx, q)
	if err != nil {
		return err
	}
	var why []string
	if ri.Superuser {
		why = append(why, "is a superuser")
	}
	if ri.BypassRLS {
		why = append(why, "has BYPASSRLS")
	}
	if ri.OwnsTables {
		why = append(why, "owns the tables")
	}
	if len(why) > 0 {
		return fmt.Errorf("%w: role %q %s; connect TAPLINE_DATABASE_URL as tapline_app and run migrations with TAPLINE_MIGRATE_DATABASE_URL",
			ErrPrivilegedRole, ri.Name, joinAnd(why))
	}
	return nil
}

func joinAnd(parts []string) string {
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return parts[0]
	}
	out := ""
	for i, p := range parts {
		switch {
		case i == 0:
			out = p
		case i == len(parts)-1:
			out += " and " + p
		default:
			out += ", " + p
		}
	}
	return out
}
