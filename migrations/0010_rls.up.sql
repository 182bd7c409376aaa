-- Row-level security on every tenant table, and the application role it applies to.
--
-- Roles (README "Database roles"):
--   * the role that runs migrations (TAPLINE_MIGRATE_DATABASE_URL) owns every table and
--     function; it needs CREATEROLE the first time, to create tapline_app.
--   * tapline_app is the group role the api and the worker act as (TAPLINE_DATABASE_URL logs
--     in as tapline_app itself or as a member of it). It owns nothing, has no BYPASSRLS, and
--     gets plain DML grants; RLS decides which rows it sees.
--
-- Every table with a tenant_id column gets ENABLE + FORCE ROW LEVEL SECURITY and the policy
-- tenant_isolation (tenant_id = the transaction's app.tenant_id), so a query that forgets its
-- tenant filter sees only the current tenant's rows, and nothing when no tenant is set.
-- FORCE makes even the table owner subject to policies; the owner's own access (SECURITY
-- DEFINER lookups that run before the tenant is known, data migrations) goes through the
-- explicit policy tapline_maintainer, granted to the role that ran the migration and to no
-- one else. Superusers bypass RLS regardless.
--
-- Tables added later need nothing: tapline_secure_tenant_tables() runs after every migration
-- (db.Migrate) and secures any table with a tenant_id column that has no RLS yet, and the
-- default privileges below grant tapline_app DML on new tables and sequences. A table that
-- wants other grants (the audit log: INSERT and SELECT only) revokes them explicitly.

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'tapline_app') then
        begin
            create role tapline_app nologin;
        exception when duplicate_object or unique_violation then
            null; -- another database's migration created it concurrently (roles are per cluster)
        end;
    end if;
end
$$;

-- The tenant of the current transaction, or NULL (no rows) when none is set.
create function tapline_current_tenant() returns uuid
    language sql stable
    as $$ select nullif(current_setting('app.tenant_id', true), '')::uuid $$;

-- tapline_tenant_rls secures one table: RLS enabled and forced, rows restricted to the
-- current tenant through column `col`, and the migrating role's maintenance policy.
create function tapline_tenant_rls(tbl regclass, col name default 'tenant_id') returns void
    language plpgsql
    as $$
begin
    execute format('alter table %s enable row level security', tbl);
    execute format('alter table %s force row level security', tbl);
    if not exists (select 1 from pg_policy where polrelid = tbl and polname = 'tenant_isolation') then
        execute format('create policy tenant_isolation on %s using (%I = tapline_current_tenant()) with check (%I = tapline_current_tenant())',
            tbl, col, col);
    end if;
    perform tapline_maintainer_policy(tbl);
end
$$;

-- tapline_maintainer_policy lets the migrating role (the owner) through a forced policy.
create function tapline_maintainer_policy(tbl regclass) returns void
    language plpgsql
    as $$
begin
    if not exists (select 1 from pg_policy where polrelid = tbl and polname = 'tapline_maintainer') then
        execute format('create policy tapline_maintainer on %s to %I using (true) with check (true)', tbl, current_user);
    end if;
end
$$;

-- tapline_secure_tenant_tables secures every table in public with a tenant_id column that
-- does not have row-level security yet, and returns their names. Idempotent.
create function tapline_secure_tenant_tables() returns setof text
    language plpgsql
    as $$
declare
    r record;
begin
    for r in
        select c.oid::regclass as tbl, c.relname
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
        where n.nspname = 'public' and c.relkind in ('r', 'p')
          and not (c.relrowsecurity and c.relforcerowsecurity
                   and exists (select 1 from pg_policy p where p.polrelid = c.oid))
        order by c.relname
    loop
        perform tapline_tenant_rls(r.tbl);
        return next r.relname::text;
    end loop;
end
$$;

-- Grants. Existing tables (but not the migration bookkeeping), then defaults for new ones.
grant usage on schema public to tapline_app;
do $$
declare
    r record;
begin
    for r in
        select c.oid::regclass as tbl from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relname <> 'schema_migrations'
    loop
        execute format('grant select, insert, update, delete on %s to tapline_app', r.tbl);
    end loop;
end
$$;
grant usage, select on all sequences in schema public to tapline_app;
alter default privileges in schema public grant select, insert, update, delete on tables to tapline_app;
alter default privileges in schema public grant usage, select on sequences to tapline_app;
revoke all on schema_migrations from public;

-- tenants and users have no tenant_id column. A tenant sees its own row; a user is visible
-- while they are a member of the current tenant.
select tapline_tenant_rls('tenants', 'id');
alter table users enable row level security;
alter table users force row level security;
create policy member_of_current_tenant on users
    using (exists (select 1 from memberships m where m.user_id = users.id and m.tenant_id = tapline_current_tenant()))
    with check (exists (select 1 from memberships m where m.user_id = users.id and m.tenant_id = tapline_current_tenant()));
select tapline_maintainer_policy('users');

-- Adding a member by email must find a user who belongs to other tenants (invisible here)
-- or create one. This function is the one way to do it; it returns only the user's id.
create function tapline_ensure_user(p_id uuid, p_email text) returns uuid
    language plpgsql volatile security definer set search_path from current
    as $$
declare
    uid uuid;
begin
    select id into uid from users where lower(email) = lower(p_email);
    if uid is null then
        insert into users (id, email) values (p_id, p_email)
            on conflict (lower(email)) do nothing
            returning id into uid;
        if uid is null then
            select id into uid from users where lower(email) = lower(p_email);
        end if;
    end if;
    return uid;
end
$$;


-- Only the application calls these, and the helpers above are for migrations alone.
revoke execute on function tapline_ensure_user(uuid, text) from public;
grant execute on function tapline_ensure_user(uuid, text) to tapline_app;
revoke execute on function tapline_lookup_api_key(text) from public;
grant execute on function tapline_lookup_api_key(text) to tapline_app;
revoke execute on function tapline_tenant_rls(regclass, name) from public;
revoke execute on function tapline_maintainer_policy(regclass) from public;
revoke execute on function tapline_secure_tenant_tables() from public;

select tapline_secure_tenant_tables();
