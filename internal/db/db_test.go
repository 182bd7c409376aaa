package db_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/migrations"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func TestMigrateOnEmptyDatabaseIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	all, err := db.LoadMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := db.Migrate(ctx, d.Pool, migrations.FS, nil)
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if len(applied) != len(all) {
		t.Fatalf("applied %v, want all %d migrations", applied, len(all))
	}
	again, err := db.Migrate(ctx, d.Pool, migrations.FS, nil)
	if err != nil || len(again) != 0 {
		t.Fatalf("second migrate applied %v, err %v; want nothing", again, err)
	}
	var n int
	if err := d.Pool.QueryRow(ctx, "select count(*) from schema_migrations").Scan(&n); err != nil || n != len(all) {
		t.Fatalf("schema_migrations has %d rows (err %v), want %d", n, err, len(all))
	}
}

func TestMigrateConcurrentRunnersApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	errs := make(chan error, 4)
	counts := make(chan int, 4)
	for range 4 {
		go func() {
			applied, err := db.Migrate(ctx, d.Pool, migrations.FS, nil)
			errs <- err
			counts <- len(applied)
		}()
	}
	total := 0
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		total += <-counts
	}
	all, _ := db.LoadMigrations(migrations.FS)
	if total != len(all) {
		t.Fatalf("concurrent runners applied %d migrations in all, want %d", total, len(all))
	}
}

func TestMigrateFailureRollsBackThatFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	fsys := fstest.MapFS{
		"0001_ok.up.sql":     {Data: []byte("create table a (id int)")},
		"0002_broken.up.sql": {Data: []byte("create table b (id int); select nonsense from nowhere")},
	}
	applied, err := db.Migrate(ctx, d.Pool, fsys, nil)
	if err == nil {
		t.Fatal("broken migration applied without error")
	}
	if len(applied) != 1 || applied[0] != 1 {
		t.Fatalf("applied %v, want [1]", applied)
	}
	var exists bool
	_ = d.Pool.QueryRow(ctx, "select to_regclass('b') is not null").Scan(&exists)
	if exists {
		t.Fatal("table b of the failed migration survived")
	}
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	t.Parallel()
	for name, fsys := range map[string]fstest.MapFS{
		"NoNumber":  {"init.up.sql": {Data: []byte("")}},
		"Duplicate": {"0001_a.up.sql": {Data: []byte("")}, "001_b.up.sql": {Data: []byte("")}},
		"Zero":      {"0000_a.up.sql": {Data: []byte("")}},
	} {
		if _, err := db.LoadMigrations(fsys); err == nil {
			t.Errorf("%s: LoadMigrations accepted it", name)
		}
	}
}

func TestWithTxCommitsAndRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	if _, err := d.Pool.Exec(ctx, "create table t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := db.WithTx(ctx, d.Pool, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "insert into t values (1)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := db.WithTx(ctx, d.Pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "insert into t values (2)"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("WithTx error = %v, want boom", err)
	}
	var n int
	_ = d.Pool.QueryRow(ctx, "select count(*) from t").Scan(&n)
	if n != 1 {
		t.Fatalf("rows = %d, want 1 (the failed transaction must roll back)", n)
	}
	err := db.WithTx(ctx, d.Pool, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "insert into t values (1)")
		return db.InterpretError(err)
	})
	if !errors.Is(err, db.ErrConflict) {
		t.Fatalf("duplicate key error = %v, want ErrConflict", err)
	}
	err = db.InterpretError(d.Pool.QueryRow(ctx, "select id from t where id = 42").Scan(&n))
	if !errors.Is(err, db.ErrNotFound) {
		t.Fatalf("no rows error = %v, want ErrNotFound", err)
	}
}

func TestValuesPostgreSQLRefusesAreInvalidInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	for _, tc := range []struct {
		name, sql, arg, code string
	}{
		{"NULInText", "select length($1::text)", "a\x00b", "22021"},
		{"NotUTF8InText", "select length($1::text)", "a\xffb", "22021"},
		{"NULEscapeInJSONB", "select length($1::jsonb::text)", `{"a": "\u0000"}`, "22P05"},
		{"NotAUUID", "select length($1::text::uuid::text)", "not-a-uuid", "22P02"},
		{"NumberOutOfRangeInJSONB", "select length($1::jsonb::text)", `{"n": 1e999999}`, "22003"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int
			err := db.InterpretError(d.Pool.QueryRow(ctx, tc.sql, tc.arg).Scan(&n))
			if !errors.Is(err, db.ErrInvalidInput) {
				t.Fatalf("error = %v, want ErrInvalidInput", err)
			}
			// The driver's error stays in the chain for logs and for callers that look.
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tc.code {
				t.Fatalf("error = %v, want SQLSTATE %s in the chain", err, tc.code)
			}
			if errors.Is(err, db.ErrUnavailable) || errors.Is(err, db.ErrNotFound) || errors.Is(err, db.ErrConflict) {
				t.Fatalf("error = %v matches another sentinel too", err)
			}
		})
	}
}

func TestWithTenantTxScopesSettingToTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		err := db.WithTenantTx(ctx, pool, tenant, func(ctx context.Context, tx pgx.Tx) error {
			var got string
			if err := tx.QueryRow(ctx, "select current_setting('app.tenant_id')").Scan(&got); err != nil {
				return err
			}
			if got != tenant {
				t.Errorf("app.tenant_id = %q, want %q", got, tenant)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Outside a tenant transaction the setting is empty again on every pooled connection.
	for range 5 {
		var got *string
		if err := pool.QueryRow(ctx, "select nullif(current_setting('app.tenant_id', true), '')").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != nil {
			t.Fatalf("app.tenant_id leaked out of its transaction: %q", *got)
		}
	}
	if err := db.WithTenantTx(ctx, pool, "", func(context.Context, pgx.Tx) error { return nil }); err == nil {
		t.Fatal("WithTenantTx accepted an empty tenant")
	}
}

func TestUnreachableServerIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.NewPool(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", nil)
	if err != nil {
		t.Fatalf("NewPool should be lazy: %v", err)
	}
	defer pool.Close()
	err = db.InterpretError(pool.Ping(ctx))
	if !errors.Is(err, db.ErrUnavailable) {
		t.Fatalf("ping error = %v, want ErrUnavailable", err)
	}
}

func TestTenantBatchIsOneTransactionScopedToTheTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	if _, err := d.Pool.Exec(ctx, `create table batch_probe (tenant text, n int primary key)`); err != nil {
		t.Fatal(err)
	}
	// Distinct keys per tenant: the table's primary key is n.
	for n, tenant := range []string{"tenant-a", "tenant-b"} {
		var seen [2]string
		b := &pgx.Batch{}
		b.Queue(`select current_setting('app.tenant_id')`).QueryRow(func(row pgx.Row) error { return row.Scan(&seen[0]) })
		b.Queue(`insert into batch_probe values (current_setting('app.tenant_id'), $1)`, n+1)
		b.Queue(`select tenant from batch_probe where tenant = current_setting('app.tenant_id')`).QueryRow(func(row pgx.Row) error { return row.Scan(&seen[1]) })
		if err := db.TenantBatch(ctx, d.Pool, tenant, b); err != nil {
			t.Fatal(err)
		}
		if seen[0] != tenant || seen[1] != tenant {
			t.Errorf("statements of %s's batch saw app.tenant_id %q and %q", tenant, seen[0], seen[1])
		}
	}
	// The setting ends with the batch on every pooled connection.
	for range 5 {
		var got *string
		if err := d.Pool.QueryRow(ctx, "select nullif(current_setting('app.tenant_id', true), '')").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != nil {
			t.Fatalf("app.tenant_id leaked out of its batch: %q", *got)
		}
	}
	// A failing statement undoes the ones before it: one transaction.
	b := &pgx.Batch{}
	b.Queue(`insert into batch_probe values ('tenant-a', 3)`)
	b.Queue(`insert into batch_probe values ('tenant-a', 1)`) // duplicate key
	if err := db.TenantBatch(ctx, d.Pool, "tenant-a", b); !errors.Is(err, db.ErrConflict) {
		t.Fatalf("duplicate key in a batch = %v, want ErrConflict", err)
	}
	var n int
	if err := d.Pool.QueryRow(ctx, `select count(*) from batch_probe`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("after the failed batch the table has %d rows, want the 2 from before: it was not one transaction", n)
	}
	// One statement, one row.
	var got string
	err := db.TenantQueryRow(ctx, d.Pool, "tenant-b", func(row pgx.Row) error { return row.Scan(&got) },
		`select tenant from batch_probe where tenant = current_setting('app.tenant_id')`)
	if err != nil || got != "tenant-b" {
		t.Fatalf("TenantQueryRow = %q, %v", got, err)
	}
	err = db.TenantQueryRow(ctx, d.Pool, "tenant-c", func(row pgx.Row) error { return row.Scan(&got) },
		`select tenant from batch_probe where tenant = current_setting('app.tenant_id')`)
	if !errors.Is(err, db.ErrNotFound) {
		t.Fatalf("TenantQueryRow without a row = %v, want ErrNotFound", err)
	}
	if err := db.TenantBatch(ctx, d.Pool, "", &pgx.Batch{}); err == nil {
		t.Fatal("TenantBatch accepted an empty tenant")
	}
}

// TestDeadlockAndSerializationFailureAreTransient: PostgreSQL aborting a transaction for a
// concurrent one is ErrTransient and ErrUnavailable (503 with Retry-After, waited out by the
// workers' write retries), not an unmapped driver error (500).
func TestDeadlockAndSerializationFailureAreTransient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	if _, err := d.Pool.Exec(ctx, `create table conflict_probe (tenant text, id int, n int, primary key (tenant, id));
		insert into conflict_probe values ('tenant-a', 1, 0), ('tenant-a', 2, 0), ('tenant-b', 1, 0), ('tenant-b', 2, 0)`); err != nil {
		t.Fatal(err)
	}
	requireTransient := func(t *testing.T, err error, code string) {
		t.Helper()
		if !errors.Is(err, db.ErrTransient) || !errors.Is(err, db.ErrUnavailable) {
			t.Fatalf("error = %v, want ErrTransient and ErrUnavailable", err)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != code {
			t.Fatalf("error = %v, want SQLSTATE %s in the chain", err, code)
		}
		if errors.Is(err, db.ErrConflict) || errors.Is(err, db.ErrNotFound) {
			t.Fatalf("error = %v matches another sentinel too", err)
		}
	}
	bump := func(ctx context.Context, tx pgx.Tx, tenant string, id int) error {
		_, err := tx.Exec(ctx, `update conflict_probe set n = n + 1 where tenant = $1 and id = $2`, tenant, id)
		return db.InterpretError(err)
	}
	count := func(t *testing.T, tenant string) int {
		t.Helper()
		var n int
		if err := d.Pool.QueryRow(ctx, `select sum(n) from conflict_probe where tenant = $1`, tenant).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("Deadlock", func(t *testing.T) {
		// Two transactions of tenant-a take its two rows in opposite orders, each after the
		// other took its first. The first waits 30 s before looking for a deadlock, so the
		// second (1 s, the default) finds it and is the one rolled back. Tenant b's
		// transaction on the same table meanwhile is not involved.
		var locked sync.WaitGroup
		locked.Add(2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, order := range [][2]int{{1, 2}, {2, 1}} {
			wg.Go(func() {
				errs[i] = db.WithTenantTx(ctx, d.Pool, "tenant-a", func(ctx context.Context, tx pgx.Tx) error {
					if i == 0 {
						if _, err := tx.Exec(ctx, `set local deadlock_timeout = '30s'`); err != nil {
							return err
						}
					}
					if err := bump(ctx, tx, "tenant-a", order[0]); err != nil {
						locked.Done()
						return err
					}
					locked.Done()
					locked.Wait()
					return bump(ctx, tx, "tenant-a", order[1])
				})
			})
		}
		if err := db.WithTenantTx(ctx, d.Pool, "tenant-b", func(ctx context.Context, tx pgx.Tx) error {
			return errors.Join(bump(ctx, tx, "tenant-b", 1), bump(ctx, tx, "tenant-b", 2))
		}); err != nil {
			t.Fatalf("tenant b's transaction: %v", err)
		}
		wg.Wait()
		if errs[0] != nil {
			t.Fatalf("the transaction that waited: %v", errs[0])
		}
		requireTransient(t, errs[1], "40P01")
		if a, b := count(t, "tenant-a"), count(t, "tenant-b"); a != 2 || b != 2 {
			t.Fatalf("tenant-a has %d updates, tenant-b %d; want 2 each (the deadlocked transaction rolled back)", a, b)
		}
	})

	t.Run("SerializationFailure", func(t *testing.T) {
		// A repeatable-read transaction updates a row another one changed after its snapshot.
		err := db.WithTx(ctx, d.Pool, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `set transaction isolation level repeatable read`); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `select n from conflict_probe where tenant = 'tenant-b' and id = 1`).Scan(&n); err != nil {
				return err
			}
			if err := db.WithTx(ctx, d.Pool, func(ctx context.Context, other pgx.Tx) error {
				return bump(ctx, other, "tenant-b", 1)
			}); err != nil {
				t.Errorf("concurrent update: %v", err)
			}
			return bump(ctx, tx, "tenant-b", 1)
		})
		requireTransient(t, err, "40001")
	})
}

// An older binary migrating a database a newer release has migrated (a rollback) applies
// nothing and says so in the log: it runs on the newer schema, as migrations are additive.
func TestMigrateOlderBinaryWarnsAboutNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.NewEmpty(t)
	newer := fstest.MapFS{
		"0001_base.up.sql": {Data: []byte("create table rollback_a (id int)")},
		"0002_next.up.sql": {Data: []byte("create table rollback_b (id int)")},
	}
	if _, err := db.Migrate(ctx, d.Pool, newer, nil); err != nil {
		t.Fatal(err)
	}
	older := fstest.MapFS{"0001_base.up.sql": newer["0001_base.up.sql"]}
	var logs bytes.Buffer
	applied, err := db.Migrate(ctx, d.Pool, older, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil || len(applied) != 0 {
		t.Fatalf("older migrate applied %v, err %v; want nothing", applied, err)
	}
	if !strings.Contains(logs.String(), "does not know") || !strings.Contains(logs.String(), `"versions":[2]`) {
		t.Fatalf("no warning about version 2 in the log: %s", logs.String())
	}
}
