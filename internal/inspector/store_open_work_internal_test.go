package inspector

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The open calls and pending requests of a session are read without walking its history,
// even by a plan made while the tables were empty and had no statistics, and kept by a
// connection for its life (forced here with plan_cache_mode): the worker's sweep reads them
// for every live session every few seconds, and a session's history grows without bound.
// Another tenant's open work, in a session of its own, is not returned.
func TestOpenWorkReadsOnlyOpenRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	mineTenant, mine := s.tenant(1)
	theirTenant, theirs := s.tenant(1)
	const history = 2000
	cfg, err := pgxpool.ParseConfig(s.d.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := NewStore(pool)
	// The plans are made, and cached, while the session has no calls and no requests yet.
	if _, err := store.openCalls(ctx, mineTenant, mine[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := store.expireOldPending(ctx, mineTenant, mine[0], 1); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`insert into session_calls (id, tenant_id, session_id, name, status, epoch, created_at)
			select gen_random_uuid(), $1, $2, 'echo', 'succeeded', 1, now() - interval '1 hour' + g * interval '1 ms'
			from generate_series(1, $3) g`, []any{mineTenant, mine[0], history}},
		{`insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
			select gen_random_uuid(), $1, $2, 'sampling', '{}', 'answered', 1, now()
			from generate_series(1, $3) g`, []any{mineTenant, mine[0], history}},
		{`insert into session_calls (id, tenant_id, session_id, name, status, epoch, created_at) values
			(gen_random_uuid(), $1, $2, 'slow', 'running', 1, now() - interval '1 second'), (gen_random_uuid(), $1, $2, 'echo', 'queued', 1, now()),
			(gen_random_uuid(), $3, $4, 'theirs', 'queued', 1, now())`, []any{mineTenant, mine[0], theirTenant, theirs[0]}},
		{`insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at) values
			(gen_random_uuid(), $1, $2, 'sampling', '{}', 'pending', 0, now() + interval '1 hour'),
			(gen_random_uuid(), $3, $4, 'sampling', '{}', 'pending', 0, now() + interval '1 hour')`, []any{mineTenant, mine[0], theirTenant, theirs[0]}},
	} {
		if _, err := s.d.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	const sweeps = 5
	for range sweeps {
		calls, err := store.openCalls(ctx, mineTenant, mine[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) != 2 || calls[0].Name != "slow" || calls[1].Name != "echo" {
			t.Fatalf("open calls = %+v, want the running one and the queued one, oldest first", calls)
		}
	}
	expired, err := store.expireOldPending(ctx, mineTenant, mine[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(expired) != 1 {
		t.Fatalf("expired %v, want the session's one pending request", expired)
	}
	pool.Close()

	// What the statements read, once the statistics collector has their counters.
	var read int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := s.d.Pool.QueryRow(ctx, `select coalesce(sum(idx_tup_read), 0) from pg_stat_user_indexes
			where relname in ('session_calls', 'pending_requests') and indexrelname not like '%_pkey'`).Scan(&read); err != nil {
			t.Fatal(err)
		}
		if read > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Each sweep reads the two open calls, the expiry the one pending request (and the
	// foreign keys' checks read sessions, not these). Walking the history reads thousands.
	if read == 0 || read > 4*sweeps+10 {
		t.Fatalf("%d sweeps and an expiry read %d index entries of calls and requests, want about %d", sweeps, read, 2*sweeps+1)
	}
	var counted int64
	if err := s.d.Pool.QueryRow(ctx, `select count(*) from session_calls where tenant_id = $1 and status = 'queued'`, theirTenant).Scan(&counted); err != nil || counted != 1 {
		t.Fatalf("the other tenant's queued call: %d, %v", counted, err)
	}
}
