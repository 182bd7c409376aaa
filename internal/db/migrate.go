package db

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the advisory lock every migrator takes, so concurrent `api migrate`
// runs (a deploy's Job and a developer's make run) apply each file exactly once.
const migrationLockKey = 7_346_118_231

// Migration is one numbered SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads NNNN_name.up.sql files from fsys, sorted by version. Duplicate or
// malformed numbers are errors.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.up.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int]string{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".up.sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: want NNNN_name.up.sql", n)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, n, v)
		}
		seen[v] = n
		body, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	return out, nil
}

// Migrate applies every migration newer than the database's version, each in its own
// transaction, under a session advisory lock. It returns the versions it applied; running it
// again applies nothing.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, logger *slog.Logger) (applied []int, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	migrations, err := LoadMigrations(fsys)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire: %w", InterpretError(err))
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", migrationLockKey); err != nil {
		return nil, fmt.Errorf("migration lock: %w", InterpretError(err))
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "select pg_advisory_unlock($1)", migrationLockKey)
	}()
	if _, err := conn.Exec(ctx, `create table if not exists schema_migrations (
		version int primary key,
		name text not null,
		applied_at timestamptz not null default now())`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", InterpretError(err))
	}
	done := map[int]bool{}
	rows, err := conn.Query(ctx, "select version from schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", InterpretError(err))
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", InterpretError(err))
	}
	for _, v := range versions {
		done[v] = true
	}
	known := map[int]bool{}
	for _, m := range migrations {
		known[m.Version] = true
	}
	var unknown []int
	for _, v := range versions {
		if !known[v] {
			unknown = append(unknown, v)
		}
	}
	if len(unknown) > 0 {
		// A newer release migrated this database and this one is older (a rollback). That is
		// supported, as migrations are additive, but worth a line in the log.
		slices.Sort(unknown)
		logger.WarnContext(ctx, "database has migrations this binary does not know: a newer release applied them; running on the newer schema",
			slog.Any("versions", unknown))
	}
	for _, m := range migrations {
		if done[m.Version] {
			continue
		}
		err := WithTx(ctx, conn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "insert into schema_migrations (version, name) values ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, InterpretError(err))
		}
		logger.InfoContext(ctx, "migration applied", slog.Int("version", m.Version), slog.String("name", m.Name))
		applied = append(applied, m.Version)
	}
	if len(applied) > 0 {
		secured, err := secureTenantTables(ctx, conn)
		if err != nil {
			return applied, err
		}
		if len(secured) > 0 {
			logger.InfoContext(ctx, "row-level security enabled", slog.Any("tables", secured))
		}
	}
	return applied, nil
}

// secureTenantTables runs tapline_secure_tenant_tables (migration 0010) when it exists: any
// table with a tenant_id column that lacks row-level security gets it, whichever migration
// created the table and in whatever order migrations were applied.
func secureTenantTables(ctx context.Context, conn *pgxpool.Conn) ([]string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "select to_regproc('tapline_secure_tenant_tables') is not null").Scan(&exists); err != nil {
		return nil, fmt.Errorf("secure tenant tables: %w", InterpretError(err))
	}
	if !exists {
		return nil, nil
	}
	rows, err := conn.Query(ctx, "select * from tapline_secure_tenant_tables()")
	if err != nil {
		return nil, fmt.Errorf("secure tenant tables: %w", InterpretError(err))
	}
	secured, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("secure tenant tables: %w", InterpretError(err))
	}
	return secured, nil
}

// ErrSchemaBehind means the database lacks migrations this binary needs: `api migrate` has not
// run for this release yet.
var ErrSchemaBehind = errors.New("the database schema is older than this release")

// CheckSchema checks, as the application role, that the database has every migration in
// fsys. A database migrated by a newer release passes: a rollback runs on the newer schema
// (see Migrate). A database without tapline_schema_versions (migrations/0021) predates it.
func CheckSchema(ctx context.Context, q DBTX, fsys fs.FS) error {
	ms, err := LoadMigrations(fsys)
	if err != nil {
		return err
	}
	have := map[int]bool{}
	rows, err := q.Query(ctx, `select v from tapline_schema_versions() v`)
	if err == nil {
		var versions []int
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int])
		for _, v := range versions {
			have[v] = true
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined_function: before 0021
		return fmt.Errorf("%w: it predates 0021_schema_versions; run `api migrate` (TAPLINE_MIGRATE_DATABASE_URL) before starting this release",
			ErrSchemaBehind)
	}
	if err != nil {
		return fmt.Errorf("read the schema's versions: %w", InterpretError(err))
	}
	var missing []string
	for _, m := range ms {
		if !have[m.Version] {
			missing = append(missing, fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s; run `api migrate` (TAPLINE_MIGRATE_DATABASE_URL) before starting it",
			ErrSchemaBehind, strings.Join(missing, ", "))
	}
	return nil
}

// CheckAtStart runs the checks a process makes of its database as it starts, as the
// application role: the role is one row-level security applies to (CheckAppRole), and the
// schema has every migration in fsys (CheckSchema). A database that is away earns only a
// warning: the process serves 503s until it is back, and the checks run again on its next
// start.
func CheckAtStart(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, logger *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := CheckAppRole(cctx, pool)
	if err == nil {
		err = CheckSchema(cctx, pool, fsys)
	}
	if errors.Is(err, ErrUnavailable) {
		logger.WarnContext(ctx, "database not checked at start: database unavailable", slog.Any("error", err))
		return nil
	}
	return err
}
