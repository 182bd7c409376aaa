-- tapline_audit_append appends one event to its tenant's chain in one statement: the chain's
-- lock, the read of its head and the insert ran as three statements from Go, with the hash
-- computed in Go between the read and the insert, so an audited change cost two round trips
-- more than the change. Go still builds the canonical document (package internal/audit);
-- only the two values that depend on the head, the time and the seq, are spliced in here,
-- between the parts Go sends, and the hash is the same SHA-256(prev_hash || document) that
-- Verify recomputes in Go. The function runs with its caller's rights, under the caller's
-- row-level security, and each of its statements takes a fresh snapshot (it is VOLATILE),
-- so the head it reads after the lock is the one the previous holder committed.
create function tapline_audit_append(
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
revoke execute on function tapline_audit_append(uuid, uuid, timestamptz, text, text, text, text, text, text, text,
    text, text, jsonb, bytea, bytea, bytea) from public;
grant execute on function tapline_audit_append(uuid, uuid, timestamptz, text, text, text, text, text, text, text,
    text, text, jsonb, bytea, bytea, bytea) to tapline_app;
