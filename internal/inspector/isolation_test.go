package inspector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/inspector"
)

// isolationSession is a ready session of tenantID whose target nothing serves, with events
// carrying marker (published live too), a queued call and a parked elicitation.
type isolationSession struct {
	id, call, pending string
}

func (s *stack) isolationSession(tenantID, marker string) isolationSession {
	s.t.Helper()
	ctx := context.Background()
	sess := s.readyWithoutOwner(tenantID, "session "+marker)
	if _, err := s.owner.Exec(ctx, `update sessions set epoch = greatest(epoch, 1) where id = $1`, sess.ID); err != nil {
		s.t.Fatal(err)
	}
	out := isolationSession{id: sess.ID}
	call, err := s.svc.StartCall(ctx, tenantID, sess.ID, inspector.StartCallParams{Name: "tool-" + marker, CreatedBy: "key:test"})
	if err != nil {
		s.t.Fatal(err)
	}
	out.call = call.ID
	if err := s.owner.QueryRow(ctx, `insert into pending_requests (id, tenant_id, session_id, kind, params, status, epoch, expires_at)
		values (gen_random_uuid(), $1, $2, 'elicitation', jsonb_build_object('message', $3::text), 'pending', 1, now() + interval '10 minutes')
		returning id`, tenantID, sess.ID, marker).Scan(&out.pending); err != nil {
		s.t.Fatal(err)
	}
	s.appendMarked(tenantID, sess.ID, marker, 2)
	return out
}

// appendMarked commits n events carrying marker as the session's owner would, and publishes
// them on the session's live channel.
func (s *stack) appendMarked(tenantID, sessionID, marker string, n int) {
	s.t.Helper()
	ctx := context.Background()
	tenants, sessions, epochs, kinds, datas, ats := make([]string, n), make([]string, n), make([]int64, n), make([]string, n), make([]string, n), make([]time.Time, n)
	for i := range n {
		tenants[i], sessions[i], epochs[i], kinds[i], ats[i] = tenantID, sessionID, 1, string(inspector.EventNotification), time.Now()
		datas[i] = fmt.Sprintf(`{"method": "notifications/message", "params": {"data": %q}}`, marker)
	}
	var first, last int64
	var refused bool
	if err := s.pool.QueryRow(ctx, `select first_seq, last_seq, refused from tapline_append_events(
		$1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[], $6::timestamptz[])`,
		tenants, sessions, epochs, kinds, datas, ats).Scan(&first, &last, &refused); err != nil || refused {
		s.t.Fatalf("append events: %v (refused %v)", err, refused)
	}
	events, err := s.svc.Events(ctx, tenantID, sessionID, inspector.EventsParams{AfterSeq: first - 1})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, e := range events {
		payload, _ := json.Marshal(e)
		if err := s.rdb.Publish(ctx, s.prefix+":ev:{"+tenantID+":"+sessionID+"}", payload).Err(); err != nil {
			s.t.Fatal(err)
		}
	}
}

// TestTenantIsolation walks every exported method of the inspector's Store and Service that
// reads or changes a tenant's sessions as tenant b against tenant a's: a's session (ready or
// closed), a's call and a's parked request, alone or inside b's own session, are
// ErrNotFound, never ErrNotReady or ErrConflict, which would tell b they exist; b's lists,
// pages, exports and follows carry nothing of a's; b's live sessions do not count against
// a's limit. Afterwards a's objects are as they were.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	a, b := s.a.Tenant.ID, s.b.Tenant.ID
	markerA, markerB := "a-only-marker-"+a, "b-only-marker-"+b
	sa, sb := s.isolationSession(a, markerA), s.isolationSession(b, markerB)
	closedA := s.readyWithoutOwner(a, "closed "+markerA)
	if _, err := s.svc.CloseSession(ctx, a, closedA.ID); err != nil {
		t.Fatal(err)
	}
	store := s.svc.Store()
	auditBefore := auditCount(t, s, a)
	events := func(e []inspector.Event, err error) (any, error) { return e, err }

	// Every call names a's objects as tenant b; each must be ErrNotFound.
	notFound := []struct {
		name string
		do   func(sessionID string) (any, error)
	}{
		{"Store.GetSession", func(id string) (any, error) { return store.GetSession(ctx, b, id) }},
		{"Store.Events", func(id string) (any, error) { return events(store.Events(ctx, b, id, inspector.EventsParams{})) }},
		{"Store.EventPage", func(id string) (any, error) { return store.EventPage(ctx, b, id, inspector.EventsParams{}) }},
		{"Store.ExportEvents", func(id string) (any, error) {
			var got []inspector.Event
			err := store.ExportEvents(ctx, b, id, func(e inspector.Event) error { got = append(got, e); return nil })
			return got, err
		}},
		{"Store.GetCall", func(id string) (any, error) { return store.GetCall(ctx, b, id, sa.call) }},
		{"Store.ListPending", func(id string) (any, error) { return store.ListPending(ctx, b, id, nil) }},
		{"Store.GetPending", func(id string) (any, error) { return store.GetPending(ctx, b, id, sa.pending) }},
		{"Service.GetSession", func(id string) (any, error) { return s.svc.GetSession(ctx, b, id) }},
		{"Service.CloseSession", func(id string) (any, error) { return s.svc.CloseSession(ctx, b, id) }},
		{"Service.ReconnectSession", func(id string) (any, error) { return s.svc.ReconnectSession(ctx, b, id) }},
		{"Service.Request", func(id string) (any, error) { return s.svc.Request(ctx, b, id, inspector.OpPing, nil, nil) }},
		{"Service.StartCall", func(id string) (any, error) {
			return s.svc.StartCall(ctx, b, id, inspector.StartCallParams{Name: "echo", IdempotencyKey: "k", Wait: time.Millisecond})
		}},
		{"Service.GetCall", func(id string) (any, error) { return s.svc.GetCall(ctx, b, id, sa.call) }},
		{"Service.WaitCall", func(id string) (any, error) { return s.svc.WaitCall(ctx, b, id, sa.call, 100*time.Millisecond) }},
		{"Service.CancelCall", func(id string) (any, error) { return s.svc.CancelCall(ctx, b, id, sa.call) }},
		{"Service.ListPending", func(id string) (any, error) { return s.svc.ListPending(ctx, b, id, nil) }},
		{"Service.AnswerPending", func(id string) (any, error) {
			return s.svc.AnswerPending(ctx, b, id, sa.pending, "key:b", inspector.PendingAnswer{Action: "decline"})
		}},
		{"Service.SetRoots", func(id string) (any, error) {
			return s.svc.SetRoots(ctx, b, id, []inspector.Root{{URI: "file:///b"}}, nil)
		}},
		{"Service.Events", func(id string) (any, error) { return events(s.svc.Events(ctx, b, id, inspector.EventsParams{})) }},
		{"Service.EventPage", func(id string) (any, error) { return s.svc.EventPage(ctx, b, id, inspector.EventsParams{}) }},
		{"Service.ExportEvents", func(id string) (any, error) {
			return nil, s.svc.ExportEvents(ctx, b, id, func(inspector.Event) error { return errors.New("an event of a's") })
		}},
		{"Service.Follow", func(id string) (any, error) {
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var got []inspector.Event
			err := s.svc.Follow(fctx, b, id, inspector.FollowParams{Emit: func(e inspector.Event) error { got = append(got, e); return nil }})
			return got, err
		}},
	}
	for _, tc := range notFound {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range []string{sa.id, closedA.ID} {
				if got, err := tc.do(id); !errors.Is(err, inspector.ErrNotFound) {
					t.Errorf("%s of a's session %s as b = %+v, %v; want ErrNotFound", tc.name, id, got, err)
				}
			}
		})
	}
	// a's call and request inside b's own session, and b's inside a's.
	for name, do := range map[string]func() (any, error){
		"Store.GetCall":         func() (any, error) { return store.GetCall(ctx, b, sb.id, sa.call) },
		"Store.GetPending":      func() (any, error) { return store.GetPending(ctx, b, sb.id, sa.pending) },
		"Service.GetCall":       func() (any, error) { return s.svc.GetCall(ctx, b, sb.id, sa.call) },
		"Service.WaitCall":      func() (any, error) { return s.svc.WaitCall(ctx, b, sb.id, sa.call, 100*time.Millisecond) },
		"Service.CancelCall":    func() (any, error) { return s.svc.CancelCall(ctx, b, sb.id, sa.call) },
		"Service.CancelCall/ba": func() (any, error) { return s.svc.CancelCall(ctx, b, sa.id, sb.call) },
		"Service.AnswerPending": func() (any, error) {
			return s.svc.AnswerPending(ctx, b, sb.id, sa.pending, "key:b", inspector.PendingAnswer{Action: "decline"})
		},
		"Service.AnswerPending/ba": func() (any, error) {
			return s.svc.AnswerPending(ctx, b, sa.id, sb.pending, "key:b", inspector.PendingAnswer{Action: "decline"})
		},
	} {
		if got, err := do(); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("%s of a's object in b's session as b = %+v, %v; want ErrNotFound", name, got, err)
		}
	}

	// b's own reads carry nothing of a's.
	leaks := func(what string, v any, err error) {
		t.Helper()
		raw, _ := json.Marshal(v)
		if err != nil || strings.Contains(string(raw), markerA) || strings.Contains(string(raw), a) ||
			slices.ContainsFunc([]string{sa.id, sa.call, sa.pending, closedA.ID}, func(id string) bool { return strings.Contains(string(raw), id) }) {
			t.Errorf("tenant b's %s = %s, %v", what, raw, err)
		}
		if !strings.Contains(string(raw), markerB) && !strings.Contains(string(raw), sb.id) {
			t.Errorf("tenant b's %s lacks b's own objects: %s", what, raw)
		}
	}
	page, err := store.ListSessions(ctx, b, inspector.ListSessionsParams{Limit: 200})
	leaks("Store.ListSessions", page, err)
	page, err = s.svc.ListSessions(ctx, b, inspector.ListSessionsParams{Status: []inspector.Status{inspector.StatusReady, inspector.StatusClosed}})
	leaks("Service.ListSessions", page, err)
	calls, err := store.ListCalls(ctx, b, sb.id, 500)
	leaks("Store.ListCalls", calls, err)
	calls, err = s.svc.ListCalls(ctx, b, sb.id, 500)
	leaks("Service.ListCalls", calls, err)
	pend, err := store.ListPending(ctx, b, sb.id, nil)
	leaks("Store.ListPending", pend, err)
	evs, err := store.Events(ctx, b, sb.id, inspector.EventsParams{Limit: 1000})
	leaks("Store.Events", evs, err)
	ep, err := s.svc.EventPage(ctx, b, sb.id, inspector.EventsParams{})
	leaks("Service.EventPage", ep, err)
	var exported []inspector.Event
	err = s.svc.ExportEvents(ctx, b, sb.id, func(e inspector.Event) error { exported = append(exported, e); return nil })
	leaks("Service.ExportEvents", exported, err)
	// ListCalls does not tell a session it cannot see from one without calls: empty either way.
	if calls, err := store.ListCalls(ctx, b, sa.id, 500); err != nil || len(calls) != 0 {
		t.Errorf("Store.ListCalls of a's session as b = %+v, %v; want none", calls, err)
	}

	// Following b's session gives b's events only, also while a's session publishes.
	t.Run("Service.Follow", func(t *testing.T) {
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		got := make(chan inspector.Event, 100)
		done := make(chan error, 1)
		go func() {
			done <- s.svc.Follow(fctx, b, sb.id, inspector.FollowParams{Emit: func(e inspector.Event) error { got <- e; return nil }})
		}()
		next := func() inspector.Event {
			select {
			case e := <-got:
				return e
			case <-fctx.Done():
				t.Fatal("no event from b's follow")
				return inspector.Event{}
			}
		}
		for range 2 {
			leaks("follow's backlog", next(), nil)
		}
		s.appendMarked(a, sa.id, markerA, 3)
		s.appendMarked(b, sb.id, markerB, 1)
		leaks("follow's live event", next(), nil)
		select {
		case e := <-got:
			t.Errorf("b's follow sent %+v", e)
		case <-time.After(300 * time.Millisecond):
		}
		cancel()
		<-done
	})

	// a's objects are as they were.
	if sess, err := s.svc.GetSession(ctx, a, sa.id); err != nil || sess.Status != inspector.StatusReady || len(sess.Roots) != 0 {
		t.Errorf("a's session = %+v, %v", sess, err)
	}
	if sess, err := s.svc.GetSession(ctx, a, closedA.ID); err != nil || sess.Status != inspector.StatusClosed || len(sess.Roots) != 0 {
		t.Errorf("a's closed session = %+v, %v", sess, err)
	}
	if c, err := s.svc.GetCall(ctx, a, sa.id, sa.call); err != nil || c.Status != inspector.CallQueued {
		t.Errorf("a's call = %+v, %v", c, err)
	}
	if p, err := store.GetPending(ctx, a, sa.id, sa.pending); err != nil || p.Status != inspector.PendingWaiting {
		t.Errorf("a's request = %+v, %v", p, err)
	}
	if calls, err := s.svc.ListCalls(ctx, a, sa.id, 500); err != nil || len(calls) != 1 {
		t.Errorf("a's calls = %+v, %v", calls, err)
	}
	if evs, err := s.svc.Events(ctx, a, sa.id, inspector.EventsParams{Limit: 1000}); err != nil || len(evs) != 5 {
		t.Errorf("a's events = %+v, %v", evs, err)
	}
	if n := auditCount(t, s, a); n != auditBefore {
		t.Errorf("a's audit log has %d events after b's calls, %d before", n, auditBefore)
	}

	// b's live sessions do not count against a's limit: with room for one more, a gets it
	// after b opened two.
	if _, err := s.owner.Exec(ctx, `update tenants set max_live_sessions = 2 where id = $1`, a); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.svc.CreateSession(ctx, b, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://127.0.0.1:9/mcp"}}); err != nil {
			t.Fatalf("tenant b's session: %v", err)
		}
	}
	second, err := s.svc.CreateSession(ctx, a, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://127.0.0.1:9/mcp"}})
	if err != nil {
		t.Fatalf("tenant a's second live session = %v", err)
	}
	if _, err := s.svc.CreateSession(ctx, a, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://127.0.0.1:9/mcp"}}); !errors.Is(err, inspector.ErrLiveSessionLimit) {
		t.Fatalf("tenant a's third live session = %v, want ErrLiveSessionLimit", err)
	}
	if _, err := s.svc.CloseSession(ctx, a, second.ID); err != nil {
		t.Fatal(err)
	}
}

// auditCount is the number of events in a tenant's audit log.
func auditCount(t *testing.T, s *stack, tenantID string) int {
	t.Helper()
	page, err := s.audit.List(context.Background(), tenantID, audit.Filter{}, audit.PageParams{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(page.Items)
}
