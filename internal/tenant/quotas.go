package tenant

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
)

// Quotas are a tenant's limits.
type Quotas struct {
	// MaxLiveSessions caps sessions that are connecting or ready.
	MaxLiveSessions int
	// EventRetentionDays is how long session history is kept; 0 keeps it forever.
	EventRetentionDays int
}

// QuotaOverrides changes a tenant's quotas; a nil field leaves it as it is, and Reset puts
// both back to the install's defaults first.
type QuotaOverrides struct {
	Reset              bool
	MaxLiveSessions    *int
	EventRetentionDays *int
}

// Quotas returns a tenant's effective quotas: its own settings where it has them, defaults
// (the install's configuration) elsewhere.
func (s *Store) Quotas(ctx context.Context, tenantID string, defaults Quotas) (Quotas, error) {
	if !ValidID(tenantID) {
		return Quotas{}, ErrNotFound
	}
	q := defaults
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return db.InterpretError(tx.QueryRow(ctx, `select coalesce(max_live_sessions, $2), coalesce(event_retention_days, $3)
			from tenants where id = $1`, tenantID, defaults.MaxLiveSessions, defaults.EventRetentionDays).
			Scan(&q.MaxLiveSessions, &q.EventRetentionDays))
	})
	if err != nil {
		return Quotas{}, fmt.Errorf("tenant quotas: %w", err)
	}
	return q, nil
}

// SetQuotas overrides a tenant's quotas. Operators set them (`api quota`); no API role can,
// so a tenant cannot raise its own limits.
func (s *Store) SetQuotas(ctx context.Context, tenantID string, o QuotaOverrides) error {
	if !ValidID(tenantID) {
		return ErrNotFound
	}
	if o.MaxLiveSessions != nil && *o.MaxLiveSessions < 1 {
		return &ValidationError{Field: "max_live_sessions", Reason: "must be at least 1"}
	}
	if o.EventRetentionDays != nil && (*o.EventRetentionDays < 0 || *o.EventRetentionDays > 36500) {
		return &ValidationError{Field: "event_retention_days", Reason: "must be 0 (forever) to 36500"}
	}
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update tenants set
			max_live_sessions = case when $2 then $3::int else coalesce($3::int, max_live_sessions) end,
			event_retention_days = case when $2 then $4::int else coalesce($4::int, event_retention_days) end
			where id = $1`, tenantID, o.Reset, o.MaxLiveSessions, o.EventRetentionDays)
		if err != nil {
			return db.InterpretError(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set tenant quotas: %w", err)
	}
	return nil
}
