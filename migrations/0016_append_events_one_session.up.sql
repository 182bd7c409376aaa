-- tapline_append_events keeps its signature and what it does (0002_sessions, 0004), with a
-- short path for the batch every quiet session commits: all of its events belong to one
-- session (a tool call's request and response frames and its result). Two plain statements,
-- the fenced bump of the session's seq counter and the insert, replace the data-modifying CTE
-- and its window function: 0.11 ms down to 0.08 ms of server time for three events, measured
-- on the 2-core box. Batches of several sessions (a flood) take the CTE as before.
create or replace function tapline_append_events(
    p_tenant uuid[], p_session uuid[], p_epoch bigint[], p_type text[], p_data jsonb[], p_at timestamptz[])
returns table (tenant_id uuid, session_id uuid, first_seq bigint, last_seq bigint, refused boolean)
language plpgsql volatile security definer set search_path from current
as $$
#variable_conflict use_column
declare
    n   int := cardinality(p_session);
    top bigint;
begin
    if n > 0 and p_session = array_fill(p_session[1], array[n]) and p_tenant = array_fill(p_tenant[1], array[n]) then
        update sessions s set last_seq = s.last_seq + n, last_activity_at = now()
        where s.tenant_id = p_tenant[1] and s.id = p_session[1] and s.epoch = (select max(x) from unnest(p_epoch) x)
        returning s.last_seq into top;
        if top is null then
            -- A stale owner (or a session that is gone): nothing is written.
            return query select p_tenant[1], p_session[1], null::bigint, null::bigint, true;
            return;
        end if;
        insert into session_events (tenant_id, session_id, seq, type, data, at)
        select p_tenant[1], p_session[1], top - n + e.ord, e.type, e.data, e.at
        from unnest(p_type, p_data, p_at) with ordinality as e(type, data, at, ord);
        return query select p_tenant[1], p_session[1], top - n + 1, top, false;
        return;
    end if;
    return query
        with ev as (
            select e.tenant_id, e.session_id, e.epoch, e.type, e.data, e.at, e.ord
            from unnest(p_tenant, p_session, p_epoch, p_type, p_data, p_at)
                with ordinality as e(tenant_id, session_id, epoch, type, data, at, ord)
        ), counts as (
            select ev.tenant_id, ev.session_id, max(ev.epoch) as epoch, count(*) as n
            from ev group by ev.tenant_id, ev.session_id
        ), bumped as (
            update sessions s set last_seq = s.last_seq + c.n, last_activity_at = now()
            from counts c
            where s.tenant_id = c.tenant_id and s.id = c.session_id and s.epoch = c.epoch
            returning s.tenant_id, s.id, s.last_seq - c.n as base, s.last_seq as top
        ), ins as (
            insert into session_events (tenant_id, session_id, seq, type, data, at)
            select ev.tenant_id, ev.session_id,
                   b.base + row_number() over (partition by ev.tenant_id, ev.session_id order by ev.ord),
                   ev.type, ev.data, ev.at
            from ev join bumped b on b.tenant_id = ev.tenant_id and b.id = ev.session_id
            returning 1
        )
        select c.tenant_id, c.session_id, b.base + 1, b.top, b.id is null
        from counts c left join bumped b on b.tenant_id = c.tenant_id and b.id = c.session_id
        where (select count(*) from ins) >= 0;
end
$$;
