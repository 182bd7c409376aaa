// Package db owns the PostgreSQL connection pool, transactions and the mapping of driver
// errors into the few sentinels the rest of Tapline reasons about.
//
// Every tenant-scoped read and write goes through WithTenantTx, which sets app.tenant_id for
// the transaction only (set_config(…, true)), so row-level security sees the right tenant and
// a pooled connection never carries a tenant over to its next borrower.
package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Sentinel errors every store returns instead of driver errors.
var (
	// ErrNotFound means no row matched; cross-tenant lookups end here too.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique or exclusion constraint refused the write.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable means PostgreSQL could not be reached or is shutting down, or rolled the
	// transaction back to resolve a conflict (ErrTransient); callers answer 503 and retry later.
	ErrUnavailable = errors.New("database unavailable")
	// ErrTransient means PostgreSQL rolled the transaction back because of a concurrent one:
	// a deadlock (40P01) or a serialization failure (40001). Nothing the transaction wrote is
	// committed, and running it again later may succeed. Errors carrying it carry
	// ErrUnavailable too, so whatever waits out an unavailable database (the workers' write
	// retries, the api's 503 with Retry-After) does the same here.
	//
	// WithTx and TenantBatch do not run the transaction again themselves: the functions
	// and batches their callers give them are not all safe to run twice (some append the rows
	// they read to a slice declared outside the function; a call's insert is batched while
	// the caller rings its owner in Redis, and the owner's claim waits on that attempt's lock).
	ErrTransient = errors.New("transaction aborted by a concurrent one")
	// ErrStaleEpoch means a fenced write was refused because a newer owner exists.
	ErrStaleEpoch = errors.New("stale owner epoch")
	// ErrInvalidInput means PostgreSQL refused a value itself: a NUL character or bytes
	// that are not UTF-8 in text or jsonb, or text that does not parse as its column's type.
	// Input validation should refuse such values first; this is the backstop.
	ErrInvalidInput = errors.New("invalid input value")
)

// SQLSTATE codes Tapline raises or interprets.
const (
	codeUniqueViolation    = "23505"
	codeExclusionViolation = "23P01"
	codeForeignKey         = "23503"
	// Class 40, transaction rollback: PostgreSQL aborted the transaction for a concurrent one.
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	// Data exceptions a value from outside can cause: a NUL or an invalid byte sequence in
	// text (character_not_in_repertoire), a \u0000 escape in jsonb (untranslatable_character),
	// text that is not the type's form (invalid_text_representation), a number beyond the
	// type's range, as a JSON number jsonb cannot hold (numeric_value_out_of_range).
	codeCharacterNotInRepertoire  = "22021"
	codeUntranslatableCharacter   = "22P05"
	codeInvalidTextRepresentation = "22P02"
	codeNumericValueOutOfRange    = "22003"
	// CodeStaleEpoch is raised by the fencing triggers when an owner's epoch is stale.
	CodeStaleEpoch = "TL001"
)

// DBTX is what stores need: satisfied by *pgxpool.Pool, *pgxpool.Conn and pgx.Tx.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PoolOptions tunes NewPool; nil means defaults.
type PoolOptions struct {
	// MaxConns caps the pool. Defaults to pgxpool's default (max(4, cores)).
	MaxConns int32
	// Logger receives connection-level warnings. nil discards.
	Logger *slog.Logger
}

// NewPool builds the process's single pgx pool and checks that the server answers.
func NewPool(ctx context.Context, url string, opts *PoolOptions) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if opts != nil && opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "tapline"
	cfg.ConnConfig.Tracer = queryTracer{}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", InterpretError(err))
	}
	return pool, nil
}

// Beginner starts transactions: *pgxpool.Pool and pgx.Tx (for savepoints) both do.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// WithTx runs fn in a transaction, committing when fn returns nil and rolling back
// otherwise. The rollback runs on a context that ignores cancellation so a cancelled request
// never leaves a transaction open on a pooled connection.
func WithTx(ctx context.Context, b Beginner, fn func(ctx context.Context, tx pgx.Tx) error) (err error) {
	tx, err := b.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", InterpretError(err))
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", InterpretError(err))
	}
	return nil
}

// WithTenantTx is WithTx with app.tenant_id set for the transaction, so row-level security
// policies admit only tenantID's rows.
func WithTenantTx(ctx context.Context, b Beginner, tenantID string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if tenantID == "" {
		return errors.New("tenant transaction without a tenant")
	}
	return WithTx(ctx, b, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setTenantSQL, tenantID); err != nil {
			return fmt.Errorf("set tenant: %w", InterpretError(err))
		}
		return fn(ctx, tx)
	})
}

// setTenantSQL scopes row-level security to one tenant for the rest of the transaction.
const setTenantSQL = "select set_config('app.tenant_id', $1, true)"

// TenantBatch runs the statements queued on b for tenantID in one round trip: set_config
// and the statements go to PostgreSQL as one pipeline ending in a single Sync, which it runs
// as one implicit transaction, so the setting applies to every statement and to nothing
// after them, and either all of them commit or none does. Results reach the callbacks given
// to the queued queries (QueryRow, Query, Exec); the first error is returned, interpreted.
// A callback's own error is only reported: by then PostgreSQL has committed the pipeline.
//
// WithTenantTx costs four round trips (begin, set_config, the statement, commit); a
// tenant-scoped read or a single write that needs nothing from Go between its statements
// costs one here.
func TenantBatch(ctx context.Context, b Batcher, tenantID string, batch *pgx.Batch) error {
	if tenantID == "" {
		return errors.New("tenant batch without a tenant")
	}
	full := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(batch.QueuedQueries)+1)}
	full.Queue(setTenantSQL, tenantID)
	full.QueuedQueries = append(full.QueuedQueries, batch.QueuedQueries...)
	if err := b.SendBatch(ctx, full).Close(); err != nil {
		return InterpretError(err)
	}
	return nil
}

// TenantQueryRow is TenantBatch for one statement whose single row scan reads.
func TenantQueryRow(ctx context.Context, b Batcher, tenantID string, scan func(pgx.Row) error, sql string, args ...any) error {
	batch := &pgx.Batch{}
	batch.Queue(sql, args...).QueryRow(scan)
	return TenantBatch(ctx, b, tenantID, batch)
}

// Batcher sends batches: *pgxpool.Pool, *pgxpool.Conn and *pgx.Conn do.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// InterpretError maps driver errors to this package's sentinels, keeping the original in the
// chain for logs. It is the one place that knows pgx's error types.
func InterpretError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == codeUniqueViolation || pgErr.Code == codeExclusionViolation:
			return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
		case pgErr.Code == CodeStaleEpoch:
			return fmt.Errorf("%w: %s", ErrStaleEpoch, pgErr.Message)
		case pgErr.Code == codeForeignKey:
			return fmt.Errorf("%w: %s", ErrNotFound, pgErr.ConstraintName)
		case pgErr.Code == codeCharacterNotInRepertoire || pgErr.Code == codeUntranslatableCharacter ||
			pgErr.Code == codeInvalidTextRepresentation || pgErr.Code == codeNumericValueOutOfRange:
			return fmt.Errorf("%w: %w", ErrInvalidInput, err)
		case pgErr.Code == codeDeadlockDetected || pgErr.Code == codeSerializationFailure:
			return errors.Join(ErrUnavailable, ErrTransient, err)
		case len(pgErr.Code) == 2+3 && (pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57"):
			// 08 connection exceptions, 57 operator intervention (shutdown, crash recovery).
			return errors.Join(ErrUnavailable, err)
		}
		return err
	}
	if isConnectionError(err) {
		return errors.Join(ErrUnavailable, err)
	}
	return err
}

func isConnectionError(err error) bool {
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) && !errors.Is(err, context.Canceled)
}

// queryTracer records one span per query, named after the first words of the SQL.
type queryTracer struct{}

type spanKey struct{}

func (queryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	ctx, span := otel.Tracer("github.com/tapline/tapline/internal/db").Start(ctx, "postgres.query",
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.String("db.statement", truncate(data.SQL, 200))))
	return context.WithValue(ctx, spanKey{}, span)
}

func (queryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span, ok := ctx.Value(spanKey{}).(trace.Span)
	if !ok {
		return
	}
	if data.Err != nil {
		span.RecordError(data.Err)
	}
	span.End()
}

// A batch is one span, postgres.batch, with its statements as events.
func (queryTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	n := 0
	if data.Batch != nil {
		n = data.Batch.Len()
	}
	ctx, span := otel.Tracer("github.com/tapline/tapline/internal/db").Start(ctx, "postgres.batch",
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.Int("db.batch.size", n)))
	return context.WithValue(ctx, spanKey{}, span)
}

func (queryTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	span, ok := ctx.Value(spanKey{}).(trace.Span)
	if !ok || !span.IsRecording() {
		return
	}
	span.AddEvent("query", trace.WithAttributes(attribute.String("db.statement", truncate(data.SQL, 200))))
	if data.Err != nil {
		span.RecordError(data.Err)
	}
}

func (queryTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	span, ok := ctx.Value(spanKey{}).(trace.Span)
	if !ok {
		return
	}
	if data.Err != nil {
		span.RecordError(data.Err)
	}
	span.End()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
