package db_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/migrations"
)

// tenantTables lists every table in the public schema with a tenant_id column.
func tenantTables(t *testing.T, q db.DBTX) []string {
	t.Helper()
	rows, err := q.Query(context.Background(), `select c.relname::text from pg_class c
		join pg_namespace n on n.oid = c.relnamespace
		join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
		where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// checkRLS fails unless table has RLS enabled and forced and a policy that applies to the
// application role.
func checkRLS(t *testing.T, q db.DBTX, table string) {
	t.Helper()
	var enabled, forced bool
	var appPolicies int
	err := q.QueryRow(context.Background(), `select c.relrowsecurity, c.relforcerowsecurity,
		(select count(*) from pg_policy p where p.polrelid = c.oid
		   and (p.polroles = '{0}' or (select oid from pg_roles where rolname = $2) = any (p.polroles)))
		from pg_class c join pg_namespace n on n.oid = c.relnamespace
		where n.nspname = 'public' and c.relname = $1`, table, dbtest.AppRole).Scan(&enabled, &forced, &appPolicies)
	if err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	if !enabled || !forced || appPolicies == 0 {
		t.Errorf("table %s: row level security enabled=%v forced=%v, %d policies for %s; every tenant table needs all three (migrations/0010_rls.up.sql)",
			table, enabled, forced, appPolicies, dbtest.AppRole)
	}
}

// TestEveryTenantTableHasForcedRowLevelSecurity enumerates the schema, so a table someone
// adds later with a tenant_id column fails here unless it is secured.
func TestEveryTenantTableHasForcedRowLevelSecurity(t *testing.T) {
	t.Parallel()
	owner := dbtest.OwnerPool(t)
	tables := tenantTables(t, owner)
	if len(tables) < 2 {
		t.Fatalf("found only %v; the enumeration is broken", tables)
	}
	for _, table := range append(tables, "tenants", "users") {
		checkRLS(t, owner, table)
	}
	t.Logf("secured tenant tables: %s", strings.Join(tables, ", "))
}

func TestAppRoleCannotBypassRowLevelSecurity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := dbtest.Pool(t)
	ri, err := db.CurrentRole(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	if ri.Name != dbtest.AppRole || ri.Superuser || ri.BypassRLS || ri.OwnsTables {
		t.Fatalf("application role = %+v; want %s, not superuser, no BYPASSRLS, owning nothing", ri, dbtest.AppRole)
	}
	if err := db.CheckAppRole(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckAppRole(ctx, dbtest.OwnerPool(t)); !errors.Is(err, db.ErrPrivilegedRole) {
		t.Fatalf("CheckAppRole(owner) = %v, want ErrPrivilegedRole", err)
	}
	// The migration bookkeeping and DDL are out of the application's reach.
	for _, sql := range []string{
		"select count(*) from schema_migrations",
		"create table sneaky (id int)",
		"alter table api_keys disable row level security",
		"select tapline_secure_tenant_tables()",
	} {
		if _, err := app.Exec(ctx, sql); err == nil {
			t.Errorf("%s: succeeded as %s", sql, dbtest.AppRole)
		}
	}
}

// TestQueryWithoutTenantFilterSeesOnlyCurrentTenant is the second wall: queries below forget
// their tenant filter on purpose and still see only the transaction's tenant.
func TestQueryWithoutTenantFilterSeesOnlyCurrentTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := dbtest.Pool(t)
	store := tenant.NewStore(app)
	mk := func(name string) *tenant.BootstrapResult {
		res, err := store.Bootstrap(ctx, tenant.BootstrapParams{
			TenantName: name + "-rls-" + time.Now().Format("150405.000000000"), Email: name + "@rls.test",
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := mk("a"), mk("b")

	t.Run("NoTenantSeesNothing", func(t *testing.T) {
		for _, table := range append(tenantTables(t, app), "tenants", "users") {
			var n int
			if err := app.QueryRow(ctx, "select count(*) from "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
			if n != 0 {
				t.Errorf("%s: %d rows visible without a tenant", table, n)
			}
		}
	})
	t.Run("UnfilteredSelectSeesOnlyCurrentTenant", func(t *testing.T) {
		err := db.WithTenantTx(ctx, app, a.Tenant.ID, func(ctx context.Context, tx pgx.Tx) error {
			for _, sql := range []string{
				"select tenant_id::text from api_keys",
				"select tenant_id::text from memberships",
				"select id::text from tenants",
			} {
				rows, err := tx.Query(ctx, sql)
				if err != nil {
					return err
				}
				ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				if len(ids) == 0 {
					t.Errorf("%s: tenant a sees none of its own rows", sql)
				}
				for _, id := range ids {
					if id != a.Tenant.ID {
						t.Errorf("%s: tenant a sees a row of tenant %s", sql, id)
					}
				}
			}
			var emails []string
			rows, err := tx.Query(ctx, "select email from users")
			if err != nil {
				return err
			}
			if emails, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			if len(emails) != 1 || emails[0] != a.User.Email {
				t.Errorf("tenant a sees users %v, want only its member %s", emails, a.User.Email)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		err := db.WithTenantTx(ctx, app, a.Tenant.ID, func(ctx context.Context, tx pgx.Tx) error {
			var n int
			if err := tx.QueryRow(ctx, "select count(*) from api_keys where id = $1", b.Key.ID).Scan(&n); err != nil || n != 0 {
				t.Errorf("tenant b's key by id: %d rows, %v", n, err)
			}
			tag, err := tx.Exec(ctx, "update api_keys set name = 'pwned' where id = $1", b.Key.ID)
			if err != nil || tag.RowsAffected() != 0 {
				t.Errorf("update of tenant b's key: %v rows, %v", tag.RowsAffected(), err)
			}
			tag, err = tx.Exec(ctx, "delete from memberships where tenant_id = $1", b.Tenant.ID)
			if err != nil || tag.RowsAffected() != 0 {
				t.Errorf("delete of tenant b's members: %v rows, %v", tag.RowsAffected(), err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Writing a row for another tenant is refused outright.
		err = db.WithTenantTx(ctx, app, a.Tenant.ID, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `insert into memberships (tenant_id, user_id, role) values ($1, $2, 'owner')`, b.Tenant.ID, a.User.ID)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "row-level security") {
			t.Fatalf("insert into tenant b = %v, want a row-level security violation", err)
		}
		if _, err := store.GetAPIKey(ctx, b.Tenant.ID, b.Key.ID); err != nil {
			t.Fatalf("tenant b's key was touched: %v", err)
		}
	})
}

// TestMigrateSecuresTablesAddedLater: a migration that creates a tenant table and forgets
// RLS, even one applied after 0010, comes out secured and granted.
func TestMigrateSecuresTablesAddedLater(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	fsys := fstest.MapFS{}
	all, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range all {
		body, _ := fs.ReadFile(migrations.FS, name)
		fsys[name] = &fstest.MapFile{Data: body}
	}
	if _, err := db.Migrate(ctx, d.Pool, fsys, nil); err != nil {
		t.Fatal(err)
	}
	fsys["9999_later.up.sql"] = &fstest.MapFile{Data: []byte(
		"create table later_things (tenant_id uuid not null, id bigint generated always as identity, note text)")}
	if _, err := db.Migrate(ctx, d.Pool, fsys, nil); err != nil {
		t.Fatal(err)
	}
	checkRLS(t, d.Pool, "later_things")
	var canInsert bool
	if err := d.Pool.QueryRow(ctx, "select has_table_privilege($1, 'later_things', 'insert')", dbtest.AppRole).Scan(&canInsert); err != nil || !canInsert {
		t.Fatalf("%s cannot insert into the new table (%v)", dbtest.AppRole, err)
	}
}

// Deleting a tenant deletes its sessions' events with them (a trigger, since session_events
// has no foreign key; migrations/0015), and nobody else's.
func TestDeletedSessionsTakeTheirEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	ids := map[string][2]string{}
	for _, name := range []string{"gone", "kept"} {
		var tenantID, sessionID string
		if err := d.Pool.QueryRow(ctx, `insert into tenants (id, name) values (gen_random_uuid(), $1) returning id`, name).Scan(&tenantID); err != nil {
			t.Fatal(err)
		}
		if err := d.Pool.QueryRow(ctx, `insert into sessions (id, tenant_id, name, status, transport, url)
			values (gen_random_uuid(), $1, 's', 'ready', 'streamable_http', 'http://x') returning id`, tenantID).Scan(&sessionID); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Pool.Exec(ctx, `select * from tapline_append_events(array[$1::uuid, $1::uuid], array[$2::uuid, $2::uuid],
			array[0, 0]::bigint[], array['a', 'b'], array['{}', '{}']::jsonb[], array[now(), now()])`, tenantID, sessionID); err != nil {
			t.Fatal(err)
		}
		ids[name] = [2]string{tenantID, sessionID}
	}
	if _, err := d.Pool.Exec(ctx, `delete from tenants where id = $1`, ids["gone"][0]); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"gone": 0, "kept": 2} {
		var n int
		if err := d.Pool.QueryRow(ctx, `select count(*) from session_events where session_id = $1`, ids[name][1]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s tenant's session has %d events after the delete, want %d", name, n, want)
		}
	}
}

// tapline_append_events gives the same answers on its one-session path and on the path for
// batches of several sessions: gapless seqs in batch order for a current owner, nothing
// written for a stale one, even when its events share the batch with the current owner's.
func TestAppendEventsOneAndManySessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	var tenantID string
	if err := d.Pool.QueryRow(ctx, `insert into tenants (id, name) values (gen_random_uuid(), 't') returning id`).Scan(&tenantID); err != nil {
		t.Fatal(err)
	}
	newSession := func(epoch int) (id string) {
		t.Helper()
		if err := d.Pool.QueryRow(ctx, `insert into sessions (id, tenant_id, name, status, transport, url, epoch)
			values (gen_random_uuid(), $1, 's', 'ready', 'streamable_http', 'http://x', $2) returning id`, tenantID, epoch).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	a, b := newSession(3), newSession(5)
	type res struct {
		first, last *int64
		refused     bool
	}
	appendEvents := func(sessions []string, epochs []int64) map[string]res {
		t.Helper()
		n := len(sessions)
		tenants, types, datas, ats := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
		for i := range n {
			tenants[i], types[i], datas[i], ats[i] = tenantID, "t", fmt.Sprintf(`{"i":%d}`, i), time.Now()
		}
		rows, err := d.Pool.Query(ctx, `select session_id::text, first_seq, last_seq, refused from tapline_append_events(
			$1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[], $6::timestamptz[])`, tenants, sessions, epochs, types, datas, ats)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]res{}
		for rows.Next() {
			var id string
			var r res
			if err := rows.Scan(&id, &r.first, &r.last, &r.refused); err != nil {
				t.Fatal(err)
			}
			out[id] = r
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		return out
	}
	check := func(what string, got res, first, last int64, refused bool) {
		t.Helper()
		if refused {
			if !got.refused || got.first != nil || got.last != nil {
				t.Errorf("%s: %+v, want refused", what, got)
			}
			return
		}
		if got.refused || got.first == nil || got.last == nil || *got.first != first || *got.last != last {
			t.Errorf("%s: first %v last %v refused %v, want %d..%d", what, got.first, got.last, got.refused, first, last)
		}
	}
	// One session per batch.
	check("a alone", appendEvents([]string{a, a, a}, []int64{3, 3, 3})[a], 1, 3, false)
	check("a alone, stale", appendEvents([]string{a, a}, []int64{2, 2})[a], 0, 0, true)
	// Several sessions in a batch, interleaved, one of them stale.
	got := appendEvents([]string{b, a, b, a, b}, []int64{5, 3, 5, 3, 5})
	check("b in a mixed batch", got[b], 1, 3, false)
	check("a in a mixed batch", got[a], 4, 5, false)
	got = appendEvents([]string{a, b, a}, []int64{3, 4, 3})
	check("a beside a stale b", got[a], 6, 7, false)
	check("stale b beside a", got[b], 0, 0, true)
	// Events of two epochs for one session (a stale owner's batched with the current
	// owner's) are refused together, on either path: nothing a stale owner sent is written.
	check("a with a stale event", appendEvents([]string{a, a}, []int64{2, 3})[a], 0, 0, true)
	check("a with an event of a later epoch", appendEvents([]string{a, a, a}, []int64{3, 3, 4})[a], 0, 0, true)
	got = appendEvents([]string{b, a, b, b}, []int64{5, 3, 4, 5})
	check("b with a stale event beside a", got[b], 0, 0, true)
	check("a beside b's stale event", got[a], 8, 8, false)
	// The stored seqs are gapless and in batch order.
	for id, want := range map[string][]string{a: {"0", "1", "2", "1", "3", "0", "2", "1"}, b: {"0", "2", "4"}} {
		rows, err := d.Pool.Query(ctx, `select data->>'i' from session_events where session_id = $1 order by seq`, id)
		if err != nil {
			t.Fatal(err)
		}
		gotOrder, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(gotOrder, ",") != strings.Join(want, ",") {
			t.Errorf("session events in seq order: %v, want %v", gotOrder, want)
		}
	}
}
