-- The audit log: append-only, one hash chain per tenant (package internal/audit).
--
-- row_hash = SHA-256(prev_hash || RFC 8785 canonical JSON of the row), prev_hash is the
-- previous row's row_hash (32 zero bytes for seq 1) and seq counts 1, 2, 3… per tenant, so an
-- edited, inserted or deleted row breaks the chain at a row that GET /v1/audit/verify names.
-- Appends are serialised per tenant with a transaction-scoped advisory lock. No foreign key
-- to tenants: the log outlives what it describes.

create table audit_events (
    tenant_id   uuid not null,
    seq         bigint not null check (seq > 0),
    id          uuid not null,
    at          timestamptz not null,
    actor_kind  text not null,
    actor_id    text not null,
    actor_name  text not null default '',
    action      text not null,
    target_type text not null default '',
    target_id   text not null default '',
    client_ip   text not null default '',
    user_agent  text not null default '',
    request_id  text not null default '',
    details     jsonb not null default '{}',
    prev_hash   bytea not null check (octet_length(prev_hash) = 32),
    row_hash    bytea not null check (octet_length(row_hash) = 32),
    primary key (tenant_id, seq)
);
create unique index audit_events_id_key on audit_events (id);
create index audit_events_at_idx on audit_events (tenant_id, at, seq);

-- Append-only for everyone who does not disable triggers (only the owner or a superuser
-- can); the application role is not even granted UPDATE or DELETE.
create function tapline_audit_append_only() returns trigger
    language plpgsql
    as $$
begin
    raise exception 'audit_events is append-only: % refused', tg_op using errcode = 'TL002';
end
$$;
create trigger audit_events_append_only before update or delete on audit_events
    for each row execute function tapline_audit_append_only();
create trigger audit_events_no_truncate before truncate on audit_events
    for each statement execute function tapline_audit_append_only();

select tapline_tenant_rls('audit_events');
revoke all on audit_events from tapline_app;
grant select, insert on audit_events to tapline_app;
