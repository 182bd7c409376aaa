package chaos

import (
	"context"
	"fmt"
	"time"
)

// account compares what the target received, what PostgreSQL holds and what the SSE readers
// saw, and fills the report's counters:
//
//   - lost_events: seqs missing from PostgreSQL's gapless log, seqs an SSE reader never saw,
//     acknowledged calls PostgreSQL does not have, finished calls without their call_result
//     event, and calls the target finished that are still open in PostgreSQL;
//   - duplicate_seqs: seqs stored or delivered to one reader more than once, and calls with more
//     than one call_result event;
//   - duplicate_dispatches: keys the target ran more than once, or PostgreSQL holds more than
//     one call for.
func (r *run) account(ctx context.Context) error {
	rep := r.rep
	last, err := r.lastSeqs(ctx)
	if err != nil {
		return err
	}
	for _, id := range r.sessions {
		// One statement, one snapshot: the session keeps writing (watchers events).
		var lastSeq, n, distinct, maxSeq int64
		if err := r.admin.QueryRow(ctx, `select s.last_seq, count(e.seq), count(distinct e.seq), coalesce(max(e.seq), 0)
			from sessions s left join session_events e on e.session_id = s.id where s.id = $1 group by s.last_seq`, id).
			Scan(&lastSeq, &n, &distinct, &maxSeq); err != nil {
			return err
		}
		rep.Events += lastSeq
		if distinct < lastSeq || maxSeq != lastSeq {
			rep.LostEvents += int(max(lastSeq-distinct, 0))
			rep.problem("session %s: last_seq %d but %d distinct events stored (max %d)", id, lastSeq, distinct, maxSeq)
		}
		rep.DuplicateSeqs += int(n - distinct)
		var status string
		if err := r.admin.QueryRow(ctx, `select status from sessions where id = $1`, id).Scan(&status); err == nil && status != "ready" {
			rep.FailedSessions++
			rep.problem("session %s ended %s", id, status)
		}
	}
	for _, rd := range r.readers {
		upTo := last[rd.session]
		if c, ok := r.caughtUp[rd.session]; ok {
			upTo = c
		}
		missing, dups := rd.account(upTo)
		rep.LostEvents += missing
		rep.DuplicateSeqs += dups
		rep.SSEReconnects += rd.reconnects
		if missing > 0 || dups > 0 {
			rep.problem("SSE reader of %s: %d events missing, %d delivered twice (%d gaps seen live)", rd.session, missing, dups, rd.gaps)
		}
	}

	r.waitResultsSettled(ctx, 15*time.Second)
	type pgCall struct {
		id, key, status string
		results         int
	}
	rows, err := r.admin.Query(ctx, `select c.id::text, coalesce(c.arguments->>'key', ''), c.status,
		(select count(*) from session_events e where e.session_id = c.session_id and e.type = 'call_result' and e.data->>'call_id' = c.id::text)
		from session_calls c`)
	if err != nil {
		return err
	}
	byKey := map[string][]pgCall{}
	byID := map[string]pgCall{}
	for rows.Next() {
		var c pgCall
		if err := rows.Scan(&c.id, &c.key, &c.status, &c.results); err != nil {
			rows.Close()
			return err
		}
		byKey[c.key] = append(byKey[c.key], c)
		byID[c.id] = c
	}
	rows.Close()
	ledger := r.target.Ledger
	for _, c := range byID {
		rep.CallsByStatus[c.status]++
		switch {
		case !finished(c.status):
			rep.StuckCalls++
			rep.problem("call %s (%s) is still %s", c.id, c.key, c.status)
			if ledger.Completed(c.key) {
				rep.LostEvents++
			}
		case c.results == 0:
			rep.LostEvents++
			rep.problem("call %s (%s) ended %s without a call_result event", c.id, c.key, c.status)
		case c.results > 1:
			rep.DuplicateSeqs += c.results - 1
			rep.problem("call %s (%s) has %d call_result events", c.id, c.key, c.results)
		}
	}
	r.mu.Lock()
	for _, rec := range r.calls {
		if !rec.acked {
			rep.Unacknowledged++
			continue
		}
		if _, ok := byID[rec.callID]; !ok {
			rep.LostEvents++
			rep.problem("acknowledged call %s (%s) is not in PostgreSQL", rec.callID, rec.key)
		}
	}
	r.mu.Unlock()
	invocations := ledger.Keys()
	keys := map[string]bool{}
	for k := range invocations {
		keys[k] = true
	}
	for k := range byKey {
		keys[k] = true
	}
	for k := range keys {
		dup := max(invocations[k]-1, len(byKey[k])-1, 0)
		if dup > 0 {
			rep.DuplicateDispatches += dup
			rep.problem("key %s: the target ran it %d times, PostgreSQL holds %d calls", k, invocations[k], len(byKey[k]))
		}
		rep.TargetInvocations += invocations[k]
	}
	rep.Unrestored = ledger.UnrestoredSessions()
	if rep.Unrestored > 0 {
		rep.problem("%d target connections received calls without the subscription and logging level restored", rep.Unrestored)
	}
	rep.HTTP500 = r.client.statusCount(500)
	r.client.mu.Lock()
	rep.HTTPStatuses = map[int]int{}
	for c, n := range r.client.statuses {
		rep.HTTPStatuses[c] = n
	}
	for _, b := range r.client.bad {
		rep.problem("500: %s", b)
	}
	r.client.mu.Unlock()
	if rep.NoRetryAfter503 > 0 {
		rep.problem("%d answers were 503 without Retry-After", rep.NoRetryAfter503)
	}
	for _, d := range rep.TakeoverMS {
		if goal := rep.TakeoverGoal.Milliseconds(); goal > 0 && d > goal {
			rep.problem("a takeover took %dms, over the goal of %dms", d, goal)
			break
		}
	}
	for _, p := range append(append([]*proc{}, r.apis...), r.workers...) {
		if n := countInFile(p.log, "WARNING: DATA RACE"); n > 0 {
			rep.problem("%s reported %d data races (see %s)", p.name, n, p.log)
		}
		if n := countInFile(p.log, "panic:"); n > 0 {
			rep.problem("%s panicked (see %s)", p.name, p.log)
		}
	}
	_ = fmt.Sprint
	return nil
}

// waitResultsSettled waits, up to limit, until every finished call has its call_result
// event. A call's row and its event are separate writes: the event follows through the
// owner's persister, which holds events while PostgreSQL is away or a batch retries, so a
// result may trail its row for a moment. An event still missing after the wait is lost,
// and account reports it.
func (r *run) waitResultsSettled(ctx context.Context, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var missing int
		err := r.admin.QueryRow(ctx, `select count(*) from session_calls c
			where c.status in ('succeeded', 'failed', 'cancelled', 'interrupted')
			  and not exists (select 1 from session_events e where e.session_id = c.session_id
			      and e.type = 'call_result' and e.data->>'call_id' = c.id::text)`).Scan(&missing)
		if err == nil && missing == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
