package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tapline/tapline/internal/dbtest"
)

// TestForeignKeysBetweenTenantTablesCarryTheTenant enumerates the schema's foreign keys: one
// from a tenant table to another (tenants aside) must pair the child's tenant_id with the
// parent's, so that no row can name another tenant's parent, whatever the code does. A key
// someone adds later without it fails here.
func TestForeignKeysBetweenTenantTablesCarryTheTenant(t *testing.T) {
	t.Parallel()
	owner := dbtest.OwnerPool(t)
	tenantScoped := map[string]bool{}
	for _, table := range tenantTables(t, owner) {
		tenantScoped[table] = true
	}
	rows, err := owner.Query(context.Background(), `select c.conname::text, c.conrelid::regclass::text, c.confrelid::regclass::text,
			coalesce(bool_or(ca.attname = 'tenant_id' and fa.attname = 'tenant_id'), false)
		from pg_constraint c
		cross join lateral unnest(c.conkey, c.confkey) as k(col, fcol)
		join pg_attribute ca on ca.attrelid = c.conrelid and ca.attnum = k.col
		join pg_attribute fa on fa.attrelid = c.confrelid and fa.attnum = k.fcol
		where c.contype = 'f' and c.connamespace = 'public'::regnamespace
		group by c.conname, c.conrelid, c.confrelid
		order by 1`)
	if err != nil {
		t.Fatal(err)
	}
	type fk struct {
		name, child, parent string
		paired              bool
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (k fk, err error) {
		err = r.Scan(&k.name, &k.child, &k.parent, &k.paired)
		return k, err
	})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, k := range keys {
		if !tenantScoped[k.child] || !tenantScoped[k.parent] {
			continue // to tenants itself, or to a table shared by tenants (users)
		}
		checked++
		if !k.paired {
			t.Errorf("foreign key %s from %s to %s does not pair the tenant_id columns: a row could name another tenant's %s",
				k.name, k.child, k.parent, k.parent)
		}
	}
	// session_calls and pending_requests to sessions, api_keys to itself.
	if checked < 3 {
		t.Fatalf("checked %d foreign keys between tenant tables (%v); the enumeration is broken", checked, keys)
	}
}

// TestRowsCannotNameAnotherTenantsParent writes, as the tables' owner (past row level
// security, as a bug in a security definer function would), a call, a parked request and a
// key of tenant B that name tenant A's session and key: the database refuses each.
func TestRowsCannotNameAnotherTenantsParent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	a, b := uuid.NewString(), uuid.NewString()
	sessionA, keyA := uuid.NewString(), uuid.NewString()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`insert into tenants (id, name) values ($1, 'tenant a'), ($2, 'tenant b')`, []any{a, b}},
		{`insert into sessions (id, tenant_id, transport, url, status) values ($1, $2, 'streamable_http', 'https://mcp.example.com/mcp', 'ready')`, []any{sessionA, a}},
		{`insert into api_keys (id, tenant_id, lookup_id, secret_hash, role) values ($1, $2, 'lookupa', '\x00', 'owner')`, []any{keyA, a}},
	} {
		if _, err := d.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	for name, write := range map[string]func(tenantID string) error{
		"session_calls": func(tenantID string) error {
			_, err := d.Pool.Exec(ctx, `insert into session_calls (id, tenant_id, session_id, name, status) values ($1, $2, $3, 'echo', 'queued')`,
				uuid.NewString(), tenantID, sessionA)
			return err
		},
		"pending_requests": func(tenantID string) error {
			_, err := d.Pool.Exec(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
				values ($1, $2, $3, 'sampling', '{}', 'pending', 1, now() + interval '1 minute')`, uuid.NewString(), tenantID, sessionA)
			return err
		},
		"api_keys": func(tenantID string) error {
			_, err := d.Pool.Exec(ctx, `insert into api_keys (id, tenant_id, lookup_id, secret_hash, role, created_by_key) values ($1, $2, $3, '\x00', 'member', $4)`,
				uuid.NewString(), tenantID, "lookup"+strings.ReplaceAll(uuid.NewString(), "-", ""), keyA)
			return err
		},
	} {
		// The tenant's own parent is fine, which shows the refusal below is about the tenant.
		if err := write(a); err != nil {
			t.Fatalf("%s: a row naming its own tenant's parent: %v", name, err)
		}
		err := write(b)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23503" {
			t.Errorf("%s: a row of tenant B naming tenant A's parent was not refused as a foreign key violation: %v", name, err)
		}
	}

	// Deleting the parents still cascades, and deleting a key clears only the reference.
	if _, err := d.Pool.Exec(ctx, `delete from api_keys where id = $1`, keyA); err != nil {
		t.Fatal(err)
	}
	var orphans, children int
	if err := d.Pool.QueryRow(ctx, `select count(*) filter (where created_by_key is null), count(*) from api_keys where tenant_id = $1`, a).Scan(&orphans, &children); err != nil {
		t.Fatal(err)
	}
	if orphans != 1 || children != 1 {
		t.Errorf("after its creator was deleted: %d of %d keys with no creator, want the one key kept with its tenant", orphans, children)
	}
	if _, err := d.Pool.Exec(ctx, `delete from sessions where id = $1`, sessionA); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := d.Pool.QueryRow(ctx, `select (select count(*) from session_calls where tenant_id = $1) + (select count(*) from pending_requests where tenant_id = $1)`, a).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d calls and requests outlived their session", left)
	}
}
