-- Per-tenant quotas. NULL means the install's default (TAPLINE_MAX_LIVE_SESSIONS,
-- TAPLINE_EVENT_RETENTION_DAYS); an event retention of 0 keeps history forever.

alter table tenants
    add column max_live_sessions int check (max_live_sessions > 0),
    add column event_retention_days int check (event_retention_days between 0 and 36500);

-- The retention job runs before any tenant is chosen: this is its one way to list every
-- tenant's retention setting, and it returns nothing else.
create function tapline_retention_policies() returns table (tenant_id uuid, event_retention_days int)
    language sql stable security definer set search_path from current
    as $$ select id, event_retention_days from tenants order by id $$;
revoke execute on function tapline_retention_policies() from public;
grant execute on function tapline_retention_policies() to tapline_app;
