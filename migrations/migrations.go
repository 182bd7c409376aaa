// Package migrations embeds Tapline's numbered SQL migrations (NNNN_name.up.sql). They are
// applied in order, each in its own transaction, by db.Migrate (`api migrate`).
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
