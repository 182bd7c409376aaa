-- Checks the rows already there against the foreign keys 0024 added: validating takes a lock
-- that lets writes go on, unlike adding a checked key, which blocks them while it reads the
-- whole table. The keys without the tenant, now redundant, go.
alter table session_calls validate constraint session_calls_session_fkey;
alter table pending_requests validate constraint pending_requests_session_fkey;
alter table api_keys validate constraint api_keys_created_by_key_tenant_fkey;

alter table session_calls drop constraint if exists session_calls_session_id_fkey;
alter table pending_requests drop constraint if exists pending_requests_session_id_fkey;
alter table api_keys drop constraint if exists api_keys_created_by_key_fkey;
