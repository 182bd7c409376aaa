package tenant

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
)

// ActiveAPIKey returns a tenant's key while it is neither revoked nor expired, and
// ErrInvalidKey otherwise. Tokens minted from a key check it on every use, so revoking the
// key ends them too; it is one primary-key read.
func (s *Store) ActiveAPIKey(ctx context.Context, tenantID, keyID string) (*APIKey, error) {
	key, err := s.GetAPIKey(ctx, tenantID, keyID)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidKey
	}
	if err != nil {
		return nil, err
	}
	if key.RevokedAt != nil || (key.ExpiresAt != nil && !key.ExpiresAt.After(s.nowFunc())) {
		return nil, ErrInvalidKey
	}
	return key, nil
}

// MemberByEmail returns the tenant's member with this email (case-insensitive), or
// ErrNotFound when no member has it.
func (s *Store) MemberByEmail(ctx context.Context, tenantID, email string) (*Member, error) {
	email = strings.TrimSpace(email)
	if !ValidID(tenantID) || email == "" {
		return nil, ErrNotFound
	}
	var m *Member
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		m, err = scanMember(tx.QueryRow(ctx, `select `+memberColumns+`
			from memberships m join users u on u.id = m.user_id
			where m.tenant_id = $1 and lower(u.email) = lower($2)`, tenantID, email))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("member by email: %w", err)
	}
	return m, nil
}
