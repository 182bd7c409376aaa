package inspector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
	"github.com/tapline/tapline/internal/netguard"
)

func TestSessionEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{Headers: map[string]string{"X-Api-Key": "hunter2-secret"}, BearerToken: "tok-secret-123"})
	if sess.Status != inspector.StatusConnecting || !sess.Target.HasBearerToken || len(sess.Target.HeaderNames) != 1 {
		t.Fatalf("created session = %+v", sess)
	}
	ready := s.waitStatus(sess.ID, inspector.StatusReady)
	if ready.ProtocolVersion != "2025-11-25" || !strings.Contains(string(ready.ServerInfo), "mcptest-stateful") || len(ready.Capabilities) == 0 {
		t.Fatalf("ready session = %+v", ready)
	}

	t.Run("ListTools", func(t *testing.T) {
		res, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpListTools, map[string]any{"all": true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{`"echo"`, `"slow"`, `"sample"`, `"elicit"`} {
			if !strings.Contains(string(res), name) {
				t.Fatalf("tools/list lacks %s: %s", name, res)
			}
		}
	})
	t.Run("FastCallResultIsDurable", func(t *testing.T) {
		c := s.call(sess.ID, "echo", map[string]any{"text": "hello"})
		done := s.wait(sess.ID, c.ID)
		if done.Status != inspector.CallSucceeded || callText(t, done) != "hello" {
			t.Fatalf("echo = %+v", done)
		}
		// Readable later, whoever asks.
		again, err := s.svc.GetCall(ctx, s.a.Tenant.ID, sess.ID, c.ID)
		if err != nil || again.Status != inspector.CallSucceeded {
			t.Fatalf("get call = %+v, %v", again, err)
		}
		s.waitEvent(sess.ID, func(e inspector.Event) bool {
			return e.Type == inspector.EventCallResult && dataOf(e)["call_id"] == c.ID && dataOf(e)["ok"] == true
		})
	})
	t.Run("ProgressIsLinkedToTheCall", func(t *testing.T) {
		c := s.call(sess.ID, "slow", map[string]any{"steps": 3, "interval_ms": 20})
		done := s.wait(sess.ID, c.ID)
		if done.Status != inspector.CallSucceeded {
			t.Fatalf("slow = %+v", done)
		}
		// go-sdk hands the result to the caller as soon as it is read, while the notifications
		// before it wait their turn with the session's handlers: the last progress may be
		// recorded just after the result, never lost and never undone by an earlier one.
		eventually(t, 10*time.Second, "the call's progress at 3", func() bool {
			got, err := s.svc.GetCall(ctx, s.a.Tenant.ID, sess.ID, c.ID)
			return err == nil && got.Status == inspector.CallSucceeded && got.Progress != nil && got.Progress.Progress == 3
		})
		n := 0
		for _, e := range s.events(sess.ID) {
			if e.Type == inspector.EventProgress && dataOf(e)["call_id"] == c.ID {
				n++
			}
		}
		if n != 3 {
			t.Fatalf("%d progress events for the call, want 3", n)
		}
	})
	t.Run("SamplingIsAnsweredByAPerson", func(t *testing.T) {
		c := s.call(sess.ID, "sample", map[string]any{"prompt": "say hi"})
		var p inspector.Pending
		eventually(t, 10*time.Second, "pending sampling request", func() bool {
			list, err := s.svc.ListPending(ctx, s.a.Tenant.ID, sess.ID, []inspector.PendingStatus{inspector.PendingWaiting})
			if err != nil || len(list) == 0 {
				return false
			}
			p = list[0]
			return true
		})
		if p.Kind != inspector.PendingSampling || !strings.Contains(string(p.Params), "say hi") {
			t.Fatalf("pending = %+v", p)
		}
		ans := inspector.PendingAnswer{Result: json.RawMessage(`{"role":"assistant","model":"human","content":{"type":"text","text":"hi from a person"}}`)}
		if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sess.ID, p.RequestID, "key:test", ans); err != nil {
			t.Fatal(err)
		}
		if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sess.ID, p.RequestID, "key:test", ans); !errors.Is(err, inspector.ErrConflict) {
			t.Fatalf("second answer = %v, want ErrConflict", err)
		}
		done := s.wait(sess.ID, c.ID)
		if done.Status != inspector.CallSucceeded || !strings.Contains(string(done.Result), "hi from a person") {
			t.Fatalf("sample = %+v %s", done, done.Result)
		}
	})
	t.Run("ElicitationFormIsAccepted", func(t *testing.T) {
		c := s.call(sess.ID, "elicit", map[string]any{"message": "who are you?"})
		var p inspector.Pending
		eventually(t, 10*time.Second, "pending elicitation", func() bool {
			list, _ := s.svc.ListPending(ctx, s.a.Tenant.ID, sess.ID, []inspector.PendingStatus{inspector.PendingWaiting})
			for _, x := range list {
				if x.Kind == inspector.PendingElicitation {
					p = x
					return true
				}
			}
			return false
		})
		// The server left the mode out: the pending request says what MCP infers.
		var mode struct {
			Mode string `json:"mode"`
		}
		if err := json.Unmarshal(p.Params, &mode); err != nil || mode.Mode != "form" {
			t.Errorf("elicitation params = %s, want the inferred mode form", p.Params)
		}
		var params struct {
			RequestedSchema struct {
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			} `json:"requestedSchema"`
		}
		_ = json.Unmarshal(p.Params, &params)
		content := map[string]any{}
		for name, raw := range params.RequestedSchema.Properties {
			var prop struct {
				Default any   `json:"default"`
				Enum    []any `json:"enum"`
				Type    string
			}
			_ = json.Unmarshal(raw, &prop)
			switch {
			case prop.Default != nil:
				content[name] = prop.Default
			case len(prop.Enum) > 0:
				content[name] = prop.Enum[0]
			case prop.Type == "number" || prop.Type == "integer":
				content[name] = 1
			case prop.Type == "boolean":
				content[name] = true
			default:
				content[name] = "tapline"
			}
		}
		raw, _ := json.Marshal(content)
		if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sess.ID, p.RequestID, "key:test", inspector.PendingAnswer{Action: "accept", Content: raw}); err != nil {
			t.Fatal(err)
		}
		done := s.wait(sess.ID, c.ID)
		if done.Status != inspector.CallSucceeded || !strings.Contains(string(done.Result), "accept") {
			t.Fatalf("elicit = %+v %s", done, done.Result)
		}
	})
	t.Run("CancelReachesTheTarget", func(t *testing.T) {
		c := s.call(sess.ID, "slow", map[string]any{"steps": 200, "interval_ms": 50, "key": "cancel-me"})
		s.waitEvent(sess.ID, func(e inspector.Event) bool { return e.Type == inspector.EventProgress && dataOf(e)["call_id"] == c.ID })
		got, err := s.svc.CancelCall(ctx, s.a.Tenant.ID, sess.ID, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != inspector.CallCancelled {
			got = s.wait(sess.ID, c.ID)
		}
		if got.Status != inspector.CallCancelled {
			t.Fatalf("cancelled call = %+v", got)
		}
		eventually(t, 10*time.Second, "target saw the cancellation", func() bool { return srv.CancelledCalls("slow") > 0 })
	})
	t.Run("RootsAreOfferedAndReplaced", func(t *testing.T) {
		roots := []inspector.Root{{URI: "file:///work/project", Name: "project"}}
		if _, err := s.svc.SetRoots(ctx, s.a.Tenant.ID, sess.ID, roots, nil); err != nil {
			t.Fatal(err)
		}
		done := s.wait(sess.ID, s.call(sess.ID, "roots", nil).ID)
		if !strings.Contains(string(done.Result), "file:///work/project") {
			t.Fatalf("roots = %s", done.Result)
		}
		got, _ := s.svc.GetSession(ctx, s.a.Tenant.ID, sess.ID)
		if len(got.Roots) != 1 || got.Roots[0].URI != roots[0].URI {
			t.Fatalf("stored roots = %+v", got.Roots)
		}
	})
	t.Run("SubscriptionUpdatesArriveAsNotifications", func(t *testing.T) {
		if _, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpSubscribe, map[string]any{"uri": mcptest.HelloURI}, nil); err != nil {
			t.Fatal(err)
		}
		srv.TriggerResourceUpdated(mcptest.HelloURI)
		s.waitEvent(sess.ID, func(e inspector.Event) bool {
			return e.Type == inspector.EventNotification && dataOf(e)["method"] == "notifications/resources/updated"
		})
		got, _ := s.svc.GetSession(ctx, s.a.Tenant.ID, sess.ID)
		if len(got.Subscriptions) != 1 || got.Subscriptions[0] != mcptest.HelloURI {
			t.Fatalf("subscriptions = %v", got.Subscriptions)
		}
	})
	t.Run("FastOperations", func(t *testing.T) {
		res, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpReadResource, map[string]any{"uri": mcptest.HelloURI}, nil)
		if err != nil || !strings.Contains(string(res), "contents") {
			t.Fatalf("read = %s, %v", res, err)
		}
		res, err = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpPing, nil, nil)
		if err != nil || !strings.Contains(string(res), `"ms"`) {
			t.Fatalf("ping = %s, %v", res, err)
		}
		res, err = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpGetPrompt, map[string]any{"name": "greet", "arguments": map[string]string{"name": "Ada"}}, nil)
		if err != nil || !strings.Contains(string(res), "Ada") {
			t.Fatalf("prompts/get = %s, %v", res, err)
		}
		res, err = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpRPC, map[string]any{"method": mcptest.CustomMethod, "params": map[string]any{"value": 42}}, nil)
		if err != nil || !strings.Contains(string(res), "42") {
			t.Fatalf("rpc custom = %s, %v", res, err)
		}
		res, err = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpRPC, map[string]any{"method": "tools/list"}, nil)
		if err != nil || !strings.Contains(string(res), "echo") {
			t.Fatalf("rpc tools/list = %s, %v", res, err)
		}
		if _, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpSetLoggingLevel, map[string]any{"level": "debug"}, nil); err != nil {
			t.Fatal(err)
		}
		s.wait(sess.ID, s.call(sess.ID, "log", nil).ID)
		s.waitEvent(sess.ID, func(e inspector.Event) bool {
			return e.Type == inspector.EventNotification && dataOf(e)["method"] == "notifications/message"
		})
		_, err = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpReadResource, map[string]any{"uri": "mcptest://no/such"}, nil)
		var remote *inspector.RemoteError
		if !errors.As(err, &remote) {
			t.Fatalf("unknown resource = %v, want a RemoteError", err)
		}
	})
	t.Run("FramesAreTappedAndSecretsRedacted", func(t *testing.T) {
		events := s.events(sess.ID)
		requireGapless(t, events)
		var sends, recvs int
		for _, e := range events {
			if e.Type != inspector.EventFrame {
				continue
			}
			if strings.Contains(string(e.Data), "hunter2-secret") || strings.Contains(string(e.Data), "tok-secret-123") {
				t.Fatalf("a frame leaks a secret: %s", e.Data)
			}
			switch dataOf(e)["dir"] {
			case "send":
				sends++
			case "recv":
				recvs++
			}
		}
		if sends < 5 || recvs < 5 {
			t.Fatalf("frames: %d sent, %d received", sends, recvs)
		}
		big := s.wait(sess.ID, s.call(sess.ID, "big", map[string]any{"size": 100 << 10}).ID)
		if big.Status != inspector.CallSucceeded {
			t.Fatalf("big = %+v", big)
		}
		s.waitEvent(sess.ID, func(e inspector.Event) bool {
			d := dataOf(e)
			return e.Type == inspector.EventFrame && d["truncated"] == true && len(d["preview"].(string)) <= 4096 && d["size"].(float64) > 100<<10
		})
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		if _, err := s.svc.GetSession(ctx, s.b.Tenant.ID, sess.ID); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("get = %v", err)
		}
		if _, err := s.svc.Events(ctx, s.b.Tenant.ID, sess.ID, inspector.EventsParams{}); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("events = %v", err)
		}
		if _, err := s.svc.StartCall(ctx, s.b.Tenant.ID, sess.ID, inspector.StartCallParams{Name: "echo"}); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("call = %v", err)
		}
		if _, err := s.svc.Request(ctx, s.b.Tenant.ID, sess.ID, inspector.OpListTools, nil, nil); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("tools = %v", err)
		}
		if _, err := s.svc.ListPending(ctx, s.b.Tenant.ID, sess.ID, nil); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("pending = %v", err)
		}
		if _, err := s.svc.CloseSession(ctx, s.b.Tenant.ID, sess.ID); !errors.Is(err, inspector.ErrNotFound) {
			t.Errorf("close = %v", err)
		}
	})
	t.Run("CloseKeepsHistory", func(t *testing.T) {
		before := len(s.events(sess.ID))
		closed, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, sess.ID)
		if err != nil || closed.Status != inspector.StatusClosed {
			t.Fatalf("close = %+v, %v", closed, err)
		}
		if _, err := s.svc.StartCall(ctx, s.a.Tenant.ID, sess.ID, inspector.StartCallParams{Name: "echo"}); !errors.Is(err, inspector.ErrNotReady) {
			t.Fatalf("call on closed session = %v", err)
		}
		if after := len(s.events(sess.ID)); after < before {
			t.Fatalf("history shrank from %d to %d", before, after)
		}
		eventually(t, 10*time.Second, "worker let go of the session", func() bool { return s.workers[0].rt.Sessions() == 0 })
		// Followers see the end: the closed status, then only the teardown's frames.
		events := s.events(sess.ID)
		closedAt := -1
		for i, e := range events {
			if e.Type == inspector.EventStatus && dataOf(e)["state"] == "closed" {
				closedAt = i
			}
		}
		if closedAt < 0 {
			t.Fatal("no closed status event")
		}
		for _, e := range events[closedAt+1:] {
			if e.Type != inspector.EventFrame {
				t.Fatalf("after the closed status: %s %s", e.Type, e.Data)
			}
		}
		requireGapless(t, events)
	})
}

func TestSessionsSurviveHostileServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	w := s.addWorker()
	good := mcptest.NewStatefulServer(t, nil)
	hostile := mcptest.NewHostileServer(t)
	goodSess := s.create(good.URL(), inspector.Target{})
	s.waitStatus(goodSess.ID, inspector.StatusReady)
	for _, mode := range []mcptest.HostileMode{mcptest.ModeOversized, mcptest.ModeGarbage, mcptest.ModeHugeEvent, mcptest.ModeCutJSON, mcptest.ModeStatus500} {
		t.Run(string(mode), func(t *testing.T) {
			sess := s.create(hostile.URL(mode), inspector.Target{})
			s.waitStatus(sess.ID, inspector.StatusReady)
			c := s.call(sess.ID, "anything", nil)
			done, err := s.svc.WaitCall(ctx, s.a.Tenant.ID, sess.ID, c.ID, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if done.Status == inspector.CallSucceeded {
				t.Fatalf("hostile %s call succeeded with %d bytes", mode, len(done.Result))
			}
			// Every frame stays within bounds.
			for _, e := range s.events(sess.ID) {
				if len(e.Data) > 80<<10 {
					t.Fatalf("event %d is %d bytes", e.Seq, len(e.Data))
				}
			}
			// The worker and the other session are unaffected.
			ok := s.wait(goodSess.ID, s.call(goodSess.ID, "echo", map[string]any{"text": "still here"}).ID)
			if ok.Status != inspector.CallSucceeded {
				t.Fatalf("good session after hostile %s: %+v", mode, ok)
			}
		})
	}
	if w.rt.Sessions() == 0 {
		t.Fatal("worker lost its sessions")
	}
}

func TestTargetRefusedAtCreation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	strict, err := inspector.NewService(&inspector.ServiceConfig{
		Pool: nil, Redis: s.rdb, Tracker: nil, Guard: s.guard, Keys: s.keys,
	})
	if err == nil || strict != nil {
		t.Fatal("NewService accepted a config without a pool")
	}
	for _, bad := range []struct{ url, field string }{
		{"ftp://example.com/mcp", "target.url"},
		{"http://user:pw@example.com/", "target.url"},
		{"not a url", "target.url"},
	} {
		_, err := s.svc.CreateSession(ctx, s.a.Tenant.ID, inspector.CreateSessionParams{Target: inspector.Target{URL: bad.url}})
		var ve *inspector.ValidationError
		if !errors.As(err, &ve) || ve.Field != bad.field {
			t.Errorf("create %q = %v, want a ValidationError on %s", bad.url, err, bad.field)
		}
	}
	_, err = s.svc.CreateSession(ctx, s.a.Tenant.ID, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://169.254.169.254/latest/meta-data"}})
	var refused *inspector.TargetRefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("metadata target = %v, want TargetRefusedError", err)
	}
	_, err = s.svc.CreateSession(ctx, s.a.Tenant.ID, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://127.0.0.1:9/", Headers: map[string]string{"Bad\nName": "x"}}})
	var ve *inspector.ValidationError
	if !errors.As(err, &ve) || !strings.HasPrefix(ve.Field, "target.headers") {
		t.Fatalf("bad header = %v", err)
	}
}

func TestDrainHandsSessionsOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{leaseTTL: 30 * time.Second})
	first := s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	s.waitStatus(sess.ID, inspector.StatusReady)
	if _, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpSubscribe, map[string]any{"uri": mcptest.HelloURI}, nil); err != nil {
		t.Fatal(err)
	}
	running := s.call(sess.ID, "slow", map[string]any{"steps": 400, "interval_ms": 50})
	s.waitEvent(sess.ID, func(e inspector.Event) bool {
		return e.Type == inspector.EventProgress && dataOf(e)["call_id"] == running.ID
	})
	before, _ := s.svc.GetSession(ctx, s.a.Tenant.ID, sess.ID)

	second := s.addWorker()
	start := time.Now()
	first.stop()
	// The lease TTL is 30s: a takeover well before it proves the drain handed it over.
	moved := s.waitEvent(sess.ID, func(e inspector.Event) bool { return e.Type == inspector.EventSessionMoved })
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("takeover after drain took %v", took)
	}
	after := s.waitStatus(sess.ID, inspector.StatusReady)
	if after.Epoch <= before.Epoch {
		t.Fatalf("epoch %d after takeover, was %d", after.Epoch, before.Epoch)
	}
	if d := dataOf(moved); int64(d["epoch"].(float64)) != after.Epoch || d["to_worker"] == d["from_worker"] {
		t.Fatalf("session_moved = %s", moved.Data)
	}
	// The call that ran on the drained worker is interrupted, never left running. (The
	// session's stored status is still the old owner's "ready" until the new one connects,
	// so wait for the call itself.)
	var got *inspector.Call
	eventually(t, 10*time.Second, "the moved call is interrupted", func() bool {
		var err error
		got, err = s.svc.GetCall(ctx, s.a.Tenant.ID, sess.ID, running.ID)
		return err == nil && got.Status.Finished()
	})
	if got.Status != inspector.CallInterrupted {
		t.Fatalf("running call after takeover = %+v", got)
	}
	// The new owner restored the subscription and serves calls. An update the server sends
	// before the new connection's standalone stream is open has nowhere to go (Streamable
	// HTTP drops it), so updates are sent until one arrives.
	eventually(t, 20*time.Second, "a resource update reaches the new owner", func() bool {
		_ = srv.TriggerResourceUpdated(mcptest.HelloURI)
		return slices.ContainsFunc(s.events(sess.ID), func(e inspector.Event) bool {
			return e.Type == inspector.EventNotification && dataOf(e)["method"] == "notifications/resources/updated" && e.Seq > moved.Seq
		})
	})
	done := s.wait(sess.ID, s.call(sess.ID, "echo", map[string]any{"text": "after"}).ID)
	if done.Status != inspector.CallSucceeded {
		t.Fatalf("call after takeover = %+v", done)
	}
	if second.rt.Sessions() != 1 {
		t.Fatalf("second worker holds %d sessions", second.rt.Sessions())
	}
	requireGapless(t, s.events(sess.ID))
}

func TestStaleOwnerIsRefusedByTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	sess := s.create("http://127.0.0.1:9/mcp", inspector.Target{})
	// Epoch 2 owns the session; a write by epoch 1 must be refused and write nothing.
	if _, err := s.pool.Exec(ctx, "select set_config('app.tenant_id', $1, false)", s.a.Tenant.ID); err != nil {
		t.Fatal(err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "select set_config('app.tenant_id', $1, true)", s.a.Tenant.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "update sessions set epoch = 2 where id = $1", sess.ID); err != nil {
		t.Fatal(err)
	}
	var refused bool
	var first *int64
	err = tx.QueryRow(ctx, `select first_seq, refused from tapline_append_events(
		array[$1::uuid], array[$2::uuid], array[1::bigint], array['status'], array['{}'::jsonb], array[now()])`,
		s.a.Tenant.ID, sess.ID).Scan(&first, &refused)
	if err != nil || !refused || first != nil {
		t.Fatalf("stale append: first %v refused %v err %v", first, refused, err)
	}
	err = tx.QueryRow(ctx, `select first_seq, refused from tapline_append_events(
		array[$1::uuid, $1::uuid], array[$2::uuid, $2::uuid], array[2::bigint, 2::bigint], array['status', 'status'],
		array['{}'::jsonb, '{}'::jsonb], array[now(), now()])`, s.a.Tenant.ID, sess.ID).Scan(&first, &refused)
	if err != nil || refused || first == nil || *first != 1 {
		t.Fatalf("current append: first %v refused %v err %v", first, refused, err)
	}
	var n int
	if err := tx.QueryRow(ctx, "select count(*) from session_events where session_id = $1", sess.ID).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d events stored, want the current owner's 2 (%v)", n, err)
	}
}

// answerInputRound answers every pending input request of a call as a person would.
func (s *stack) answerInputRound(t *testing.T, sessionID, callID string, want int) {
	t.Helper()
	ctx := context.Background()
	var round []inspector.Pending
	eventually(t, 15*time.Second, "input requests of the call", func() bool {
		list, err := s.svc.ListPending(ctx, s.a.Tenant.ID, sessionID, []inspector.PendingStatus{inspector.PendingWaiting})
		if err != nil {
			return false
		}
		round = round[:0]
		for _, p := range list {
			if p.Kind == inspector.PendingInputRequired && p.CallID == callID {
				round = append(round, p)
			}
		}
		return len(round) == want
	})
	for _, p := range round {
		var req struct {
			Method string `json:"method"`
			Key    string `json:"key"`
		}
		_ = json.Unmarshal(p.Params, &req)
		var ans inspector.PendingAnswer
		switch req.Method {
		case "elicitation/create":
			ans = inspector.PendingAnswer{Action: "accept", Content: json.RawMessage(`{"approve":true}`)}
		case "sampling/createMessage":
			ans = inspector.PendingAnswer{Result: json.RawMessage(`{"role":"assistant","model":"human","content":{"type":"text","text":"LGTM"}}`)}
		default:
			t.Fatalf("unexpected input request %s", p.Params)
		}
		if _, err := s.svc.AnswerPending(ctx, s.a.Tenant.ID, sessionID, p.RequestID, "key:test", ans); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInputRequiredRoundsAreParked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{leaseTTL: 30 * time.Second})
	first := s.addWorker()
	srv := mcptest.NewStatelessServer(t, nil)
	sess := s.create(srv.URL(), inspector.Target{})
	ready := s.waitStatus(sess.ID, inspector.StatusReady)
	if ready.ProtocolVersion != "2026-07-28" {
		t.Fatalf("negotiated %q, want 2026-07-28", ready.ProtocolVersion)
	}
	if _, err := s.svc.SetRoots(ctx, s.a.Tenant.ID, sess.ID, []inspector.Root{{URI: "file:///repo"}}, nil); err != nil {
		t.Fatal(err)
	}

	t.Run("AnsweredByAPerson", func(t *testing.T) {
		c := s.call(sess.ID, "confirm", map[string]any{"key": "mrtr-1"})
		// approve (elicitation) and summary (sampling) need a person; roots are answered
		// from the session's roots.
		s.answerInputRound(t, sess.ID, c.ID, 2)
		done := s.wait(sess.ID, c.ID)
		if done.Status != inspector.CallSucceeded || !strings.Contains(callText(t, done), `approve=true summary="LGTM" roots=file:///repo`) {
			t.Fatalf("confirm = %+v %s", done, done.Result)
		}
	})
	t.Run("SurvivesATakeoverMidRound", func(t *testing.T) {
		c := s.call(sess.ID, "confirm", map[string]any{"key": "mrtr-2"})
		eventually(t, 15*time.Second, "input requests parked", func() bool {
			list, _ := s.svc.ListPending(ctx, s.a.Tenant.ID, sess.ID, []inspector.PendingStatus{inspector.PendingWaiting})
			n := 0
			for _, p := range list {
				if p.CallID == c.ID {
					n++
				}
			}
			return n == 2
		})
		s.addWorker()
		first.stop()
		s.waitEvent(sess.ID, func(e inspector.Event) bool { return e.Type == inspector.EventSessionMoved })
		got, _ := s.svc.GetCall(ctx, s.a.Tenant.ID, sess.ID, c.ID)
		if got.Status != inspector.CallRunning {
			t.Fatalf("call waiting for input after takeover = %s, want running", got.Status)
		}
		s.answerInputRound(t, sess.ID, c.ID, 2)
		done := s.wait(sess.ID, c.ID)
		if done.Status != inspector.CallSucceeded || !strings.Contains(callText(t, done), "approve=true") {
			t.Fatalf("confirm after takeover = %+v %s", done, done.Result)
		}
	})
}

func TestSessionActionsAreAudited(t *testing.T) {
	t.Parallel()
	ctx := audit.WithActor(context.Background(), audit.Actor{Kind: "api_key", ID: "key:auditor"})
	s := newStack(t, stackOptions{})
	s.addWorker()
	srv := mcptest.NewStatefulServer(t, nil)
	sess, err := s.svc.CreateSession(ctx, s.a.Tenant.ID, inspector.CreateSessionParams{
		Name: "audited", Target: inspector.Target{URL: srv.URL(), BearerToken: "never-in-the-log"}})
	if err != nil {
		t.Fatal(err)
	}
	s.waitStatus(sess.ID, inspector.StatusReady)
	c, err := s.svc.StartCall(ctx, s.a.Tenant.ID, sess.ID, inspector.StartCallParams{Name: "echo", Arguments: json.RawMessage(`{"text":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	s.wait(sess.ID, c.ID)
	if _, err := s.svc.SetRoots(ctx, s.a.Tenant.ID, sess.ID, []inspector.Root{{URI: "file:///a"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	// A failed change records nothing: a call on the closed session.
	if _, err := s.svc.StartCall(ctx, s.a.Tenant.ID, sess.ID, inspector.StartCallParams{Name: "echo"}); err == nil {
		t.Fatal("call on a closed session was accepted")
	}
	page, err := s.audit.List(context.Background(), s.a.Tenant.ID, audit.Filter{}, audit.PageParams{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Items {
		got = append(got, ev.Action+" "+ev.Target.Type)
		if ev.Actor.ID != "key:auditor" {
			t.Errorf("%s recorded actor %+v", ev.Action, ev.Actor)
		}
		if strings.Contains(string(ev.Details), "never-in-the-log") {
			t.Fatalf("audit details leak the bearer token: %s", ev.Details)
		}
	}
	want := []string{"session.create session", "tool.call call", "roots.update session", "session.close session"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("audit log = %v, want %v", got, want)
	}
	res, err := s.audit.Verify(context.Background(), s.a.Tenant.ID, nil, nil)
	if err != nil || !res.OK {
		t.Fatalf("verify = %+v, %v", res, err)
	}
	other, _ := s.audit.List(context.Background(), s.b.Tenant.ID, audit.Filter{}, audit.PageParams{})
	if len(other.Items) != 0 {
		t.Fatalf("tenant b's log has %d events", len(other.Items))
	}
}

func TestTargetFailuresAreNotInternalErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess := newReadySession(t)
	// go-sdk servers refuse unknown methods with a plain HTTP 400, not a JSON-RPC error: the
	// worker answers it as the request's JSON-RPC error, Invalid Request.
	_, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpRPC, map[string]any{"method": "no/such/method"}, nil)
	var remote *inspector.RemoteError
	if !errors.As(err, &remote) || remote.Code != -32600 || !strings.Contains(remote.Message, "HTTP 400") {
		t.Fatalf("unknown method = %v, want the JSON-RPC error -32600 naming HTTP 400", err)
	}
	// go-sdk's client would have dropped the connection for it; it is still there.
	if _, err := s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpPing, nil, nil); err != nil {
		t.Fatalf("ping after the refusal: %v", err)
	}
}

func TestTenantLiveSessionQuota(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStack(t, stackOptions{})
	if _, err := s.owner.Exec(ctx, `update tenants set max_live_sessions = 1 where id = $1`, s.a.Tenant.ID); err != nil {
		t.Fatal(err)
	}
	mk := func(tenantID string) (*inspector.Session, error) {
		return s.svc.CreateSession(ctx, tenantID, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://127.0.0.1:9/mcp"}})
	}
	first, err := mk(s.a.Tenant.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mk(s.a.Tenant.ID); !errors.Is(err, inspector.ErrLiveSessionLimit) {
		t.Fatalf("second live session = %v, want ErrLiveSessionLimit", err)
	}
	// The other tenant keeps the install default.
	for range 3 {
		if _, err := mk(s.b.Tenant.ID); err != nil {
			t.Fatalf("tenant b: %v", err)
		}
	}
	if _, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, first.ID); err != nil {
		t.Fatal(err)
	}
	second, err := mk(s.a.Tenant.ID)
	if err != nil {
		t.Fatalf("after closing one: %v", err)
	}
	// Reconnecting the closed one would make two live sessions.
	if _, err := s.svc.ReconnectSession(ctx, s.a.Tenant.ID, first.ID); !errors.Is(err, inspector.ErrLiveSessionLimit) {
		t.Fatalf("reconnect over the quota = %v, want ErrLiveSessionLimit", err)
	}
	if got, _ := s.svc.GetSession(ctx, s.a.Tenant.ID, first.ID); got.Status != inspector.StatusClosed {
		t.Fatalf("refused reconnect left the session %s", got.Status)
	}
	if _, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, second.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.ReconnectSession(ctx, s.a.Tenant.ID, first.ID); err != nil {
		t.Fatalf("reconnect within the quota: %v", err)
	}
}

func TestIdempotencyKeyNamesOneCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess, srv := newReadySessionServer(t)
	start := func(by, key, text string) (*inspector.Call, error) {
		return s.svc.StartCall(ctx, s.a.Tenant.ID, sess.ID, inspector.StartCallParams{
			Name: "echo", Arguments: json.RawMessage(`{"text":"` + text + `","key":"idem-` + text + `"}`), CreatedBy: by, IdempotencyKey: key})
	}
	first, err := start("key:ci", "retry-me", "once")
	if err != nil {
		t.Fatal(err)
	}
	s.wait(sess.ID, first.ID)
	for range 3 {
		again, err := start("key:ci", "retry-me", "once")
		if err != nil || again.ID != first.ID {
			t.Fatalf("retry = %v, %v; want call %s", again, err, first.ID)
		}
	}
	if _, err := start("key:ci", "retry-me", "different"); !errors.Is(err, inspector.ErrConflict) {
		t.Fatalf("same key, different call = %v, want ErrConflict", err)
	}
	other, err := start("key:someone-else", "retry-me", "once")
	if err != nil || other.ID == first.ID {
		t.Fatalf("another principal's key = %v, %v", other, err)
	}
	s.wait(sess.ID, other.ID)
	// Long after, with the session closed, the retry still names the first call.
	if _, err := s.svc.CloseSession(ctx, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	late, err := start("key:ci", "retry-me", "once")
	if err != nil || late.ID != first.ID || late.Status != inspector.CallSucceeded {
		t.Fatalf("late retry = %+v, %v", late, err)
	}
	if n := srv.KeyCalls("idem-once"); n != 2 {
		t.Fatalf("the target ran the call %d times, want 2 (one per principal)", n)
	}
}

func TestTargetRefusedAtDialTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// DNS rebinding: the name is public when the api checks it and private when the worker
	// dials it. The worker's guard refuses before any connection is made.
	resolveTo := func(ip string) *netguard.Guard {
		g, err := netguard.New(&netguard.Config{Resolver: netguard.ResolverFunc(func(context.Context, string, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr(ip)}, nil
		})})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	s := newStack(t, stackOptions{apiGuard: resolveTo("93.184.216.34"), workerGuard: resolveTo("10.0.0.7")})
	s.addWorker()
	sess, err := s.svc.CreateSession(ctx, s.a.Tenant.ID, inspector.CreateSessionParams{Target: inspector.Target{URL: "http://rebind.example/mcp"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	failed := s.waitStatus(sess.ID, inspector.StatusError)
	if !strings.Contains(failed.Error, "refused") || !strings.Contains(failed.Error, "10.0.0.7") {
		t.Fatalf("status error = %q, want the guard's refusal", failed.Error)
	}
	s.waitEvent(sess.ID, func(e inspector.Event) bool {
		return e.Type == inspector.EventStatus && dataOf(e)["state"] == "error" && strings.Contains(dataOf(e)["error"].(string), "refused")
	})
}

func TestFollowFindsAnEventThatWasNeverPublished(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := newStack(t, stackOptions{})
	sess := s.create("http://127.0.0.1:9/mcp", inspector.Target{})
	got := make(chan inspector.Event, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.svc.Follow(ctx, s.a.Tenant.ID, sess.ID, inspector.FollowParams{
			Emit: func(e inspector.Event) error { got <- e; return nil },
		})
	}()
	time.Sleep(300 * time.Millisecond) // the follower is subscribed and quiet
	// Committed, as a worker whose publish failed would leave it: no message follows.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select set_config('app.tenant_id', $1, true)", s.a.Tenant.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `select * from tapline_append_events(array[$1::uuid], array[$2::uuid], array[0::bigint],
		array['status'], array['{"state":"connecting"}'::jsonb], array[now()])`, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.Seq != 1 || e.Type != inspector.EventStatus {
			t.Fatalf("followed %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the unpublished event never reached the follower")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentSubscribesAllRecorded: subscribes run concurrently on the owner, and each is
// recorded, so a reconnect or a takeover restores every one.
func TestConcurrentSubscribesAllRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, sess := newReadySession(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpSubscribe, map[string]any{"uri": fmt.Sprintf("mcptest://items/r%d", i)}, nil)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.svc.GetSession(ctx, s.a.Tenant.ID, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Subscriptions) != len(errs) {
		t.Fatalf("%d subscribed, %d recorded: %v", len(errs), len(got.Subscriptions), got.Subscriptions)
	}
	// Unsubscribing is as safe: the others stay.
	for i := range 4 {
		wg.Go(func() {
			_, errs[i] = s.svc.Request(ctx, s.a.Tenant.ID, sess.ID, inspector.OpUnsubscribe, map[string]any{"uri": fmt.Sprintf("mcptest://items/r%d", i)}, nil)
		})
	}
	wg.Wait()
	for _, err := range errs[:4] {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err = s.svc.GetSession(ctx, s.a.Tenant.ID, sess.ID); err != nil {
		t.Fatal(err)
	}
	if want := "[mcptest://items/r4 mcptest://items/r5 mcptest://items/r6 mcptest://items/r7]"; fmt.Sprint(slices.Sorted(slices.Values(got.Subscriptions))) != want {
		t.Fatalf("after unsubscribing r0-r3: %v, want %s", got.Subscriptions, want)
	}
}
