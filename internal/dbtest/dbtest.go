// Package dbtest gives tests a real, migrated PostgreSQL database.
//
// The server comes from TEST_DATABASE_URL (deploy/local/test-services.sh starts one on
// loopback). Each test binary gets its own freshly created and migrated database, dropped when
// the binary's tests end, so packages running in parallel never see each other's rows. A
// missing or unreachable server fails the test: database tests never skip.
//
// Like production, tests act as the application role: Pool connects as tapline_app (a login
// role with no BYPASSRLS that owns nothing), so row-level security applies to every query.
// OwnerPool connects as TEST_DATABASE_URL's user, the tables' owner, for tests that must
// reach past RLS (tampering with the audit log, checking catalogs).
//
// Only _test.go files import this package.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/migrations"
)

var (
	once     sync.Once
	shared   *Database
	sharedEr error
)

// AppRole is the role the application connects as; migrations create it (NOLOGIN) when it is
// missing and dbtest lets it log in.
const AppRole = "tapline_app"

// Database is one throw-away migrated database.
type Database struct {
	// URL connects to it as the owner (TEST_DATABASE_URL's user).
	URL string
	// Pool is a pool on it as the owner, closed by Close.
	Pool *pgxpool.Pool
	// AppURL and AppPool connect as AppRole. AppPool is nil for NewEmpty databases.
	AppURL  string
	AppPool *pgxpool.Pool
	name    string
	base    string
}

// ServerURL returns TEST_DATABASE_URL or fails the test.
func ServerURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		tb.Fatal("TEST_DATABASE_URL is not set: run the tests through `make test` (deploy/local/test-services.sh)")
	}
	return u
}

// Pool returns an application-role pool (AppRole, under row-level security) on this test
// binary's shared database, creating and migrating it on first use. Tests isolate their rows
// by creating their own tenants.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return sharedDB(tb).AppPool
}

// OwnerPool returns a pool on the same database as Pool, connected as the tables' owner.
func OwnerPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return sharedDB(tb).Pool
}

// SharedURL returns the application-role connection URL of the database behind Pool.
func SharedURL(tb testing.TB) string {
	tb.Helper()
	return sharedDB(tb).AppURL
}

func sharedDB(tb testing.TB) *Database {
	tb.Helper()
	once.Do(func() {
		shared, sharedEr = create(context.Background(), os.Getenv("TEST_DATABASE_URL"))
	})
	if sharedEr != nil {
		tb.Fatalf("test database: %v", sharedEr)
	}
	return shared
}

// New creates a fresh migrated database for one test and drops it when the test ends. Use it
// for tests that need an empty database or break it on purpose.
func New(tb testing.TB) *Database {
	tb.Helper()
	d, err := create(context.Background(), ServerURL(tb))
	if err != nil {
		tb.Fatalf("test database: %v", err)
	}
	tb.Cleanup(d.Close)
	return d
}

// NewEmpty creates a fresh database without migrating it.
func NewEmpty(tb testing.TB) *Database {
	tb.Helper()
	d, err := createDatabase(context.Background(), ServerURL(tb))
	if err != nil {
		tb.Fatalf("test database: %v", err)
	}
	tb.Cleanup(d.Close)
	return d
}

// Close drops the database. Shared databases are dropped by Shutdown.
func (d *Database) Close() {
	if d.AppPool != nil {
		d.AppPool.Close()
	}
	if d.Pool != nil {
		d.Pool.Close()
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.base)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "drop database if exists "+pgx.Identifier{d.name}.Sanitize()+" with (force)")
}

// Shutdown drops the shared database; call it from TestMain after m.Run.
func Shutdown() {
	if shared != nil {
		shared.Close()
	}
}

func create(ctx context.Context, serverURL string) (*Database, error) {
	d, err := createDatabase(ctx, serverURL)
	if err != nil {
		return nil, err
	}
	if _, err := db.Migrate(ctx, d.Pool, migrations.FS, nil); err != nil {
		d.Close()
		return nil, err
	}
	if err := ensureAppLogin(ctx, d.Pool); err != nil {
		d.Close()
		return nil, err
	}
	u, err := url.Parse(d.URL)
	if err != nil {
		d.Close()
		return nil, err
	}
	// Local test servers trust loopback connections, as deploy/local/test-services.sh sets up.
	u.User = url.User(AppRole)
	d.AppURL = u.String()
	d.AppPool, err = db.NewPool(ctx, d.AppURL, nil)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("connect as %s: %w", AppRole, err)
	}
	if err := db.CheckAppRole(ctx, d.AppPool); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// ensureAppLogin lets AppRole log in. test-services.sh creates it as a login role up front;
// this covers servers set up another way. Roles are per cluster and test binaries migrate
// in parallel, so concurrent ALTERs are retried.
func ensureAppLogin(ctx context.Context, pool *pgxpool.Pool) error {
	var err error
	for range 20 {
		var canLogin bool
		if err = pool.QueryRow(ctx, "select rolcanlogin from pg_roles where rolname = $1", AppRole).Scan(&canLogin); err != nil {
			return fmt.Errorf("find role %s: %w", AppRole, err)
		}
		if canLogin {
			return nil
		}
		if _, err = pool.Exec(ctx, "alter role "+AppRole+" login"); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("let %s log in: %w", AppRole, err)
}

func createDatabase(ctx context.Context, serverURL string) (*Database, error) {
	if serverURL == "" {
		return nil, fmt.Errorf("TEST_DATABASE_URL is not set: run the tests through `make test`")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "tl_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(serverURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	d := &Database{URL: u.String(), name: name, base: serverURL}
	d.Pool, err = db.NewPool(ctx, d.URL, nil)
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
