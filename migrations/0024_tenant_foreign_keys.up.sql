-- Foreign keys between tenant tables name the parent with its tenant: a call or a parked
-- request belongs to a session of its own tenant, and a key was created by a key of its own
-- tenant, by the schema itself and not only by the code and row level security. The keys
-- are added here without checking the rows already there, which is quick; 0025 checks them
-- without blocking writes and then drops the keys they replace.
create unique index if not exists api_keys_tenant_id_key on api_keys (tenant_id, id);

alter table session_calls add constraint session_calls_session_fkey
    foreign key (tenant_id, session_id) references sessions (tenant_id, id) on delete cascade not valid;
alter table pending_requests add constraint pending_requests_session_fkey
    foreign key (tenant_id, session_id) references sessions (tenant_id, id) on delete cascade not valid;
-- A key's creator may be revoked or deleted; only the reference to it is cleared then, never
-- the tenant.
alter table api_keys add constraint api_keys_created_by_key_tenant_fkey
    foreign key (tenant_id, created_by_key) references api_keys (tenant_id, id) on delete set null (created_by_key) not valid;
