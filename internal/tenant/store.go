package tenant

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/db"
)

// Store reads and writes tenants, users, memberships and API keys.
type Store struct {
	pool         *pgxpool.Pool
	nowFunc      func() time.Time
	onAuthChange func(ctx context.Context, tenantID string, stamp int64)
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, nowFunc: time.Now}
}

// OnAuthChange sets fn to be told, after the commit, of every change this store makes that
// can take an API key's rights away (a key revoked; a member demoted or removed, which
// revokes their keys), with the tenant's auth stamp after it (migration 0018). Caches of
// verified keys (package auth) learn of revocations through it. Call it before the store is
// used.
func (s *Store) OnAuthChange(fn func(ctx context.Context, tenantID string, stamp int64)) {
	s.onAuthChange = fn
}

// authStamp reads the tenant's auth stamp inside tx, after a change that may have bumped it.
func authStamp(ctx context.Context, tx pgx.Tx, tenantID string) (int64, error) {
	var stamp int64
	if err := tx.QueryRow(ctx, `select auth_stamp from tenants where id = $1`, tenantID).Scan(&stamp); err != nil {
		return 0, db.InterpretError(err)
	}
	return stamp, nil
}

// authChanged tells the OnAuthChange hook of a committed change.
func (s *Store) authChanged(ctx context.Context, tenantID string, stamp int64) {
	if s.onAuthChange != nil {
		s.onAuthChange(context.WithoutCancel(ctx), tenantID, stamp)
	}
}

// ValidationError names the input field at fault.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// BootstrapParams creates a tenant with its first owner.
type BootstrapParams struct {
	TenantName string
	Email      string
	KeyName    string
}

// BootstrapResult is what Bootstrap created. Secret is the owner API key, shown once.
type BootstrapResult struct {
	Tenant Tenant
	User   User
	Key    APIKey
	Secret string
}

// Bootstrap creates a tenant, its owner (reusing an existing user with that email) and an
// owner API key in one transaction.
func (s *Store) Bootstrap(ctx context.Context, p BootstrapParams) (*BootstrapResult, error) {
	name := strings.TrimSpace(p.TenantName)
	if name == "" || len(name) > 100 {
		return nil, &ValidationError{Field: "tenant", Reason: "must be 1 to 100 characters"}
	}
	email, err := normaliseEmail(p.Email)
	if err != nil {
		return nil, err
	}
	res := &BootstrapResult{}
	tenantID := newID()
	err = db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.QueryRow(ctx,
			`insert into tenants (id, name) values ($1, $2) returning id, name, created_at`,
			tenantID, name).Scan(&res.Tenant.ID, &res.Tenant.Name, &res.Tenant.CreatedAt); err != nil {
			return db.InterpretError(err)
		}
		userID, err := ensureUser(ctx, tx, email)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`insert into memberships (tenant_id, user_id, role) values ($1, $2, 'owner')`,
			tenantID, userID); err != nil {
			return db.InterpretError(err)
		}
		m, err := getMember(ctx, tx, tenantID, userID)
		if err != nil {
			return err
		}
		res.User = m.User
		user := &res.User
		key, secret, err := insertKey(ctx, tx, tenantID, CreateAPIKeyParams{
			Name: cmp.Or(p.KeyName, "bootstrap"), Role: RoleOwner, CreatedByUser: user.ID,
		})
		if err != nil {
			return err
		}
		res.Key, res.Secret = *key, secret
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bootstrap tenant %q: %w", name, err)
	}
	return res, nil
}

// GetTenant returns one tenant.
func (s *Store) GetTenant(ctx context.Context, tenantID string) (*Tenant, error) {
	if !ValidID(tenantID) {
		return nil, ErrNotFound
	}
	var t Tenant
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return db.InterpretError(tx.QueryRow(ctx,
			`select id, name, created_at from tenants where id = $1`, tenantID).Scan(&t.ID, &t.Name, &t.CreatedAt))
	})
	if err != nil {
		return nil, fmt.Errorf("get tenant: %w", err)
	}
	return &t, nil
}

// GetMember returns a user's membership in a tenant.
func (s *Store) GetMember(ctx context.Context, tenantID, userID string) (*Member, error) {
	if !ValidID(tenantID) || !ValidID(userID) {
		return nil, ErrNotFound
	}
	var m *Member
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		m, err = getMember(ctx, tx, tenantID, userID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get member: %w", err)
	}
	return m, nil
}

const memberColumns = `m.tenant_id, u.id, u.email, u.name, u.created_at, m.role, m.created_at`

func scanMember(row pgx.Row) (*Member, error) {
	var m Member
	if err := row.Scan(&m.TenantID, &m.User.ID, &m.User.Email, &m.User.Name, &m.User.CreatedAt, &m.Role, &m.CreatedAt); err != nil {
		return nil, db.InterpretError(err)
	}
	return &m, nil
}

func getMember(ctx context.Context, tx pgx.Tx, tenantID, userID string) (*Member, error) {
	return scanMember(tx.QueryRow(ctx, `select `+memberColumns+`
		from memberships m join users u on u.id = m.user_id
		where m.tenant_id = $1 and m.user_id = $2`, tenantID, userID))
}

// CreateAPIKeyParams describes a new key. Role must not exceed the creator's role: with By
// set, the store checks that under the tenant's lock (ErrRoleTooHigh), so a key created while
// its creator is being demoted either exists before the demotion, which then revokes it, or
// is refused; without By the caller vouches for it.
type CreateAPIKeyParams struct {
	Name          string
	Role          Role
	CreatedByUser string
	CreatedByKey  string
	ExpiresAt     *time.Time
	// By is who asks for the key (see Granter); nil skips the check.
	By Granter
	// After runs in the creating transaction (see After).
	After After[APIKey]
}

// CreateAPIKey stores a new key and returns it with its secret, which is never stored and
// cannot be shown again.
func (s *Store) CreateAPIKey(ctx context.Context, tenantID string, p CreateAPIKeyParams) (*APIKey, string, error) {
	if !ValidID(tenantID) {
		return nil, "", ErrNotFound
	}
	if !p.Role.Valid() {
		return nil, "", &ValidationError{Field: "role", Reason: "want owner, admin, member or viewer"}
	}
	if utf8.RuneCountInString(p.Name) > 100 {
		return nil, "", &ValidationError{Field: "name", Reason: "at most 100 characters"}
	}
	if p.ExpiresAt != nil && !p.ExpiresAt.After(s.nowFunc()) {
		return nil, "", &ValidationError{Field: "expires_at", Reason: "must be in the future"}
	}
	var key *APIKey
	var secret string
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		if p.By != nil {
			if err := lockTenant(ctx, tx, tenantID); err != nil {
				return err
			}
			by, err := p.By.roleNow(ctx, tx, tenantID, s.nowFunc())
			if err != nil {
				return err
			}
			if !by.AtLeast(p.Role) {
				return ErrRoleTooHigh
			}
		}
		var err error
		if key, secret, err = insertKey(ctx, tx, tenantID, p); err != nil {
			return err
		}
		return runAfter(ctx, tx, key, []After[APIKey]{p.After})
	})
	if err != nil {
		return nil, "", fmt.Errorf("create api key: %w", err)
	}
	return key, secret, nil
}

func insertKey(ctx context.Context, tx pgx.Tx, tenantID string, p CreateAPIKeyParams) (*APIKey, string, error) {
	parts := newKeyParts()
	row := tx.QueryRow(ctx, `insert into api_keys
		(id, tenant_id, lookup_id, secret_hash, name, role, created_by_user, created_by_key, expires_at)
		values ($1, $2, $3, $4, $5, $6, nullif($7, '')::uuid, nullif($8, '')::uuid, $9)
		returning `+keyColumns,
		newID(), tenantID, parts.lookup, parts.hash(), p.Name, p.Role, p.CreatedByUser, p.CreatedByKey, p.ExpiresAt)
	key, err := scanKey(row)
	if err != nil {
		return nil, "", err
	}
	return key, parts.token(), nil
}

const keyColumns = `id, tenant_id, lookup_id, name, role, coalesce(created_by_user::text, ''),
	coalesce(created_by_key::text, ''), created_at, expires_at, last_used_at, revoked_at`

func scanKey(row pgx.Row) (*APIKey, error) {
	var k APIKey
	var lookup string
	if err := row.Scan(&k.ID, &k.TenantID, &lookup, &k.Name, &k.Role, &k.CreatedByUser, &k.CreatedByKey,
		&k.CreatedAt, &k.ExpiresAt, &k.LastUsedAt, &k.RevokedAt); err != nil {
		return nil, db.InterpretError(err)
	}
	k.Prefix = keyPrefix + lookup
	return &k, nil
}

// VerifyAPIKey returns the key a bearer token names, or ErrInvalidKey when the token is
// malformed, unknown, revoked or expired. It records use at most once a minute per key.
func (s *Store) VerifyAPIKey(ctx context.Context, token string) (*APIKey, error) {
	key, _, err := s.VerifyAPIKeyStamped(ctx, token)
	return key, err
}

// VerifyAPIKeyStamped is VerifyAPIKey that also returns the auth stamp of the key's tenant
// (see OnAuthChange), read in the same snapshot as the key: as long as the stamp has not
// moved, nothing has taken the key's rights away since.
func (s *Store) VerifyAPIKeyStamped(ctx context.Context, token string) (*APIKey, int64, error) {
	parts, ok := parseKey(token)
	if !ok {
		return nil, 0, ErrInvalidKey
	}
	var hash []byte
	var stamp int64
	// The tenant is unknown until the key is found: this lookup goes through a function that
	// returns only the row whose lookup id matches (migration 0018). It is one read-only
	// statement, so it runs without an explicit transaction: one round trip.
	row := s.pool.QueryRow(ctx, `select id, tenant_id, lookup_id, name, role, coalesce(created_by_user::text, ''),
		coalesce(created_by_key::text, ''), created_at, expires_at, last_used_at, revoked_at, secret_hash, auth_stamp
		from tapline_lookup_api_key_stamped($1)`, parts.lookup)
	var k APIKey
	var lookup string
	err := db.InterpretError(row.Scan(&k.ID, &k.TenantID, &lookup, &k.Name, &k.Role, &k.CreatedByUser, &k.CreatedByKey,
		&k.CreatedAt, &k.ExpiresAt, &k.LastUsedAt, &k.RevokedAt, &hash, &stamp))
	if errors.Is(err, db.ErrNotFound) {
		return nil, 0, ErrInvalidKey
	}
	if err != nil {
		return nil, 0, fmt.Errorf("verify api key: %w", err)
	}
	k.Prefix = keyPrefix + lookup
	if subtle.ConstantTimeCompare(hash, parts.hash()) != 1 || k.RevokedAt != nil ||
		(k.ExpiresAt != nil && !k.ExpiresAt.After(s.nowFunc())) {
		return nil, 0, ErrInvalidKey
	}
	now := s.nowFunc()
	if k.LastUsedAt == nil || now.Sub(*k.LastUsedAt) > time.Minute {
		// Best effort: a failed bookkeeping write must not refuse a valid key.
		_ = db.WithTenantTx(ctx, s.pool, k.TenantID, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `update api_keys set last_used_at = $3::timestamptz
				where tenant_id = $1 and id = $2 and (last_used_at is null or last_used_at < $3::timestamptz - interval '1 minute')`,
				k.TenantID, k.ID, now)
			return err
		})
	}
	return &k, stamp, nil
}

// GetAPIKey returns one key of a tenant.
func (s *Store) GetAPIKey(ctx context.Context, tenantID, keyID string) (*APIKey, error) {
	if !ValidID(tenantID) || !ValidID(keyID) {
		return nil, ErrNotFound
	}
	var key *APIKey
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		key, err = scanKey(tx.QueryRow(ctx, `select `+keyColumns+` from api_keys where tenant_id = $1 and id = $2`, tenantID, keyID))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get api key: %w", err)
	}
	return key, nil
}

// ListAPIKeys pages through a tenant's keys, newest first, revoked ones included.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string, p ListParams) (*Page[APIKey], error) {
	if !ValidID(tenantID) {
		return nil, ErrNotFound
	}
	cur, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	page := &Page[APIKey]{Items: []APIKey{}}
	limit := p.limit()
	err = db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+keyColumns+` from api_keys
			where tenant_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, nullif($3, '')::uuid))
			order by created_at desc, id desc limit $4`, tenantID, cur.At, cur.ID, limit+1)
		if err != nil {
			return db.InterpretError(err)
		}
		defer rows.Close()
		for rows.Next() {
			k, err := scanKey(rows)
			if err != nil {
				return err
			}
			page.Items = append(page.Items, *k)
		}
		return db.InterpretError(rows.Err())
	})
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.NextCursor = encodeCursor(cursor{At: &last.CreatedAt, ID: last.ID})
	}
	return page, nil
}

// RevokeAPIKey revokes a key; revoking twice is not an error. The revoked key is returned.
// after runs in the revoking transaction.
func (s *Store) RevokeAPIKey(ctx context.Context, tenantID, keyID string, after ...After[APIKey]) (*APIKey, error) {
	return s.RevokeAPIKeyAs(ctx, tenantID, keyID, nil, after...)
}

// RevokeAPIKeyAs is RevokeAPIKey asked by by, which is read again under the tenant's lock (see
// Actor): it must still be an admin, and at least the key's role, once it holds the lock, so
// a principal demoted, or a key revoked, while its request waited revokes nothing. A nil by
// checks nothing.
func (s *Store) RevokeAPIKeyAs(ctx context.Context, tenantID, keyID string, by Granter, after ...After[APIKey]) (*APIKey, error) {
	if !ValidID(tenantID) || !ValidID(keyID) {
		return nil, ErrNotFound
	}
	var key *APIKey
	var stamp int64
	err := db.WithTenantTx(ctx, s.pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		// The tenant's lock first, as every change of rights takes it: the update's trigger
		// bumps the tenant's auth stamp, and taking the key's row before the tenant's would
		// deadlock with a membership change revoking the same key.
		if err := lockTenant(ctx, tx, tenantID); err != nil {
			return err
		}
		if by != nil {
			role, err := by.roleNow(ctx, tx, tenantID, s.nowFunc())
			if err != nil {
				return err
			}
			var keyRole Role
			if err := tx.QueryRow(ctx, `select role from api_keys where tenant_id = $1 and id = $2`, tenantID, keyID).Scan(&keyRole); err != nil {
				return db.InterpretError(err)
			}
			if !role.AtLeast(RoleAdmin) || !role.AtLeast(keyRole) {
				return ErrRoleTooHigh
			}
		}
		var err error
		key, err = scanKey(tx.QueryRow(ctx, `update api_keys set revoked_at = coalesce(revoked_at, $3)
			where tenant_id = $1 and id = $2 returning `+keyColumns, tenantID, keyID, s.nowFunc()))
		if err != nil {
			return err
		}
		if stamp, err = authStamp(ctx, tx, tenantID); err != nil {
			return err
		}
		return runAfter(ctx, tx, key, after)
	})
	if err != nil {
		return nil, fmt.Errorf("revoke api key: %w", err)
	}
	s.authChanged(ctx, tenantID, stamp)
	return key, nil
}

// ensureUser returns the id of the user with this email, creating the user when there is
// none. Users span tenants and row-level security shows a tenant only its members, so this
// goes through tapline_ensure_user (migration 0010), which reveals nothing but the id; the
// user becomes visible once the caller adds the membership.
func ensureUser(ctx context.Context, tx pgx.Tx, email string) (string, error) {
	var id string
	if err := tx.QueryRow(ctx, `select tapline_ensure_user($1, $2)::text`, newID(), email).Scan(&id); err != nil {
		return "", db.InterpretError(err)
	}
	return id, nil
}

func normaliseEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Address != s || len(s) > 320 {
		return "", &ValidationError{Field: "email", Reason: "not a valid email address"}
	}
	return s, nil
}

type cursor struct {
	At *time.Time `json:"at"`
	ID string     `json:"id"`
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.At == nil || !ValidID(c.ID) {
		return cursor{}, &ValidationError{Field: "cursor", Reason: "not a cursor this listing issued"}
	}
	return c, nil
}
