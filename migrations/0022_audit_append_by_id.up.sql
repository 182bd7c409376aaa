-- tapline_audit_append keeps its signature and its answers (0020), but looks an id up by the
-- id alone. With the tenant in the condition too, PostgreSQL could serve it from
-- audit_events_at_idx (tenant_id, at, seq) and filter on the id, reading every event of the
-- tenant's chain; a plan chosen while the table had no statistics (a new database, before
-- autovacuum's first analyze) did so for as long as the connection cached it, and each
-- append then cost more than the one before. Under RLS the tenant is checked all the same.
create or replace function tapline_audit_append(
    p_tenant uuid, p_id uuid, p_at timestamptz, p_actor_kind text, p_actor_id text, p_actor_name text,
    p_action text, p_target_type text, p_target_id text, p_client_ip text, p_user_agent text,
    p_request_id text, p_details jsonb, p_doc_head bytea, p_doc_mid bytea, p_doc_tail bytea)
returns table (out_seq bigint, out_at timestamptz, out_prev_hash bytea, out_row_hash bytea)
language plpgsql volatile
as $$
declare
    v_tenant uuid;
    v_seq  bigint;
    v_prev bytea;
    v_head timestamptz;
    v_at   timestamptz := date_trunc('microseconds', p_at);
    v_hash bytea;
begin
    perform pg_advisory_xact_lock(hashtextextended('tapline.audit:' || p_tenant::text, 0));
    -- By the id alone, so that audit_events_id_key is the only index that answers it; the
    -- tenant is compared after. Another tenant's event with this id is not an answer (RLS
    -- hides it from the application role anyway), and the unique index refuses the insert.
    select e.tenant_id, e.seq, e.at, e.prev_hash, e.row_hash into v_tenant, v_seq, v_head, v_prev, v_hash
    from audit_events e where e.id = p_id;
    if found and v_tenant = p_tenant then
        return query select v_seq, v_head, v_prev, v_hash;
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
