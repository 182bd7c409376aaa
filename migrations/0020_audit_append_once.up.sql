-- tapline_audit_append appends an event id once. An api request retried with the same
-- Idempotency-Key after a server fault runs again, and may record what its first attempt
-- already recorded (the worker answered both from the one command it ran); such events get
-- an id derived from the request and the event (package internal/audit, WithRetryKey), so
-- the repeat finds its id in the chain and the function answers with the stored event
-- instead of appending it twice. The check runs under the chain's lock, after which the
-- head and every event committed before it are visible, so two api pods racing with the same
-- id append it once; the chain itself is untouched by a repeat. Events with fresh ids
-- (UUIDv7) never match.
create or replace function tapline_audit_append(
    p_tenant uuid, p_id uuid, p_at timestamptz, p_actor_kind text, p_actor_id text, p_actor_name text,
    p_action text, p_target_type text, p_target_id text, p_client_ip text, p_user_agent text,
    p_request_id text, p_details jsonb, p_doc_head bytea, p_doc_mid bytea, p_doc_tail bytea)
returns table (out_seq bigint, out_at timestamptz, out_prev_hash bytea, out_row_hash bytea)
language plpgsql volatile
as $$
declare
    v_seq  bigint;
    v_prev bytea;
    v_head timestamptz;
    v_at   timestamptz := date_trunc('microseconds', p_at);
    v_hash bytea;
begin
    perform pg_advisory_xact_lock(hashtextextended('tapline.audit:' || p_tenant::text, 0));
    return query select e.seq, e.at, e.prev_hash, e.row_hash
        from audit_events e where e.tenant_id = p_tenant and e.id = p_id;
    if found then
        return;
    end if;
    select e.seq, e.row_hash, e.at into v_seq, v_prev, v_head
    from audit_events e where e.tenant_id = p_tenant order by e.seq desc limit 1;
    if not found then
        v_seq := 0;
        v_prev := decode(repeat('00', 32), 'hex');
    end if;
    v_seq := v_seq + 1;
    -- Time never runs backwards within a chain, whichever pod's clock recorded the event.
    if v_head is not null and v_at < v_head then
        v_at := v_head;
    end if;
    v_hash := sha256(v_prev || p_doc_head
        || convert_to(to_char(v_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8')
        || p_doc_mid || convert_to(v_seq::text, 'UTF8') || p_doc_tail);
    insert into audit_events (tenant_id, seq, id, at, actor_kind, actor_id, actor_name, action,
        target_type, target_id, client_ip, user_agent, request_id, details, prev_hash, row_hash)
    values (p_tenant, v_seq, p_id, v_at, p_actor_kind, p_actor_id, p_actor_name, p_action,
        p_target_type, p_target_id, p_client_ip, p_user_agent, p_request_id, p_details, v_prev, v_hash);
    return query select v_seq, v_at, v_prev, v_hash;
end
$$;
