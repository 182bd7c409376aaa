// Package dbtest gives tests a real, migrated PostgreSQL database.
//
// The server comes from TEST_DATABASE_URL (deploy/local/test-services.sh starts one on
// loopback). Each test binary gets its own freshly created and migrated database, dropped when
// the binary's tests end, so packages running in parallel never see each other's rows. A
// missing or unreachable server fails the test: database tests never skip.
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

// Database is one throw-away migrated database.
type Database struct {
	// URL connects to it.
	URL string
	// Pool is a pool on it, closed by Close.
	Pool *pgxpool.Pool
	name string
	base string
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

// Pool returns the pool of this test binary's shared database, creating and migrating it on
// first use. Tests isolate their rows by creating their own tenants.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	once.Do(func() {
		shared, sharedEr = create(context.Background(), os.Getenv("TEST_DATABASE_URL"))
	})
	if sharedEr != nil {
		tb.Fatalf("test database: %v", sharedEr)
	}
	return shared.Pool
}

// SharedURL returns the connection URL of the database behind Pool.
func SharedURL(tb testing.TB) string {
	tb.Helper()
	Pool(tb)
	return shared.URL
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
	return d, nil
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
