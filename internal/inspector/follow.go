package inspector

import (
	"context"
	"time"

	"github.com/tapline/tapline/internal/tracker"
)

// FollowParams configures Follow.
type FollowParams struct {
	// AfterSeq is the last seq the client has; Follow starts after it.
	AfterSeq int64
	// Types filters events; empty means all.
	Types []EventType
	// Watcher, when set, is tracked as a watcher of the session (presence) while Follow runs.
	Watcher *Watcher
	// Emit receives every event in seq order, exactly once. An error stops Follow.
	Emit func(Event) error
	// Deleted, when set, receives each range of seqs after AfterSeq whose events retention
	// deleted before Follow could read them, in seq order with the events, before the first
	// event after the range (a client resuming from a seq older than what was kept learns
	// that it missed them, instead of taking the history for whole). An error stops Follow.
	Deleted func(SeqRange) error
	// Idle is called when no event was emitted for the keep-alive interval (the SSE handler
	// writes a comment). An error stops Follow.
	Idle func() error
	// Check, when set, is called every keep-alive interval, busy or idle; an error stops
	// Follow and is returned (the SSE handler checks there that its credential still holds).
	Check func() error
	// Stop, when closed, ends Follow as ctx would (the api draining for a shutdown); a
	// channel rather than a context so that a stream costs no goroutine to watch it.
	Stop <-chan struct{}
}

// Watcher identifies someone watching a session, for presence.
type Watcher struct {
	StreamID  string
	Principal string
	Name      string
}

// Follow replays a session's events after p.AfterSeq from PostgreSQL and then follows the
// live stream, with no gap and no duplicate: live events are only published after they are
// committed, so whatever pub/sub drops is read back from the database. It returns when ctx
// ends or a callback fails.
func (s *Service) Follow(ctx context.Context, tenantID, sessionID string, p FollowParams) error {
	if _, err := s.store.GetSession(ctx, tenantID, sessionID); err != nil {
		return err
	}
	// Subscribe before reading the backlog so nothing published meanwhile is missed.
	sub, err := s.hub.subscribe(ctx, tenantID, sessionID)
	if err != nil {
		return err
	}
	defer sub.close()
	instruments.sseSubscribers.Add(ctx, 1)
	defer instruments.sseSubscribers.Add(context.WithoutCancel(ctx), -1)
	if p.Watcher != nil {
		ref := tracker.StreamRef(tenantID, sessionID, p.Watcher.StreamID)
		if err := s.cfg.Tracker.Track(ctx, ref, tracker.Meta{"principal": p.Watcher.Principal, "name": p.Watcher.Name}); err == nil {
			_ = s.doorbell(ctx, tenantID, sessionID, OpWatchers, nil)
			defer func() {
				cctx := context.WithoutCancel(ctx)
				_ = s.cfg.Tracker.Untrack(cctx, ref)
				_ = s.doorbell(cctx, tenantID, sessionID, OpWatchers, nil)
			}()
		}
	}
	types := map[EventType]bool{}
	for _, t := range p.Types {
		types[t] = true
	}
	last := p.AfterSeq
	// wrote is whether anything reached the client since the last keep-alive tick: events
	// the filter drops do not count, or a busy session would starve a filtered stream of
	// keep-alives.
	wrote := false
	emit := func(e Event) error {
		last = e.Seq
		if len(types) > 0 && !types[e.Type] {
			return nil
		}
		wrote = true
		return p.Emit(e)
	}
	// gone passes over the seqs after last up to to, committed but no longer kept: it tells
	// the client, and the live path then takes the event after them as the next one.
	gone := func(to int64) error {
		if to <= last {
			return nil
		}
		r := SeqRange{From: last + 1, To: to}
		last = to
		if p.Deleted == nil {
			return nil
		}
		wrote = true
		return p.Deleted(r)
	}
	// catchUp emits everything committed after last, up to upTo (0: all there is). Seqs
	// have no gaps, so one missing from what PostgreSQL returns, or a committed one up to
	// upTo that it does not return at all, was deleted.
	catchUp := func(upTo int64) error {
		for {
			page, err := s.store.EventPage(ctx, tenantID, sessionID, EventsParams{AfterSeq: last, Limit: 500})
			if err != nil {
				return err
			}
			if err := gone(page.Deleted.To); err != nil {
				return err
			}
			for _, e := range page.Events {
				if upTo > 0 && e.Seq > upTo {
					return gone(upTo)
				}
				if err := gone(e.Seq - 1); err != nil {
					return err
				}
				if err := emit(e); err != nil {
					return err
				}
			}
			if len(page.Events) < 500 {
				return gone(upTo)
			}
		}
	}
	if err := catchUp(0); err != nil {
		return err
	}
	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	// heard is whether a live message arrived since the last tick, filtered or not; a
	// channel that is heard from reveals its own gaps.
	heard := false
	quietTicks := 0
	wrote = false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.Stop:
			return nil
		case e := <-sub.C:
			if e.Seq <= last {
				continue
			}
			if e.Seq > last+1 {
				if err := catchUp(e.Seq - 1); err != nil {
					return err
				}
			}
			if e.Seq == last+1 {
				if err := emit(*e); err != nil {
					return err
				}
			}
			heard = true
		case <-sub.Resync:
			if err := catchUp(0); err != nil {
				return err
			}
		case <-keepAlive.C:
			if p.Check != nil {
				if err := p.Check(); err != nil {
					return err
				}
			}
			if !heard {
				// A lost last message has no successor to reveal the gap. Reconnects and
				// overflow already signal Resync; what is left is a publish the worker could
				// not make, so a look every few quiet intervals is enough (it is a query per
				// follower).
				quietTicks++
				if quietTicks%idleChecks == 0 {
					if err := catchUp(0); err != nil {
						return err
					}
				}
			}
			if !wrote && p.Idle != nil {
				if err := p.Idle(); err != nil {
					return err
				}
			}
			heard, wrote = false, false
		}
	}
}

// idleChecks is how many quiet keep-alive intervals pass between two looks for events
// that were committed but never published.
const idleChecks = 4

// ClientConfig is the session's target in the mcp.json shape clients read. Secret values
// are replaced by ${ENV} placeholders; Tapline never returns them.
func ClientConfig(sess *Session) map[string]any {
	server := map[string]any{"url": sess.Target.URL}
	if sess.Target.Transport == TransportSSE {
		server["type"] = "sse"
	} else {
		server["type"] = "http"
	}
	headers := map[string]string{}
	for _, h := range sess.Target.HeaderNames {
		headers[h] = "${" + envName(h) + "}"
	}
	if sess.Target.HasBearerToken {
		headers["Authorization"] = "Bearer ${MCP_BEARER_TOKEN}"
	}
	if len(headers) > 0 {
		server["headers"] = headers
	}
	name := sess.Name
	if name == "" {
		name = "server"
	}
	return map[string]any{"mcpServers": map[string]any{name: server}}
}

func envName(header string) string {
	out := make([]rune, 0, len(header))
	for _, r := range header {
		switch {
		case r >= 'a' && r <= 'z':
			out = append(out, r-'a'+'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			out = append(out, r)
		default:
			out = append(out, '_')
		}
	}
	return string(out)
}
