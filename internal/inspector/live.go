package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Live events travel over Redis pub/sub, one channel per session, published by the owner
// after the events are committed. Pub/sub may drop messages (a reconnect, a slow reader);
// subscribers detect that from the seqs and read what they missed from PostgreSQL.

func eventChannel(prefix, tenantID, sessionID string) string {
	return prefix + ":ev:{" + tenantID + ":" + sessionID + "}"
}

// anchorChannel is subscribed for the whole life of a hub and never published on, so that
// its connection never counts fewer than one subscription: a confirmation that counts
// exactly one is the first on a new connection.
func anchorChannel(prefix string) string { return prefix + ":ev-anchor" }

// liveHub multiplexes every live subscription of one api process onto one Redis pub/sub
// connection. A session's channel is subscribed in Redis while it has local subscribers.
//
// One goroutine writes every SUBSCRIBE and UNSUBSCRIBE, deciding each from the hub's state
// when it writes it, so Redis sees them in the order that state changed: a stream leaving
// a session as another arrives cannot leave the channel unsubscribed. A subscriber is only
// handed its channel once Redis has confirmed the subscription, so whatever is published
// after subscribe returns reaches it.
type liveHub struct {
	rdb    redis.UniversalClient
	prefix string
	logger *slog.Logger
	// confirmWait bounds how long subscribe waits for Redis's confirmation.
	confirmWait time.Duration

	mu       sync.Mutex
	channels map[string]*liveChannel
	// queued lists the channels whose Redis subscription may have to change, for the
	// writer; wake tells it there are some.
	queued []string
	wake   chan struct{}

	pubsub *redis.PubSub
	ctx    context.Context
	// connected is closed once the first connection's first confirmation is in.
	connected   chan struct{}
	isConnected bool
	done        chan struct{}
	stopped     sync.WaitGroup
}

// liveChannel is the hub's state of one channel, guarded by liveHub.mu.
type liveChannel struct {
	subs map[*liveSub]struct{}
	// subscribed is what was last written for the channel: SUBSCRIBE or UNSUBSCRIBE.
	subscribed bool
	// unconfirmed counts the SUBSCRIBEs written whose confirmation has not come back.
	// Redis confirms each in order, so when it is back to zero and the last command was a
	// SUBSCRIBE, the channel is subscribed and stays so until the next UNSUBSCRIBE.
	unconfirmed int
	// ready is closed once the subscription the current subscribers need is confirmed.
	ready chan struct{}
	// resend asks for a SUBSCRIBE although one was written: its confirmation is overdue.
	resend bool
	queued bool
}

// liveSub is one subscriber's view of a channel.
type liveSub struct {
	hub     *liveHub
	channel string
	// C carries live events; when the subscriber falls behind, events are dropped and
	// Resync is signalled instead. Every subscriber of a channel receives the same *Event,
	// decoded once; nobody may modify it. Pointers keep the buffer at 2 KiB a subscriber
	// where Event values took 18 KiB.
	C chan *Event
	// Resync is signalled when events may have been missed.
	Resync chan struct{}
}

func newLiveHub(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *liveHub {
	return &liveHub{rdb: rdb, prefix: prefix, logger: logger, confirmWait: 10 * time.Second,
		channels: map[string]*liveChannel{}, wake: make(chan struct{}, 1)}
}

func (h *liveHub) start(ctx context.Context) {
	h.ctx = context.WithoutCancel(ctx)
	h.pubsub = h.rdb.Subscribe(h.ctx, anchorChannel(h.prefix))
	h.done = make(chan struct{})
	h.connected = make(chan struct{})
	ch := h.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	h.stopped.Add(2)
	go h.writeSubscriptions()
	go func() {
		defer h.stopped.Done()
		for {
			select {
			case <-h.done:
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				switch msg := m.(type) {
				case *redis.Subscription:
					if msg.Kind == "subscribe" {
						h.confirm(msg.Channel, msg.Count)
					}
				case *redis.Message:
					e := new(Event)
					if err := json.Unmarshal([]byte(msg.Payload), e); err != nil {
						continue
					}
					h.deliver(msg.Channel, e)
				}
			}
		}
	}()
}

func (h *liveHub) stop() {
	if h.pubsub == nil {
		return
	}
	close(h.done)
	_ = h.pubsub.Close()
	h.stopped.Wait()
}

// writeSubscriptions brings Redis's subscriptions in line with the hub's channels, in the
// order they changed. Commands for many channels go out as one SUBSCRIBE and one
// UNSUBSCRIBE; a channel is in at most one of them per round, so their order does not
// matter. Only the writes happen here, never a wait for Redis's reply.
func (h *liveHub) writeSubscriptions() {
	defer h.stopped.Done()
	// Nothing is written before the anchor's confirmation is in: otherwise that first
	// confirmation would be taken for a reconnect's, and the commands before it for lost.
	select {
	case <-h.connected:
	case <-h.done:
		return
	}
	var queued, subscribe, unsubscribe []string
	for {
		select {
		case <-h.done:
			return
		case <-h.wake:
		}
		subscribe, unsubscribe = subscribe[:0], unsubscribe[:0]
		h.mu.Lock()
		queued, h.queued = h.queued, queued[:0]
		for _, name := range queued {
			c := h.channels[name]
			c.queued = false
			switch want := len(c.subs) > 0; {
			case want && (!c.subscribed || c.resend):
				c.subscribed, c.resend = true, false
				c.unconfirmed++
				subscribe = append(subscribe, name)
			case !want && c.subscribed:
				c.subscribed, c.resend = false, false
				c.ready = make(chan struct{})
				unsubscribe = append(unsubscribe, name)
			}
			h.forgetIfUnused(name, c)
		}
		h.mu.Unlock()
		clear(queued)
		if len(unsubscribe) > 0 {
			// go-redis forgets the channels first, so a reconnect does not subscribe them
			// again, whatever the outcome.
			if err := h.pubsub.Unsubscribe(h.ctx, unsubscribe...); err != nil {
				h.logger.Warn("unsubscribe live events", slog.Int("channels", len(unsubscribe)), slog.Any("error", err))
			}
		}
		if len(subscribe) > 0 {
			// go-redis remembers the channels only after the write, so when the write fails
			// and it reconnects at once, the new connection lacks them: write them once more.
			// From then on every reconnect subscribes them again, which the confirmations
			// show; a confirmation too many only costs a resync.
			if err := h.pubsub.Subscribe(h.ctx, subscribe...); err != nil {
				h.logger.Warn("subscribe live events", slog.Int("channels", len(subscribe)), slog.Any("error", err))
				_ = h.pubsub.Subscribe(h.ctx, subscribe...)
			}
		}
	}
}

// queue hands a channel to the writer. The caller holds h.mu.
func (h *liveHub) queue(name string, c *liveChannel) {
	if c.queued {
		return
	}
	c.queued = true
	h.queued = append(h.queued, name)
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// forgetIfUnused drops a channel nobody listens on, Redis is not subscribed to and no
// confirmation is due for. The caller holds h.mu.
func (h *liveHub) forgetIfUnused(name string, c *liveChannel) {
	if len(c.subs) == 0 && !c.subscribed && c.unconfirmed == 0 && !c.queued {
		delete(h.channels, name)
	}
}

// confirm takes Redis's confirmation of a subscription to a channel. count is how many
// channels the connection is subscribed to with it.
func (h *liveHub) confirm(name string, count int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if count == 1 && !h.isConnected {
		h.isConnected = true
		close(h.connected)
	} else if count == 1 {
		// The first subscription of a new connection (the anchor keeps every other count
		// above one): go-redis reconnected and is subscribing again to what it remembers.
		// Commands written to the old connection will not be confirmed; from here on every
		// confirmation is the new connection's.
		for n, c := range h.channels {
			c.unconfirmed = 0
			h.forgetIfUnused(n, c)
		}
	}
	c := h.channels[name]
	if c == nil {
		return
	}
	if c.unconfirmed > 0 {
		c.unconfirmed--
	} else {
		// Not the answer to a SUBSCRIBE of ours but a resubscription after a reconnect:
		// messages in between are lost. (Right after a reconnect it may also stand in for
		// a SUBSCRIBE written just then; that one's own confirmation comes later and
		// signals again, after which nothing is missed.)
		for s := range c.subs {
			select {
			case s.Resync <- struct{}{}:
			default:
			}
		}
	}
	if c.unconfirmed == 0 && c.subscribed {
		select {
		case <-c.ready:
		default:
			close(c.ready)
		}
	}
	h.forgetIfUnused(name, c)
}

func (h *liveHub) deliver(channel string, e *Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.channels[channel]
	if c == nil {
		return
	}
	for s := range c.subs {
		select {
		case s.C <- e:
		default:
			select {
			case s.Resync <- struct{}{}:
			default:
			}
		}
	}
}

// liveBuffer is how many live events a subscriber may fall behind before it reads the rest
// from PostgreSQL. It is 1 KiB of every SSE stream's memory; a subscriber this far behind is
// better served by one page from the database than by a deeper queue.
const liveBuffer = 128

var (
	errSubscribeTimeout = errors.New("inspector: redis did not confirm the live subscription in time")
	errHubStopped       = errors.New("inspector: live hub stopped")
)

// subscribe adds a subscriber to a session's channel and returns once Redis is subscribed
// to it: every event published from then on reaches the subscriber or signals Resync.
func (h *liveHub) subscribe(ctx context.Context, tenantID, sessionID string) (*liveSub, error) {
	name := eventChannel(h.prefix, tenantID, sessionID)
	s := &liveSub{hub: h, channel: name, C: make(chan *Event, liveBuffer), Resync: make(chan struct{}, 1)}
	h.mu.Lock()
	c := h.channels[name]
	if c == nil {
		c = &liveChannel{subs: map[*liveSub]struct{}{}, ready: make(chan struct{})}
		h.channels[name] = c
	}
	c.subs[s] = struct{}{}
	if !c.subscribed {
		h.queue(name, c)
	}
	// The writer replaces ready only when it unsubscribes, which it does not while s is
	// here.
	ready := c.ready
	h.mu.Unlock()
	select {
	case <-ready:
		return s, nil
	default:
	}
	timeout := time.NewTimer(h.confirmWait)
	defer timeout.Stop()
	var err error
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-h.done:
		err = errHubStopped
	case <-timeout.C:
		err = errSubscribeTimeout
		h.resubscribe(name, ready)
	}
	s.close()
	return nil, err
}

// resubscribe writes a channel's SUBSCRIBE again when its confirmation is overdue, and
// counts only the new one, so that a confirmation Redis sent but the hub never saw cannot
// keep the channel waiting for good. Should the old one still come, it stands in for the
// new one, whose own confirmation then signals a resync.
func (h *liveHub) resubscribe(name string, ready chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.channels[name]
	if c == nil || c.ready != ready || !c.subscribed {
		return
	}
	select {
	case <-ready:
		return
	default:
	}
	c.unconfirmed = 0
	c.resend = true
	h.queue(name, c)
}

func (s *liveSub) close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.channels[s.channel]
	if c == nil {
		return
	}
	delete(c.subs, s)
	if len(c.subs) == 0 && c.subscribed {
		h.queue(s.channel, c)
	}
	h.forgetIfUnused(s.channel, c)
}
