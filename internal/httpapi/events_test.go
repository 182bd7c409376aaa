package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/retention"
	"github.com/tapline/tapline/internal/tenant"
)

// appendEvents writes events as the session's owner would (through tapline_append_events,
// fenced by the epoch setSessionStatus gave the session) and returns their seqs. It does not
// publish them.
func appendEvents(t *testing.T, c *cluster, tenantID, sessionID string, types ...inspector.EventType) []int64 {
	t.Helper()
	return appendEventsAt(t, c, tenantID, sessionID, time.Now(), types...)
}

// appendEventsAt is appendEvents with the events' time set to at, for retention to find.
func appendEventsAt(t *testing.T, c *cluster, tenantID, sessionID string, at time.Time, types ...inspector.EventType) []int64 {
	t.Helper()
	datas := make([]string, len(types))
	for i := range datas {
		datas[i] = fmt.Sprintf(`{"n": %d, "method": "notifications/message"}`, i)
	}
	return appendEventData(t, c, tenantID, sessionID, at, types, datas)
}

// appendEventData is appendEvents with each event's data given, as JSON.
func appendEventData(t *testing.T, c *cluster, tenantID, sessionID string, at time.Time, types []inspector.EventType, datas []string) []int64 {
	t.Helper()
	n := len(types)
	tenants, sessions, epochs, kinds, ats := make([]string, n), make([]string, n), make([]int64, n), make([]string, n), make([]time.Time, n)
	for i, ty := range types {
		tenants[i], sessions[i], epochs[i], kinds[i], ats[i] = tenantID, sessionID, 1, string(ty), at
	}
	var first, last int64
	var refused bool
	err := c.pool.QueryRow(context.Background(), `select first_seq, last_seq, refused from tapline_append_events(
		$1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[], $6::timestamptz[])`,
		tenants, sessions, epochs, kinds, datas, ats).Scan(&first, &last, &refused)
	if err != nil || refused {
		t.Fatalf("append events: %v (refused %v)", err, refused)
	}
	seqs := make([]int64, 0, n)
	for s := first; s <= last; s++ {
		seqs = append(seqs, s)
	}
	return seqs
}

// publish sends a committed event on the session's live channel, as the owner does after
// the commit. The channel name is inspector's (live.go).
func publish(t *testing.T, c *cluster, tenantID, sessionID string, seq int64) {
	t.Helper()
	var e inspector.Event
	var data []byte
	c.queryRow(t, tenantID, `select seq, type, at, data from session_events where tenant_id = $1 and session_id = $2 and seq = $3`,
		[]any{tenantID, sessionID, seq}, &e.Seq, &e.Type, &e.At, &data)
	e.Data = data
	payload, _ := json.Marshal(e)
	channel := c.inspPrefix + ":ev:{" + tenantID + ":" + sessionID + "}"
	if err := c.rdb.Publish(context.Background(), channel, payload).Err(); err != nil {
		t.Fatal(err)
	}
}

// sseMsg is one Server-Sent Events message; comment holds a comment-only message's text.
type sseMsg struct {
	id, event, data, comment string
}

type sseStream struct {
	res  *http.Response
	msgs chan sseMsg
}

// openStream connects to a session's event stream and reads it in the background.
func openStream(t *testing.T, n *apiNode, path, token string, headers ...string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest("GET", n.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		res.Body.Close()
		t.Fatalf("stream status %d", res.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	s := &sseStream{res: res, msgs: make(chan sseMsg, 1000)}
	go func() {
		defer close(s.msgs)
		sc := bufio.NewScanner(res.Body)
		var m sseMsg
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				s.msgs <- m
				m = sseMsg{}
			case strings.HasPrefix(line, ":"):
				m.comment = strings.TrimSpace(strings.TrimPrefix(line, ":"))
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "id":
					m.id = v
				case "event":
					m.event = v
				case "data":
					m.data = v
				}
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() { s.res.Body.Close() }

// nextEvent returns the next event, skipping comments; it fails after timeout.
func (s *sseStream) nextEvent(t *testing.T, timeout time.Duration) sseMsg {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatal("stream ended")
			}
			if m.event != "" {
				return m
			}
		case <-deadline:
			t.Fatal("no event in time")
		}
	}
}

// expectSeqs reads events and checks their seqs, ids, types and data.
func (s *sseStream) expectSeqs(t *testing.T, seqs ...int64) {
	t.Helper()
	for _, want := range seqs {
		m := s.nextEvent(t, 5*time.Second)
		var e struct {
			Seq  int64           `json:"seq"`
			Type string          `json:"type"`
			At   time.Time       `json:"at"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(m.data), &e); err != nil {
			t.Fatalf("data %q: %v", m.data, err)
		}
		if e.Seq != want || m.id != fmt.Sprint(want) || m.event != e.Type || e.At.IsZero() || len(e.Data) == 0 {
			t.Fatalf("got id %s event %s data %s, want seq %d", m.id, m.event, m.data, want)
		}
	}
}

// expectQuiet checks that no event arrives for d.
func (s *sseStream) expectQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-s.msgs:
			if ok && m.event != "" {
				t.Fatalf("unexpected event: id %s %s", m.id, m.data)
			}
			if !ok {
				return
			}
		case <-deadline:
			return
		}
	}
}

// expectEnd waits for the server to end the stream.
func (s *sseStream) expectEnd(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-s.msgs:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("stream did not end")
		}
	}
}

func TestEventStream(t *testing.T) {
	t.Parallel()
	t.Run("ReplaysThenFollowsWithoutGapOrDuplicate", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		a := c.a.Tenant.ID
		id := n.createSession(t, c.a.Secret, "stream")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		appendEvents(t, c, a, id, inspector.EventStatus, inspector.EventFrame, inspector.EventFrame, inspector.EventNotification, inspector.EventFrame)

		// Last-Event-ID wins over after_seq.
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream?after_seq=4", c.a.Secret, "Last-Event-ID", "2")
		s.expectSeqs(t, 3, 4, 5)

		// Live: published after commit. The keep-alive is an hour here, so only pub/sub
		// (and the gap it reveals) can deliver these.
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventProgress)[0])
		s.expectSeqs(t, 6)
		// A message published twice is emitted once.
		publish(t, c, a, id, 6)
		// A lost message shows as a gap when the next one arrives and is read back.
		appendEvents(t, c, a, id, inspector.EventFrame)
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventCallResult)[0])
		s.expectSeqs(t, 7, 8)
		s.expectQuiet(t, 300*time.Millisecond)
	})
	t.Run("AfterSeqAndTypeFilter", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		a := c.a.Tenant.ID
		id := n.createSession(t, c.a.Secret, "filtered")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		appendEvents(t, c, a, id, inspector.EventFrame, inspector.EventNotification, inspector.EventFrame, inspector.EventNotification)
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream?after_seq=1&type=notification,status", c.a.Secret)
		s.expectSeqs(t, 2, 4)
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventFrame)[0])
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventStatus)[0])
		s.expectSeqs(t, 6)
	})
	t.Run("KeepAliveAndPresence", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		c.keepAlive = 150 * time.Millisecond
		n := c.node(t)
		id := n.createSession(t, c.a.Secret, "quiet")
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream", c.a.Secret)
		deadline := time.After(3 * time.Second)
		for got := false; !got; {
			select {
			case m := <-s.msgs:
				got = m.comment == "keep-alive"
			case <-deadline:
				t.Fatal("no keep-alive comment")
			}
		}
		streams, err := n.trk.StreamsOf(context.Background(), c.a.Tenant.ID, id)
		if err != nil || len(streams) != 1 || streams[0].Meta["principal"] != "key:"+c.a.Key.ID {
			t.Fatalf("watchers while streaming = %v, %v", streams, err)
		}
		s.close()
		for i := 0; ; i++ {
			streams, err = n.trk.StreamsOf(context.Background(), c.a.Tenant.ID, id)
			if err == nil && len(streams) == 0 {
				break
			}
			if i > 100 {
				t.Fatalf("watcher not removed after the client left: %v %v", streams, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("FilteredStreamKeepsAliveWhileTheSessionIsBusy", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		c.keepAlive = 300 * time.Millisecond
		n := c.node(t)
		a := c.a.Tenant.ID
		id := n.createSession(t, c.a.Secret, "busy")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		// Events come six times a keep-alive interval, none of them the type asked for: the
		// stream writes nothing else, and proxies cut streams that stay silent.
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream?type=call_result", c.a.Secret)
		tick := time.NewTicker(c.keepAlive / 6)
		defer tick.Stop()
		deadline := time.After(3 * time.Second)
		published := 0
		for {
			select {
			case <-tick.C:
				publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventFrame)[0])
				published++
			case m := <-s.msgs:
				if m.event != "" {
					t.Fatalf("filtered stream sent %s %s", m.event, m.data)
				}
				if m.comment == "keep-alive" && published >= 10 {
					return
				}
			case <-deadline:
				t.Fatalf("no keep-alive in 3 s while %d filtered events were published", published)
			}
		}
	})
	t.Run("TwoAPINodesServeTheSameStream", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n1, n2 := c.node(t), c.node(t)
		a := c.a.Tenant.ID
		id := n1.createSession(t, c.a.Secret, "shared")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		appendEvents(t, c, a, id, inspector.EventStatus, inspector.EventFrame)
		s1 := openStream(t, n1, "/v1/sessions/"+id+"/events/stream", c.a.Secret)
		s2 := openStream(t, n2, "/v1/sessions/"+id+"/events/stream", c.a.Secret, "Last-Event-ID", "1")
		s1.expectSeqs(t, 1, 2)
		s2.expectSeqs(t, 2)
		for _, seq := range appendEvents(t, c, a, id, inspector.EventFrame, inspector.EventFrame, inspector.EventFrame) {
			publish(t, c, a, id, seq)
		}
		s1.expectSeqs(t, 3, 4, 5)
		s2.expectSeqs(t, 3, 4, 5)
		// A client that drops its stream on one node resumes on the other without a gap.
		s1.close()
		appendEvents(t, c, a, id, inspector.EventFrame)
		s3 := openStream(t, n2, "/v1/sessions/"+id+"/events/stream", c.a.Secret, "Last-Event-ID", "5")
		s3.expectSeqs(t, 6)
	})
	t.Run("OutlivesTheServerWriteTimeout", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		c.keepAlive = 200 * time.Millisecond
		c.writeTimeout = 500 * time.Millisecond
		n := c.node(t)
		a := c.a.Tenant.ID
		id := n.createSession(t, c.a.Secret, "long")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream", c.a.Secret)
		time.Sleep(4 * c.writeTimeout)
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventFrame)[0])
		s.expectSeqs(t, 1)
	})
	t.Run("EndsWhenTheServerDrains", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		id := n.createSession(t, c.a.Secret, "draining")
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream", c.a.Secret)
		close(n.draining)
		s.expectEnd(t, 3*time.Second)
	})
	t.Run("ShutdownDoesNotWaitForStreams", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		id := n.createSession(t, c.a.Secret, "shutdown")
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream", c.a.Secret)
		// What cmd/api does: Shutdown closes draining through RegisterOnShutdown.
		srv := n.srv.Config
		srv.RegisterOnShutdown(func() { close(n.draining) })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v after %v", err, time.Since(start))
		}
		s.expectEnd(t, time.Second)
	})
}

// TestEventStreamEndsWhenItsCredentialLapses: a stream is no way around revoking a key or
// letting a JWT expire. It ends within a keep-alive interval or two of the credential's end,
// without another event, and the client's reconnect is refused.
func TestEventStreamEndsWhenItsCredentialLapses(t *testing.T) {
	t.Parallel()
	t.Run("RevokedAPIKey", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		c.keepAlive = 150 * time.Millisecond
		n := c.node(t)
		a := c.a.Tenant.ID
		id := n.createSession(t, c.a.Secret, "revoked")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		k := n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": "viewer"})
		requireStatus(t, k, 201)
		viewer := k.body["secret"].(string)
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream", viewer)
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventFrame)[0])
		s.expectSeqs(t, 1)

		requireStatus(t, n.call(t, "DELETE", "/v1/api-keys/"+k.body["id"].(string), c.a.Secret, nil), 200)
		s.expectEnd(t, 3*time.Second)
		requireProblem(t, n.call(t, "GET", "/v1/sessions/"+id+"/events", viewer, nil), 401, "")
		// Tenant b's stream on the same node is not affected.
		idB := n.createSession(t, c.b.Secret, "b's")
		sb := openStream(t, n, "/v1/sessions/"+idB+"/events/stream", c.b.Secret)
		sb.expectQuiet(t, 4*c.keepAlive)
		if _, ok := <-sb.msgs; !ok {
			t.Fatal("tenant b's stream ended")
		}
	})
	t.Run("ExpiredJWT", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		c.keepAlive = 150 * time.Millisecond
		keys, err := auth.ParseJWTKeys("test-1:" + testJWTSeed)
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := auth.NewTokenService(c.tenants, &auth.TokenConfig{
			Keys: keys, Issuer: "tapline", Audience: "tapline-api", TTL: 2 * time.Second, Leeway: time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		n := c.node(t, func(cfg *httpapi.Config) {
			cfg.Tokens = tokens
			cfg.Auth = auth.NewAuthenticator(c.tenants, tokens)
		})
		a := c.a.Tenant.ID
		id := n.createSession(t, c.a.Secret, "jwt")
		c.setSessionStatus(t, a, id, inspector.StatusReady)
		tok := n.call(t, "POST", "/v1/auth/token", "", map[string]any{"api_key": c.a.Secret})
		requireStatus(t, tok, 200)
		jwt := tok.body["token"].(string)
		expires, err := time.Parse(time.RFC3339, tok.body["expires_at"].(string))
		if err != nil {
			t.Fatal(err)
		}
		s := openStream(t, n, "/v1/sessions/"+id+"/events/stream", jwt)
		publish(t, c, a, id, appendEvents(t, c, a, id, inspector.EventFrame)[0])
		s.expectSeqs(t, 1)
		s.expectEnd(t, time.Until(expires)+3*time.Second)
		if left := time.Until(expires); left > 0 {
			t.Fatalf("stream ended %v before its token expired", left)
		}
		requireProblem(t, n.call(t, "GET", "/v1/sessions/"+id+"/events", jwt, nil), 401, "")
	})
}

func TestEventsPage(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	a := c.a.Tenant.ID
	id := n.createSession(t, c.a.Secret, "paged")
	if r := n.call(t, "GET", "/v1/sessions/"+id+"/events", c.a.Secret, nil); r.status != 200 || r.raw != "{\"items\":[]}\n" {
		t.Fatalf("empty page = %d %q", r.status, r.raw)
	}
	c.setSessionStatus(t, a, id, inspector.StatusReady)
	appendEvents(t, c, a, id, inspector.EventStatus, inspector.EventFrame, inspector.EventNotification, inspector.EventFrame, inspector.EventNotification)

	seqsOf := func(r response) []int64 {
		var out []int64
		for _, it := range r.body["items"].([]any) {
			out = append(out, int64(it.(map[string]any)["seq"].(float64)))
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  string
		next  any
	}{
		{"?limit=2", "[1 2]", float64(2)},
		{"?limit=2&after_seq=2", "[3 4]", float64(4)},
		{"?limit=2&after_seq=4", "[5]", nil},
		{"", "[1 2 3 4 5]", nil},
		{"?type=notification", "[3 5]", nil},
		{"?type=frame&type=status&after_seq=1", "[2 4]", nil},
		{"?after_seq=99", "[]", nil},
	} {
		r := n.call(t, "GET", "/v1/sessions/"+id+"/events"+tc.query, c.a.Secret, nil)
		requireStatus(t, r, 200)
		if got := fmt.Sprint(seqsOf(r)); got != tc.want || r.body["next_after_seq"] != tc.next {
			t.Errorf("events%s = %s next %v, want %s next %v", tc.query, got, r.body["next_after_seq"], tc.want, tc.next)
		}
	}
	r := n.call(t, "GET", "/v1/sessions/"+id+"/events?limit=1", c.a.Secret, nil)
	e := r.body["items"].([]any)[0].(map[string]any)
	if e["type"] != "status" || e["at"] == nil || e["data"].(map[string]any)["n"] != float64(0) {
		t.Fatalf("event = %v", e)
	}
}

func TestExport(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	a := c.a.Tenant.ID
	id := n.createSession(t, c.a.Secret, "export")
	empty := n.call(t, "GET", "/v1/sessions/"+id+"/export", c.a.Secret, nil)
	if empty.status != 200 || len(empty.body["events"].([]any)) != 0 || empty.body["session"].(map[string]any)["id"] != id {
		t.Fatalf("empty export = %d %s", empty.status, empty.raw)
	}
	c.setSessionStatus(t, a, id, inspector.StatusReady)
	// More than one store page (1000), so the export pages through the history.
	types := make([]inspector.EventType, 1203)
	for i := range types {
		types[i] = inspector.EventFrame
	}
	appendEvents(t, c, a, id, types...)

	r := n.call(t, "GET", "/v1/sessions/"+id+"/export", c.a.Secret, nil)
	requireStatus(t, r, 200)
	if ct := r.header.Get("Content-Type"); ct != "application/json" || !strings.Contains(r.header.Get("Content-Disposition"), "session-"+id+".json") {
		t.Fatalf("headers = %v", r.header)
	}
	var doc struct {
		Session map[string]any    `json:"session"`
		Events  []inspector.Event `json:"events"`
	}
	if err := json.Unmarshal([]byte(r.raw), &doc); err != nil {
		t.Fatalf("export is not JSON: %v", err)
	}
	if doc.Session["id"] != id || len(doc.Events) != len(types) {
		t.Fatalf("export has session %v and %d events", doc.Session["id"], len(doc.Events))
	}
	for i, e := range doc.Events {
		if e.Seq != int64(i+1) || e.Type != inspector.EventFrame {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	if strings.Contains(r.raw, secretToken) || strings.Contains(r.raw, secretHeader) {
		t.Fatal("export shows a secret")
	}

	l := n.call(t, "GET", "/v1/sessions/"+id+"/export?format=jsonl", c.a.Secret, nil)
	requireStatus(t, l, 200)
	if ct := l.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("jsonl content type = %q", ct)
	}
	lines := strings.Split(strings.TrimSuffix(l.raw, "\n"), "\n")
	if len(lines) != len(types) {
		t.Fatalf("jsonl has %d lines, want %d", len(lines), len(types))
	}
	var last inspector.Event
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Seq != int64(len(types)) {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
}

// TestExportDropsAClientThatStopsReading: an export is streamed, so a client that stops
// reading would hold its page of events and its goroutine for as long as it keeps the
// connection open (cmd/api has no server write timeout). Each write gets a deadline instead;
// the client finds its export cut short, never complete-looking.
func TestExportDropsAClientThatStopsReading(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t)
	a := c.a.Tenant.ID
	id := n.createSession(t, c.a.Secret, "slow export")
	c.setSessionStatus(t, a, id, inspector.StatusReady)
	// 48 MiB of history: far more than the loopback socket buffers of both ends hold.
	big := strings.Repeat("x", 16<<10)
	for range 3 {
		const batch = 1000
		tenants, sessions, epochs, kinds, datas, ats := make([]string, batch), make([]string, batch), make([]int64, batch), make([]string, batch), make([]string, batch), make([]time.Time, batch)
		for i := range batch {
			tenants[i], sessions[i], epochs[i], kinds[i], ats[i] = a, id, 1, string(inspector.EventFrame), time.Now()
			datas[i] = `{"dir":"recv","message":"` + big + `"}`
		}
		if _, err := c.pool.Exec(context.Background(), `select tapline_append_events(
			$1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[], $6::timestamptz[])`,
			tenants, sessions, epochs, kinds, datas, ats); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest("GET", n.srv.URL+"/v1/sessions/"+id+"/export?format=jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+c.a.Secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	requireStatus(t, response{status: res.StatusCode}, 200)
	// Read nothing for longer than the write deadline (2 s in tests, see TestMain).
	time.Sleep(5 * time.Second)
	body, err := io.ReadAll(res.Body)
	lines := strings.Count(string(body), "\n")
	if err == nil || lines >= 3000 {
		t.Fatalf("a client that stopped reading for 5 s still got %d of 3000 lines (read error %v)", lines, err)
	}
}

// readUntil reads a stream's messages until the event with seq last and returns them in
// order as "comment: …" and event seqs, leaving out the connected and keep-alive comments.
func (s *sseStream) readUntil(t *testing.T, last int64) []string {
	t.Helper()
	var got []string
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatalf("stream ended after %v", got)
			}
			switch {
			case m.event != "":
				got = append(got, m.id)
				if m.id == fmt.Sprint(last) {
					return got
				}
			case m.comment != "" && m.comment != "connected" && m.comment != "keep-alive":
				got = append(got, "comment: "+m.comment)
			}
		case <-deadline:
			t.Fatalf("no event %d in time; got %v", last, got)
		}
	}
}

// TestEventStreamAfterRetention resumes streams and pages from seqs older than what the
// retention purge kept: the deleted seqs are named (a comment on the stream, the
// Events-Deleted header on a page) and every kept event comes once, in order; a resume
// without a gap names nothing.
func TestEventStreamAfterRetention(t *testing.T) {
	t.Parallel()
	// A database of its own: the purge visits every tenant in it.
	c := liveCluster(t)
	c.guardConfig = netguard.Config{Resolver: publicResolver{}}
	n := c.node(t)
	a := c.a.Tenant.ID
	ctx := context.Background()
	old := time.Now().Add(-72 * time.Hour)

	// Seqs 1-5 and 7 are past a one-day retention; 6 and 8-10 are not.
	id := n.createSession(t, c.a.Secret, "purged")
	c.setSessionStatus(t, a, id, inspector.StatusReady)
	appendEventsAt(t, c, a, id, old, inspector.EventStatus, inspector.EventFrame, inspector.EventNotification, inspector.EventFrame, inspector.EventFrame)
	appendEvents(t, c, a, id, inspector.EventNotification)
	appendEventsAt(t, c, a, id, old, inspector.EventFrame)
	appendEvents(t, c, a, id, inspector.EventFrame, inspector.EventNotification, inspector.EventFrame)
	// Every event of this one is past it.
	gone := n.createSession(t, c.a.Secret, "all purged")
	c.setSessionStatus(t, a, gone, inspector.StatusReady)
	appendEventsAt(t, c, a, gone, old, inspector.EventStatus, inspector.EventFrame, inspector.EventFrame)

	one := 1
	if err := c.tenants.SetQuotas(ctx, a, tenant.QuotaOverrides{EventRetentionDays: &one}); err != nil {
		t.Fatal(err)
	}
	res, err := retention.New(c.pool, nil).RunOnce(ctx)
	if err != nil || !res.Ran || res.Deleted != 9 {
		t.Fatalf("purge = %+v, %v; want 9 deleted", res, err)
	}

	stream := "/v1/sessions/" + id + "/events/stream"
	for _, tc := range []struct {
		name, query, lastEventID string
		last                     int64
		want                     string
	}{
		{"ResumeBeforeThePurgedRange", "", "2", 10, "[comment: events 3-5 were deleted by retention 6 comment: event 7 was deleted by retention 8 9 10]"},
		{"FromTheStart", "", "", 10, "[comment: events 1-5 were deleted by retention 6 comment: event 7 was deleted by retention 8 9 10]"},
		{"AfterSeqWithAFilter", "?after_seq=1&type=notification", "", 9, "[comment: events 2-5 were deleted by retention 6 comment: event 7 was deleted by retention 9]"},
		{"ResumeRightBeforeAKeptEvent", "", "5", 10, "[6 comment: event 7 was deleted by retention 8 9 10]"},
		{"ResumeWithoutGap", "", "8", 10, "[9 10]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var headers []string
			if tc.lastEventID != "" {
				headers = []string{"Last-Event-ID", tc.lastEventID}
			}
			s := openStream(t, n, stream+tc.query, c.a.Secret, headers...)
			if got := fmt.Sprint(s.readUntil(t, tc.last)); got != tc.want {
				t.Fatalf("stream = %s, want %s", got, tc.want)
			}
			// Then the notifications earlier subtests added and a live one, once each, with
			// nothing more said about the past.
			live := appendEvents(t, c, a, id, inspector.EventNotification)[0]
			publish(t, c, a, id, live)
			var want []string
			for seq := int64(11); seq <= live; seq++ {
				want = append(want, strconv.FormatInt(seq, 10))
			}
			if got := fmt.Sprint(s.readUntil(t, live)); got != fmt.Sprint(want) {
				t.Fatalf("then = %s, want %s", got, want)
			}
			s.expectQuiet(t, 200*time.Millisecond)
		})
	}

	t.Run("EverythingAfterTheResumePurged", func(t *testing.T) {
		s := openStream(t, n, "/v1/sessions/"+gone+"/events/stream", c.a.Secret, "Last-Event-ID", "1")
		var got []string
		for len(got) == 0 {
			select {
			case m := <-s.msgs:
				if m.event != "" || (m.comment != "connected" && m.comment != "") {
					got = append(got, m.comment+m.id)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing said about the purged events")
			}
		}
		if got[0] != "events 2-3 were deleted by retention" {
			t.Fatalf("stream = %v", got)
		}
		// The next event is the one after the purged ones: pub/sub alone delivers it (the
		// keep-alive is an hour), at once.
		publish(t, c, a, gone, appendEvents(t, c, a, gone, inspector.EventFrame)[0])
		if got := fmt.Sprint(s.readUntil(t, 4)); got != "[4]" {
			t.Fatalf("live = %s, want [4]", got)
		}
	})

	t.Run("Pages", func(t *testing.T) {
		for _, tc := range []struct {
			path, deleted string
			first         float64
		}{
			{"/v1/sessions/" + id + "/events?after_seq=2", "3-5", 6},
			{"/v1/sessions/" + id + "/events", "1-5", 6},
			{"/v1/sessions/" + id + "/events?after_seq=1&type=frame", "2-5", 8},
			{"/v1/sessions/" + id + "/events?after_seq=5", "", 6},
			{"/v1/sessions/" + id + "/events?after_seq=6", "7-7", 8},
			{"/v1/sessions/" + id + "/events?after_seq=8", "", 9},
			{"/v1/sessions/" + gone + "/events?after_seq=1&limit=1", "2-3", 4},
		} {
			r := n.call(t, "GET", tc.path, c.a.Secret, nil)
			requireStatus(t, r, 200)
			items := r.body["items"].([]any)
			if got := r.header.Get("Events-Deleted"); got != tc.deleted || len(items) == 0 || items[0].(map[string]any)["seq"] != tc.first {
				t.Errorf("%s: Events-Deleted %q, items %v; want %q and seq %v first", tc.path, got, items, tc.deleted, tc.first)
			}
		}
		r := n.call(t, "GET", "/v1/sessions/"+id+"/events?after_seq=99", c.a.Secret, nil)
		if r.status != 200 || r.header.Get("Events-Deleted") != "" {
			t.Fatalf("page after the last seq = %d, Events-Deleted %q", r.status, r.header.Get("Events-Deleted"))
		}
	})
}

// watchersEvent is a watchers event's data.
type watchersEvent struct {
	Count      int                 `json:"count"`
	Principals []map[string]string `json:"principals"`
}

// watchersEvents is the data of a session's watchers events, oldest first.
func watchersEvents(t *testing.T, n *apiNode, token, id string) []watchersEvent {
	t.Helper()
	r := n.call(t, "GET", "/v1/sessions/"+id+"/events?type=watchers&limit=1000", token, nil)
	requireStatus(t, r, 200)
	var page struct {
		Items []struct {
			Data watchersEvent `json:"data"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.raw), &page); err != nil {
		t.Fatal(err)
	}
	out := make([]watchersEvent, len(page.Items))
	for i, it := range page.Items {
		out[i] = it.Data
	}
	return out
}

// TestWatchersEventsCoalesceStreamReconnects follows a session from two api nodes: a
// client that drops and reopens its stream again and again adds at most one watchers event
// to the history, while a second principal joining and leaving are both recorded.
func TestWatchersEventsCoalesceStreamReconnects(t *testing.T) {
	t.Parallel()
	c := liveCluster(t)
	target := mcptest.NewStatefulServer(t, nil)
	n1, n2 := c.node(t), c.node(t)
	c.worker(t)
	created := n1.call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{"name": "watched", "target": map[string]any{"url": target.URL()}})
	requireStatus(t, created, 201)
	id := created.body["id"].(string)
	eventually(t, 20*time.Second, "session ready", func() bool {
		return n1.call(t, "GET", "/v1/sessions/"+id, c.a.Secret, nil).body["status"] == "ready"
	})
	k := n1.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"name": "second", "role": "viewer"})
	requireStatus(t, k, 201)
	second := k.body["secret"].(string)
	first, secondID := "key:"+c.a.Key.ID, "key:"+k.body["id"].(string)
	path := "/v1/sessions/" + id + "/events/stream"
	// A stream is tracked as a watcher before it replays: its first event says it is.
	watch := func(n *apiNode, token string) *sseStream {
		s := openStream(t, n, path, token)
		s.nextEvent(t, 10*time.Second)
		return s
	}

	s := watch(n1, c.a.Secret)
	eventually(t, 30*time.Second, "the first watcher recorded", func() bool {
		ws := watchersEvents(t, n1, c.a.Secret, id)
		return len(ws) == 1 && ws[0].Count == 1 && len(ws[0].Principals) == 1 && ws[0].Principals[0]["id"] == first
	})

	// The client reconnects eight times, to either api node.
	for i := range 8 {
		s.close()
		s = watch([]*apiNode{n2, n1}[i%2], c.a.Secret)
	}
	joined := watch(n2, second)
	var ws []watchersEvent
	eventually(t, 30*time.Second, "the second watcher recorded", func() bool {
		ws = watchersEvents(t, n1, c.a.Secret, id)
		last := ws[len(ws)-1]
		return last.Count == 2 && len(last.Principals) == 2 && last.Principals[0]["id"] != last.Principals[1]["id"]
	})
	// The first event, at most one for the reconnects, and the join.
	if len(ws) > 3 {
		t.Fatalf("%d watchers events for one join, eight reconnects and another join: %+v", len(ws), ws)
	}
	for _, p := range ws[len(ws)-1].Principals {
		if p["id"] != first && p["id"] != secondID {
			t.Fatalf("principals = %v, want %s and %s", ws[len(ws)-1].Principals, first, secondID)
		}
	}

	joined.close()
	recorded := len(ws)
	eventually(t, 30*time.Second, "the second watcher's leaving recorded", func() bool {
		ws = watchersEvents(t, n1, c.a.Secret, id)
		last := ws[len(ws)-1]
		return len(ws) > recorded && last.Count == 1 && len(last.Principals) == 1 && last.Principals[0]["id"] == first
	})
	if len(ws) != recorded+1 {
		t.Fatalf("leaving recorded %d watchers events: %+v", len(ws)-recorded, ws[recorded:])
	}
}
