-- A tenant's auth stamp counts the changes that can take an API key's rights away: a key
-- revoked, deleted, expiring sooner or changing role (which members.go does when its
-- creator is demoted or removed). The api caches a verified key together with the stamp
-- read in the same snapshot, and keeps using it only while the stamp it finds in Redis is
-- still that one (package auth, KeyCache): the writer raises the Redis copy right after
-- its commit, so every pod stops accepting a revoked key at once without a database read
-- on every request. The trigger bumps the stamp on every path that changes keys, whatever
-- code or operator runs the statement.
alter table tenants add column auth_stamp bigint not null default 0;

create function tapline_bump_auth_stamp() returns trigger
    language plpgsql volatile security definer set search_path from current
as $$
begin
    update tenants set auth_stamp = auth_stamp + 1
    where id = case when tg_op = 'DELETE' then old.tenant_id else new.tenant_id end;
    return null;
end
$$;
revoke execute on function tapline_bump_auth_stamp() from public;

create trigger api_keys_auth_stamp_update after update of revoked_at, expires_at, role, tenant_id on api_keys
    for each row
    when (old.revoked_at is distinct from new.revoked_at or old.expires_at is distinct from new.expires_at
          or old.role is distinct from new.role or old.tenant_id is distinct from new.tenant_id)
    execute function tapline_bump_auth_stamp();
create trigger api_keys_auth_stamp_delete after delete on api_keys
    for each row execute function tapline_bump_auth_stamp();

-- tapline_lookup_api_key with the key's tenant's stamp, read in the same snapshot. Like it,
-- the only way the application role reads a key before it knows the tenant, and only the
-- row whose lookup id matches.
create function tapline_lookup_api_key_stamped(p_lookup_id text)
returns table (id uuid, tenant_id uuid, lookup_id text, secret_hash bytea, name text, role text,
    created_by_user uuid, created_by_key uuid, created_at timestamptz, expires_at timestamptz,
    last_used_at timestamptz, revoked_at timestamptz, auth_stamp bigint)
    language plpgsql stable security definer set search_path from current
as $$
begin
    return query
        select k.id, k.tenant_id, k.lookup_id, k.secret_hash, k.name, k.role, k.created_by_user,
               k.created_by_key, k.created_at, k.expires_at, k.last_used_at, k.revoked_at, t.auth_stamp
        from api_keys k join tenants t on t.id = k.tenant_id
        where k.lookup_id = p_lookup_id;
end
$$;
revoke execute on function tapline_lookup_api_key_stamped(text) from public;
grant execute on function tapline_lookup_api_key_stamped(text) to tapline_app;
