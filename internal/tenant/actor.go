package tenant

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
)

// Granter is who asks for a change of rights (a membership change, a new API key): a Role,
// taken as it is, or an Actor, whose role the store reads again under the tenant's lock.
type Granter interface {
	// roleNow returns the role the asker holds now, inside tx, which holds the tenant's lock.
	roleNow(ctx context.Context, tx pgx.Tx, tenantID string, now time.Time) (Role, error)
}

func (r Role) roleNow(context.Context, pgx.Tx, string, time.Time) (Role, error) { return r, nil }

// Actor is an authenticated principal asking for a change of rights: the role it
// authenticated with, and where that role comes from, an API key (KeyID) or a membership
// (UserID, when KeyID is empty). A request can wait for the tenant's lock behind a change
// that demotes its principal or revokes its key; the store reads the actor again once it
// holds the lock, so the request acts with what is left, never with the role it had before.
type Actor struct {
	Role   Role
	UserID string
	KeyID  string
}

func (a Actor) roleNow(ctx context.Context, tx pgx.Tx, tenantID string, now time.Time) (Role, error) {
	var current Role
	var err error
	switch {
	case a.KeyID != "":
		if !ValidID(a.KeyID) {
			return "", nil
		}
		var live bool
		err = tx.QueryRow(ctx, `select role, revoked_at is null and (expires_at is null or expires_at > $3)
			from api_keys where tenant_id = $1 and id = $2`, tenantID, a.KeyID, now).Scan(&current, &live)
		if err == nil && !live {
			current = ""
		}
	case a.UserID != "":
		if !ValidID(a.UserID) {
			return "", nil
		}
		err = tx.QueryRow(ctx, `select role from memberships where tenant_id = $1 and user_id = $2`,
			tenantID, a.UserID).Scan(&current)
	default:
		return a.Role, nil
	}
	if err = db.InterpretError(err); errors.Is(err, db.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	// Never more than it authenticated with: a promotion in between counts from the next
	// request on.
	if roleRank[current] < roleRank[a.Role] {
		return current, nil
	}
	return a.Role, nil
}

// lockTenant locks the tenant's row until tx ends, which serialises every change of rights in
// a tenant (membership changes, new and revoked keys): two owners demoting each other at once
// cannot both see the other as the remaining owner, a principal demoted meanwhile is read
// again after the demotion, and every such transaction takes the tenant's row before any
// key's row, so none deadlocks with another.
func lockTenant(ctx context.Context, tx pgx.Tx, tenantID string) error {
	_, err := tx.Exec(ctx, `select 1 from tenants where id = $1 for update`, tenantID)
	return db.InterpretError(err)
}
