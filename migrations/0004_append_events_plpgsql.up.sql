-- tapline_append_events keeps its signature and does exactly what 0002_sessions says, but in
-- PL/pgSQL, so PostgreSQL caches its plan. A SQL-language function with a data-modifying
-- CTE is parsed and planned again on every call: measured on the 2-core CI box, that was
-- about 0.4 ms of server CPU per call, more than the append itself for the small batches a
-- worker commits while sessions are quiet (and on the path of every tool call's result).
create or replace function tapline_append_events(
    p_tenant uuid[], p_session uuid[], p_epoch bigint[], p_type text[], p_data jsonb[], p_at timestamptz[])
returns table (tenant_id uuid, session_id uuid, first_seq bigint, last_seq bigint, refused boolean)
language plpgsql volatile security definer set search_path from current
as $$
#variable_conflict use_column
begin
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
