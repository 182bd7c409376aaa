package tenant

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// GranterFunc is a Granter whose role is fn's answer, asked inside the store's transaction
// while it holds the tenant's lock: tests use it to act at that moment.
type GranterFunc func(ctx context.Context, tx pgx.Tx) Role

func (f GranterFunc) roleNow(ctx context.Context, tx pgx.Tx, _ string, _ time.Time) (Role, error) {
	return f(ctx, tx), nil
}
