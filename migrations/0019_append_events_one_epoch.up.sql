-- tapline_append_events keeps its signature, its answers and its two paths (0016), but fences
-- on every event's epoch instead of the highest: a session's events are written only if each
-- of them carries the session's current epoch, and are refused together otherwise. Fencing on
-- max(epoch) wrote a stale owner's event whenever it shared a batch with the current owner's
-- (a worker that lost a session and won it back before its queue drained), which broke the
-- rule that the database refuses every write of a stale owner. Refusing the session's events
-- together keeps the answer at one row per session; the persister sends the events of the
-- newest epoch again on their own. On the one-session path the check is one comparison of
-- the epochs with an array of the first, in place of the max over them.
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
        if p_epoch = array_fill(p_epoch[1], array[n]) then
            update sessions s set last_seq = s.last_seq + n, last_activity_at = now()
            where s.tenant_id = p_tenant[1] and s.id = p_session[1] and s.epoch = p_epoch[1]
            returning s.last_seq into top;
        end if;
        if top is null then
            -- A stale owner, events of two owners, or a session that is gone: nothing is written.
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
            select ev.tenant_id, ev.session_id, min(ev.epoch) as lowest, max(ev.epoch) as epoch, count(*) as n
            from ev group by ev.tenant_id, ev.session_id
        ), bumped as (
            update sessions s set last_seq = s.last_seq + c.n, last_activity_at = now()
            from counts c
            where s.tenant_id = c.tenant_id and s.id = c.session_id and s.epoch = c.epoch and c.lowest = c.epoch
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
