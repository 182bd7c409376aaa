-- Tenants, users, memberships and API keys.

create table tenants (
    id         uuid primary key,
    name       text not null,
    created_at timestamptz not null default now(),
    constraint tenants_name_len check (char_length(name) between 1 and 100)
);
create unique index tenants_name_key on tenants (lower(name));

create table users (
    id         uuid primary key,
    email      text not null,
    name       text not null default '',
    created_at timestamptz not null default now(),
    constraint users_email_len check (char_length(email) between 3 and 320)
);
create unique index users_email_key on users (lower(email));

create table memberships (
    tenant_id  uuid not null references tenants (id) on delete cascade,
    user_id    uuid not null references users (id) on delete cascade,
    role       text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz not null default now(),
    primary key (tenant_id, user_id)
);
create index memberships_user_idx on memberships (user_id);

create table api_keys (
    id              uuid primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    -- lookup_id is the non-secret part of the key after "tpl_"; the secret is never stored.
    lookup_id       text not null,
    secret_hash     bytea not null,
    name            text not null default '',
    role            text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    created_by_user uuid references users (id) on delete set null,
    created_by_key  uuid references api_keys (id) on delete set null,
    created_at      timestamptz not null default now(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    constraint api_keys_name_len check (char_length(name) <= 100)
);
create unique index api_keys_lookup_key on api_keys (lookup_id);
create index api_keys_tenant_idx on api_keys (tenant_id, created_at desc, id desc);

-- An API key is presented before its tenant is known. This function is the one way to find a
-- key by its lookup id across tenants; it runs as the tables' owner so it keeps working when
-- row-level security hides every row from the application role.
create function tapline_lookup_api_key(p_lookup_id text) returns setof api_keys
    language sql stable security definer set search_path from current
    as $$ select * from api_keys where lookup_id = p_lookup_id $$;
