package inspector

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"
)

// An owner's own end of its session, after being idle or with its target unreachable, commits
// its report with itself: the call_result of each call it ended and the pending_resolved of
// each request it expired, then the status, take the session's next seqs, with no gap, in the
// transaction that changes the session's status and ends the calls and requests. The worker's
// persister has stopped here, as for an owner that dies as soon as the end is committed: what
// the history holds, PostgreSQL has from that one commit, and it is published as committed.
// A stale owner's end is refused and writes nothing.
func TestOwnersEndCommitsItsReport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	tenantID, ids := s.tenant(1, 1, 2)
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	// The persister commits nothing it is handed from now on.
	gone := newCommitShard(s.d.AppPool, s.rdb, s.prefix, logger)
	gone.start()
	gone.close()
	rt := &Runtime{store: NewStore(s.d.AppPool), persister: &persister{shards: []*commitShard{gone}}, logger: logger}

	type open struct{ queued, running, request string }
	openWork := func(sessionID string) open {
		t.Helper()
		o := open{newID(), newID(), newID()}
		for id, status := range map[string]CallStatus{o.queued: CallQueued, o.running: CallRunning} {
			if _, err := s.d.Pool.Exec(ctx, `insert into session_calls (id, tenant_id, session_id, name, status, epoch)
				values ($1, $2, $3, 'echo', $4, 1)`, id, tenantID, sessionID, status); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.d.Pool.Exec(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
			values ($1, $2, $3, 'elicitation', '{}', 'pending', 1, now() + interval '1 hour')`, o.request, tenantID, sessionID); err != nil {
			t.Fatal(err)
		}
		return o
	}
	// inCommit returns the id of the transaction that wrote a row last.
	inCommit := func(query string, args ...any) string {
		t.Helper()
		var xid string
		if err := s.d.Pool.QueryRow(ctx, query, args...).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		return xid
	}

	for i, tc := range []struct {
		name           string
		to             Status
		how            sessionEnd
		status         map[string]any
		queued         CallStatus
		queuedError    string
		runningError   string
		reason, report string
	}{
		{"idle", StatusClosed, closeEnd, map[string]any{"state": StatusClosed, "reason": "idle"},
			CallCancelled, closedBeforeSent, closedWhileRunning, "closed after being idle", `{"reason":"idle","state":"closed"}`},
		{"error", StatusError, failedEnd("unreachable"), map[string]any{"state": StatusError, "error": "unreachable"},
			CallFailed, failedEnd("unreachable").queuedError, failedEnd("unreachable").runningError, "unreachable", `{"error":"unreachable","state":"error"}`},
	} {
		sessionID := ids[i]
		o := openWork(sessionID)
		live := s.rdb.Subscribe(ctx, eventChannel(s.prefix, tenantID, sessionID))
		defer live.Close()
		if _, err := live.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		r := newSessionRunner(rt, nil, &Session{TenantID: tenantID, ID: sessionID, Epoch: 1})
		r.endSession(tc.to, tc.reason, tc.how, tc.status)
		if r.ctx.Err() == nil {
			t.Errorf("%s: the runner of the session it ended still runs", tc.name)
		}

		// Read from PostgreSQL at once: nothing after the end's commit adds to it.
		end := inCommit(`select xmin::text from sessions where id = $1 and status = $2`, sessionID, tc.to)
		var lastSeq int64
		if err := s.d.Pool.QueryRow(ctx, `select last_seq from sessions where id = $1`, sessionID).Scan(&lastSeq); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			id          string
			status      CallStatus
			errorString string
		}{{o.queued, tc.queued, tc.queuedError}, {o.running, CallInterrupted, tc.runningError}} {
			if got := inCommit(`select xmin::text from session_calls where id = $1 and status = $2 and error = $3::jsonb`,
				c.id, c.status, c.errorString); got != end {
				t.Errorf("%s: call %s ended by transaction %s, the session by %s", tc.name, c.id, got, end)
			}
		}
		if got := inCommit(`select xmin::text from pending_requests where id = $1 and status = 'expired'`, o.request); got != end {
			t.Errorf("%s: request expired by transaction %s, the session ended by %s", tc.name, got, end)
		}
		rows, err := s.d.Pool.Query(ctx, `select seq, xmin::text, type, data from session_events
			where session_id = $1 order by seq`, sessionID)
		if err != nil {
			t.Fatal(err)
		}
		var got, committed []string
		for n := int64(1); rows.Next(); n++ {
			var seq int64
			var xid, typ string
			var data []byte
			if err := rows.Scan(&seq, &xid, &typ, &data); err != nil {
				t.Fatal(err)
			}
			event := typ + " " + string(compactJSON(t, data))
			if seq != n || xid != end {
				t.Errorf("%s: event %s at seq %d written by transaction %s; want seq %d, by the end's %s", tc.name, event, seq, xid, n, end)
			}
			got = append(got, event)
			committed = append(committed, strconv.FormatInt(seq, 10)+" "+event)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		// What was committed is then published, as committed.
		for _, want := range committed {
			select {
			case m := <-live.Channel():
				var e Event
				if err := json.Unmarshal([]byte(m.Payload), &e); err != nil {
					t.Fatal(err)
				}
				if pub := strconv.FormatInt(e.Seq, 10) + " " + string(e.Type) + " " + string(compactJSON(t, e.Data)); pub != want {
					t.Errorf("%s: published %s, want the committed %s", tc.name, pub, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: the committed %s was never published", tc.name, want)
			}
		}
		want := []string{
			`call_result {"call_id":"` + o.queued + `","error":` + string(compactJSON(t, []byte(tc.queuedError))) + `,"ok":false,"status":"` + string(tc.queued) + `"}`,
			`call_result {"call_id":"` + o.running + `","error":` + string(compactJSON(t, []byte(tc.runningError))) + `,"ok":false,"status":"interrupted"}`,
			`pending_resolved {"reason":"the session ended","request_id":"` + o.request + `","status":"expired"}`,
			`status ` + tc.report,
		}
		if len(got) != len(want) || int64(len(got)) != lastSeq {
			t.Errorf("%s: the history after the end holds %d events, last seq %d:\n%v\nwant:\n%v",
				tc.name, len(got), lastSeq, got, want)
			continue
		}
		// The status comes last; what the end ended, before it in any order.
		slices.Sort(got[:3])
		slices.Sort(want[:3])
		for j := range want {
			if got[j] != want[j] {
				t.Errorf("%s: event %d: %s, want %s", tc.name, j, got[j], want[j])
			}
		}
	}

	// The owner of epoch 1 is stale: the session has a newer owner.
	stale := ids[2]
	o := openWork(stale)
	r := newSessionRunner(rt, nil, &Session{TenantID: tenantID, ID: stale, Epoch: 1})
	r.endSession(StatusError, "unreachable", failedEnd("unreachable"), map[string]any{"state": StatusError, "error": "unreachable"})
	if !r.isStale() {
		t.Error("the stale owner's end did not find it stale")
	}
	sess, err := rt.store.GetSession(ctx, tenantID, stale)
	if err != nil {
		t.Fatal(err)
	}
	if sess.Status != StatusReady || sess.LastSeq != 0 {
		t.Errorf("the session a stale owner ended: %s, last seq %d; want ready, no event", sess.Status, sess.LastSeq)
	}
	for _, id := range []string{o.queued, o.running} {
		if c, err := rt.store.GetCall(ctx, tenantID, stale, id); err != nil || c.Status.Finished() {
			t.Errorf("call %s of the session a stale owner ended: %+v %v", id, c, err)
		}
	}
	if p, err := rt.store.GetPending(ctx, tenantID, stale, o.request); err != nil || p.Status != PendingWaiting {
		t.Errorf("request of the session a stale owner ended: %+v %v", p, err)
	}
}

// What an owner recorded before it ends its session comes before the end in the history:
// the end waits for the owner's events queued until then to be committed, so the session's
// last status is its end, not the connecting recorded just before it.
func TestOwnersEndComesAfterWhatItRecordedBefore(t *testing.T) {
	t.Parallel()
	s := newShardTest(t)
	tenantID, ids := s.tenant(1)
	rt := &Runtime{store: NewStore(s.d.AppPool), persister: &persister{shards: []*commitShard{s.shard}},
		logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	r := newSessionRunner(rt, nil, &Session{TenantID: tenantID, ID: ids[0], Epoch: 1})
	defer r.cancel()
	// The shard has not started: the event waits in its queue.
	r.emit(EventStatus, map[string]any{"state": StatusConnecting})
	ended := make(chan struct{})
	go func() {
		r.endSession(StatusError, "unreachable", failedEnd("unreachable"), map[string]any{"state": StatusError, "error": "unreachable"})
		close(ended)
	}()
	// An end that did not wait would be committed by now, or soon; one that waits is still
	// waiting. Either way the shard starts then.
	select {
	case <-ended:
	case <-time.After(time.Second):
	}
	s.start()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the end never came")
	}
	got := s.stored(ids[0])
	want := []string{`1 {"state": "connecting"}`, `2 {"error": "unreachable", "state": "error"}`}
	if !slices.Equal(got, want) {
		t.Errorf("history: %v, want %v", got, want)
	}
}
