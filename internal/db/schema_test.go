package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/migrations"
)

// A process checks, as the application role, that its database has every migration its
// binary knows: a release started before `api migrate` stops naming what is missing, and a
// database a newer release migrated (a rollback) passes.
func TestCheckSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := dbtest.New(t)
	if err := db.CheckSchema(ctx, d.AppPool, migrations.FS); err != nil {
		t.Fatalf("CheckSchema of a migrated database = %v", err)
	}

	newer := fstest.MapFS{}
	entries, err := migrations.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := migrations.FS.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		newer[e.Name()] = &fstest.MapFile{Data: raw}
	}
	newer["9998_next_release.up.sql"] = &fstest.MapFile{Data: []byte("select 1;")}
	err = db.CheckSchema(ctx, d.AppPool, newer)
	if !errors.Is(err, db.ErrSchemaBehind) || !strings.Contains(err.Error(), "9998_next_release") || !strings.Contains(err.Error(), "api migrate") {
		t.Fatalf("CheckSchema for a newer binary = %v, want ErrSchemaBehind naming 9998_next_release", err)
	}

	// A rollback: the database has a migration this binary does not know.
	if _, err := d.Pool.Exec(ctx, `insert into schema_migrations (version, name) values (9999, 'from_a_newer_release')`); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckSchema(ctx, d.AppPool, migrations.FS); err != nil {
		t.Fatalf("CheckSchema of a database a newer release migrated = %v, want nil", err)
	}

	// A database from before the check itself.
	if _, err := d.Pool.Exec(ctx, `drop function tapline_schema_versions()`); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckSchema(ctx, d.AppPool, migrations.FS); !errors.Is(err, db.ErrSchemaBehind) {
		t.Fatalf("CheckSchema of a database before 0021 = %v, want ErrSchemaBehind", err)
	}
}
