package tenant

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
)

// MemberChange is what a membership change did besides the change itself.
type MemberChange struct {
	Member Member
	// Previous is the role before the change (empty for additions).
	Previous Role
	// RevokedKeys are the ids of API keys the change revoked: a removed member's keys, or a
	// demoted member's keys whose role is now above theirs.
	RevokedKeys []string
}

// ListMembers pages through a tenant's members, oldest first.
func (s *Store) ListMembers(ctx context.Context, tenantID string, p ListParams) (*Page[Member], error) {
	if !ValidID(tenantID) {
		return nil, ErrNotFound
	}
	cur, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	page := &Page[Member]{Items: []Member{}}
	limit := p.limit()
	err = db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+memberColumns+`
			from memberships m join users u on u.id = m.user_id
			where m.tenant_id = $1 and ($2::timestamptz is null or (m.created_at, m.user_id) > ($2, nullif($3, '')::uuid))
			order by m.created_at, m.user_id limit $4`, tenantID, cur.At, cur.ID, limit+1)
		if err != nil {
			return db.InterpretError(err)
		}
		defer rows.Close()
		for rows.Next() {
			m, err := scanMember(rows)
			if err != nil {
				return err
			}
			page.Items = append(page.Items, *m)
		}
		return db.InterpretError(rows.Err())
	})
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.NextCursor = encodeCursor(cursor{At: &last.CreatedAt, ID: last.User.ID})
	}
	return page, nil
}

// AddMember adds the user with this email to a tenant, creating the user when nobody has
// that email yet. by is whoever asks (a Role, or an Actor read again under the tenant's
// lock): only owners grant owner, and nobody grants a role above their own. A user who is
// already a member is ErrConflict. after runs in the same transaction, as in the other
// membership changes.
func (s *Store) AddMember(ctx context.Context, tenantID, email string, role Role, by Granter, after ...After[MemberChange]) (*MemberChange, error) {
	if !ValidID(tenantID) {
		return nil, ErrNotFound
	}
	if !role.Valid() {
		return nil, &ValidationError{Field: "role", Reason: "want owner, admin, member or viewer"}
	}
	email, err := normaliseEmail(email)
	if err != nil {
		return nil, err
	}
	var out MemberChange
	err = db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, tenantID); err != nil {
			return err
		}
		if err := s.mayGrant(ctx, tx, tenantID, by, "", role); err != nil {
			return err
		}
		userID, err := ensureUser(ctx, tx, email)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `insert into memberships (tenant_id, user_id, role) values ($1, $2, $3)`,
			tenantID, userID, role); err != nil {
			return db.InterpretError(err)
		}
		m, err := getMember(ctx, tx, tenantID, userID)
		if err != nil {
			return err
		}
		out.Member = *m
		return runAfter(ctx, tx, &out, after)
	})
	if err != nil {
		return nil, fmt.Errorf("add member: %w", err)
	}
	return &out, nil
}

// ChangeMemberRole sets a member's role. Only owners promote to or demote from owner; the
// last owner cannot be demoted (ErrLastOwner). API keys the member created whose role is now
// above theirs are revoked, so a key never outranks its creator. by is as in AddMember.
func (s *Store) ChangeMemberRole(ctx context.Context, tenantID, userID string, role Role, by Granter, after ...After[MemberChange]) (*MemberChange, error) {
	if !ValidID(tenantID) || !ValidID(userID) {
		return nil, ErrNotFound
	}
	if !role.Valid() {
		return nil, &ValidationError{Field: "role", Reason: "want owner, admin, member or viewer"}
	}
	var out MemberChange
	var stamp int64
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		m, err := lockMember(ctx, tx, tenantID, userID)
		if err != nil {
			return err
		}
		if err := s.mayGrant(ctx, tx, tenantID, by, m.Role, role); err != nil {
			return err
		}
		out.Previous = m.Role
		if m.Role == RoleOwner && role != RoleOwner {
			if err := keepAnOwner(ctx, tx, tenantID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `update memberships set role = $3 where tenant_id = $1 and user_id = $2`,
			tenantID, userID, role); err != nil {
			return db.InterpretError(err)
		}
		if out.RevokedKeys, err = s.revokeKeysOf(ctx, tx, tenantID, userID, role); err != nil {
			return err
		}
		if stamp, err = authStamp(ctx, tx, tenantID); err != nil {
			return err
		}
		m.Role = role
		out.Member = *m
		return runAfter(ctx, tx, &out, after)
	})
	if err != nil {
		return nil, fmt.Errorf("change member role: %w", err)
	}
	s.authChanged(ctx, tenantID, stamp)
	return &out, nil
}

// RemoveMember removes a member and revokes the API keys they created. Only owners remove
// owners, and the last owner stays (ErrLastOwner). by is as in AddMember.
func (s *Store) RemoveMember(ctx context.Context, tenantID, userID string, by Granter, after ...After[MemberChange]) (*MemberChange, error) {
	if !ValidID(tenantID) || !ValidID(userID) {
		return nil, ErrNotFound
	}
	var out MemberChange
	var stamp int64
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		m, err := lockMember(ctx, tx, tenantID, userID)
		if err != nil {
			return err
		}
		if err := s.mayGrant(ctx, tx, tenantID, by, m.Role, ""); err != nil {
			return err
		}
		out.Previous = m.Role
		if m.Role == RoleOwner {
			if err := keepAnOwner(ctx, tx, tenantID); err != nil {
				return err
			}
		}
		if out.RevokedKeys, err = s.revokeKeysOf(ctx, tx, tenantID, userID, ""); err != nil {
			return err
		}
		if stamp, err = authStamp(ctx, tx, tenantID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `delete from memberships where tenant_id = $1 and user_id = $2`, tenantID, userID); err != nil {
			return db.InterpretError(err)
		}
		out.Member = *m
		return runAfter(ctx, tx, &out, after)
	})
	if err != nil {
		return nil, fmt.Errorf("remove member: %w", err)
	}
	s.authChanged(ctx, tenantID, stamp)
	return &out, nil
}

// mayGrant checks, inside tx and under the tenant's lock, that by may move a member from role
// from (empty for a new member) to role to (empty for a removal): never above its own role,
// and owners only by owners.
func (s *Store) mayGrant(ctx context.Context, tx pgx.Tx, tenantID string, by Granter, from, to Role) error {
	if by == nil {
		return ErrRoleTooHigh
	}
	role, err := by.roleNow(ctx, tx, tenantID, s.nowFunc())
	if err != nil {
		return err
	}
	if to != "" && !role.AtLeast(to) {
		return ErrRoleTooHigh
	}
	if from != "" && !role.AtLeast(from) {
		return ErrRoleTooHigh
	}
	return nil
}

// lockMember reads a membership after locking the tenant (lockTenant).
func lockMember(ctx context.Context, tx pgx.Tx, tenantID, userID string) (*Member, error) {
	if err := lockTenant(ctx, tx, tenantID); err != nil {
		return nil, err
	}
	return getMember(ctx, tx, tenantID, userID)
}

func keepAnOwner(ctx context.Context, tx pgx.Tx, tenantID string) error {
	var owners int
	if err := tx.QueryRow(ctx, `select count(*) from memberships where tenant_id = $1 and role = 'owner'`, tenantID).Scan(&owners); err != nil {
		return db.InterpretError(err)
	}
	if owners <= 1 {
		return ErrLastOwner
	}
	return nil
}

// revokeKeysOf revokes a user's live keys whose role is above max (all of them when max is
// empty) and returns their ids.
func (s *Store) revokeKeysOf(ctx context.Context, tx pgx.Tx, tenantID, userID string, max Role) ([]string, error) {
	above := []string{}
	for r, rank := range roleRank {
		if max == "" || rank > roleRank[max] {
			above = append(above, string(r))
		}
	}
	rows, err := tx.Query(ctx, `update api_keys set revoked_at = $4
		where tenant_id = $1 and created_by_user = $2 and revoked_at is null and role = any ($3)
		returning id::text`, tenantID, userID, above, s.nowFunc())
	if err != nil {
		return nil, db.InterpretError(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, db.InterpretError(err)
	}
	return ids, nil
}
