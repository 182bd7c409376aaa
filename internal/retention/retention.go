// Package retention deletes session history older than each tenant's event retention, in
// bounded batches, one worker at a time.
//
// A Service runs in every worker; a PostgreSQL session advisory lock makes sure only one of
// them purges at a time, and the others skip their round. Each batch is its own short tenant
// transaction (row-level security applies as everywhere else), so a purge of millions of
// rows never holds locks or a snapshot for long. Every batch that deletes something is
// recorded in the tenant's audit log as retention.purge, in the batch's own transaction.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/db"
)

// lockKey is the advisory lock held while a purge runs.
const lockKey = 7_346_118_232

// ActionPurge is the audit action of a purge.
const ActionPurge = "retention.purge"

// Config tunes a Service; nil means defaults.
type Config struct {
	// DefaultDays is the retention of tenants without their own setting
	// (TAPLINE_EVENT_RETENTION_DAYS); 0 keeps history forever.
	DefaultDays int
	// Interval is the time between purges. Defaults to 10 minutes.
	Interval time.Duration
	// BatchSize is how many events one transaction deletes. Defaults to 5000.
	BatchSize int
	// Audit records purges; nil records nothing.
	Audit *audit.Recorder
	// Logger receives purge summaries. nil discards.
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// Service purges old session events periodically.
type Service struct {
	pool *pgxpool.Pool
	cfg  Config

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Service on the application pool.
func New(pool *pgxpool.Pool, cfg *Config) *Service {
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Minute
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 5000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Service{pool: pool, cfg: c}
}

// Start runs a purge now and then every Interval until Stop. Starting twice is an error.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return errors.New("retention: already started")
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.loop(ctx)
	return nil
}

// Stop ends the loop, interrupting a purge between batches, and waits for it.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (s *Service) loop(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		res, err := s.RunOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.cfg.Logger.WarnContext(ctx, "retention purge failed", slog.Any("error", err))
		case res.Deleted > 0:
			s.cfg.Logger.InfoContext(ctx, "retention purge", slog.Int64("deleted", res.Deleted), slog.Int("tenants", res.Tenants))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Result summarises one purge.
type Result struct {
	// Ran is false when another process held the purge lock, so this one did nothing.
	Ran bool
	// Tenants counts tenants whose history was purged, Deleted the events deleted.
	Tenants int
	Deleted int64
}

// RunOnce purges every tenant's expired events, unless another process is purging.
func (s *Service) RunOnce(ctx context.Context) (Result, error) {
	var res Result
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("retention: %w", db.InterpretError(err))
	}
	defer conn.Release()
	if err := conn.QueryRow(ctx, "select pg_try_advisory_lock($1)", lockKey).Scan(&res.Ran); err != nil {
		return res, fmt.Errorf("retention lock: %w", db.InterpretError(err))
	}
	if !res.Ran {
		return res, nil
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "select pg_advisory_unlock($1)", lockKey)
	}()
	type policy struct {
		tenantID string
		days     *int
	}
	rows, err := conn.Query(ctx, "select tenant_id::text, event_retention_days from tapline_retention_policies()")
	if err != nil {
		return res, fmt.Errorf("retention policies: %w", db.InterpretError(err))
	}
	policies, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (policy, error) {
		var p policy
		return p, r.Scan(&p.tenantID, &p.days)
	})
	if err != nil {
		return res, fmt.Errorf("retention policies: %w", db.InterpretError(err))
	}
	now := s.cfg.Now()
	for _, p := range policies {
		days := s.cfg.DefaultDays
		if p.days != nil {
			days = *p.days
		}
		if days <= 0 {
			continue
		}
		before := now.Add(-time.Duration(days) * 24 * time.Hour)
		n, err := s.purgeTenant(ctx, p.tenantID, before)
		res.Deleted += n
		if n > 0 {
			res.Tenants++
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// purgeTenant deletes one tenant's events older than before, BatchSize per transaction.
// Each batch that deletes something records its own retention.purge entry in the tenant's
// audit log inside the batch's transaction, so the deletion and its record commit together:
// however the purge ends (the service stopping, a batch failing, the process dying between
// two batches), every committed batch is in the audit log and nothing else is. The entries
// of one purge share a purge id and number their batches from 1.
func (s *Service) purgeTenant(ctx context.Context, tenantID string, before time.Time) (total int64, err error) {
	purgeID := uuid.Must(uuid.NewV7()).String()
	for batch := 1; ; batch++ {
		var n int64
		err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `delete from session_events where ctid = any (array(
				select ctid from session_events where tenant_id = $1 and at < $2 limit $3))`,
				tenantID, before, s.cfg.BatchSize)
			if err != nil {
				return db.InterpretError(err)
			}
			n = tag.RowsAffected()
			if n == 0 || s.cfg.Audit == nil {
				return nil
			}
			_, err = s.cfg.Audit.Record(ctx, tx, audit.Entry{
				TenantID: tenantID, Actor: audit.SystemActor("retention"), Action: ActionPurge,
				Target: audit.Target{Type: "session_events", ID: tenantID},
				Details: map[string]any{
					"deleted": n, "before": before.UTC().Format(time.RFC3339),
					"purge_id": purgeID, "batch": batch,
				},
			})
			return err
		})
		if err != nil {
			// Not counted: the batch and its audit entry were rolled back (or the commit's
			// outcome is unknown).
			return total, fmt.Errorf("purge tenant %s: %w", tenantID, err)
		}
		total += n
		if n < int64(s.cfg.BatchSize) {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}
