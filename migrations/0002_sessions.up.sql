-- Inspector sessions, their event log, tool calls and parked server→client requests.

create table sessions (
    id                uuid primary key,
    tenant_id         uuid not null references tenants (id) on delete cascade,
    name              text not null default '',
    transport         text not null check (transport in ('streamable_http', 'sse')),
    url               text not null,
    protocol_pref     text not null default 'auto',
    -- Header values and the bearer token, sealed with AES-GCM (secretbox) and bound to the row.
    secrets           bytea,
    header_names      text[] not null default '{}',
    has_bearer        boolean not null default false,
    status            text not null check (status in ('connecting', 'ready', 'error', 'closed')),
    status_error      text not null default '',
    server_info       jsonb,
    capabilities      jsonb,
    instructions      text not null default '',
    protocol_version  text not null default '',
    roots             jsonb not null default '[]',
    logging_level     text not null default '',
    subscriptions     text[] not null default '{}',
    -- Fencing: the high-water mark of the owner's lease epoch. Every write by an owner is
    -- conditional on it, so a paused ex-owner is refused here, not only in Redis.
    epoch             bigint not null default 0,
    owner_node        text not null default '',
    last_seq          bigint not null default 0,
    created_by        text not null default '',
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    last_activity_at  timestamptz not null default now(),
    closed_at         timestamptz,
    constraint sessions_name_len check (char_length(name) <= 200),
    constraint sessions_url_len check (char_length(url) <= 2048)
);
create index sessions_tenant_idx on sessions (tenant_id, created_at desc, id desc);
create index sessions_live_idx on sessions (tenant_id) where status in ('connecting', 'ready');

-- One row per event; seq is gapless per session. Rows are immutable once written. The `at`
-- column and the (tenant_id, at) index serve retention in bounded batches, and a later
-- switch to range partitioning by `at`.
create table session_events (
    tenant_id  uuid not null,
    session_id uuid not null,
    seq        bigint not null,
    type       text not null,
    data       jsonb not null,
    at         timestamptz not null,
    primary key (tenant_id, session_id, seq),
    foreign key (session_id) references sessions (id) on delete cascade
);
create index session_events_at_idx on session_events (tenant_id, at);

create table session_calls (
    id           uuid primary key,
    tenant_id    uuid not null,
    session_id   uuid not null references sessions (id) on delete cascade,
    name         text not null,
    arguments    jsonb not null default '{}',
    status       text not null check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    progress     jsonb,
    result       jsonb,
    error        jsonb,
    created_by   text not null default '',
    epoch        bigint not null default 0,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    finished_at  timestamptz
);
create index session_calls_session_idx on session_calls (tenant_id, session_id, created_at desc);
create index session_calls_open_idx on session_calls (session_id) where status in ('queued', 'running');

create table pending_requests (
    id           uuid primary key,
    tenant_id    uuid not null,
    session_id   uuid not null references sessions (id) on delete cascade,
    kind         text not null check (kind in ('sampling', 'elicitation', 'input_required')),
    params       jsonb not null,
    status       text not null check (status in ('pending', 'answered', 'expired', 'cancelled')),
    answer       jsonb,
    answered_by  text not null default '',
    -- The owner epoch whose connection parked it: a new owner expires the old connection's.
    epoch        bigint not null,
    call_id      uuid,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    answered_at  timestamptz
);
create index pending_requests_session_idx on pending_requests (tenant_id, session_id, created_at);
create index pending_requests_open_idx on pending_requests (session_id) where status = 'pending';

-- tapline_append_events is the one way events are written. Given parallel arrays (one
-- element per event, in order), it checks each session's owner epoch, allocates gapless seqs
-- by bumping sessions.last_seq, and inserts the events, all in one statement. A session whose
-- epoch does not match is refused: its events are not written and it is returned with
-- refused = true. It runs as the tables' owner so one batch may span tenants; its callers are
-- workers, which own the sessions they write.
create function tapline_append_events(
    p_tenant uuid[], p_session uuid[], p_epoch bigint[], p_type text[], p_data jsonb[], p_at timestamptz[])
returns table (tenant_id uuid, session_id uuid, first_seq bigint, last_seq bigint, refused boolean)
language sql volatile security definer set search_path from current
as $$
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
    where (select count(*) from ins) >= 0
$$;

-- tapline_live_sessions lists sessions that should be held by a worker, across tenants, for
-- the workers' discovery loop.
create function tapline_live_sessions(p_limit int)
returns table (tenant_id uuid, id uuid, epoch bigint, owner_node text)
language sql stable security definer set search_path from current
as $$
    select s.tenant_id, s.id, s.epoch, s.owner_node from sessions s
    where s.status in ('connecting', 'ready')
    order by s.last_activity_at desc
    limit p_limit
$$;
