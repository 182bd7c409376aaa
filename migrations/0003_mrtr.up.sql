-- Multi round-trip requests (2026-07-28): a tool call answered with input_required parks
-- one pending row per input request. The round's requestState is kept with them, so any
-- owner (the same worker, or the next one after a takeover) can retry the call with the
-- answers once every row of the round is answered.
alter table pending_requests
    add column input_key text,
    add column request_state text;

create index pending_requests_call_idx on pending_requests (session_id, call_id) where call_id is not null;
