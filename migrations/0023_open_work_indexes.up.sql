-- The open calls and pending requests of a session are found through partial indexes that
-- lead with the tenant, like every condition that reads them. session_calls_open_idx and
-- pending_requests_open_idx held the session alone: a plan made while the tables had no
-- statistics (a new database, before autovacuum's first analyze) preferred the history
-- indexes, which match both the tenant and the session, and filtered the session's whole
-- history for its few open rows. A connection keeps such a plan once cached, so the worker's
-- sweep of every live session read each session's history every few seconds. The new
-- indexes match every column those conditions compare, and the order the open calls are
-- listed in, so PostgreSQL takes them with or without statistics.
--
-- Building an index blocks writes to its table: on an install with millions of calls, build
-- these two beforehand with `create index concurrently if not exists` and the same
-- definitions (docs/production.md).
create index if not exists session_calls_open_work_idx on session_calls (tenant_id, session_id, created_at)
    where status in ('queued', 'running');
create index if not exists pending_requests_open_work_idx on pending_requests (tenant_id, session_id, created_at)
    where status = 'pending';
drop index if exists session_calls_open_idx;
drop index if exists pending_requests_open_idx;
