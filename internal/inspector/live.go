package inspector

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Live events travel over Redis pub/sub, one channel per session, published by the owner
// after the events are committed. Pub/sub may drop messages (a reconnect, a slow reader);
// subscribers detect that from the seqs and read what they missed from PostgreSQL.

func eventChannel(prefix, tenantID, sessionID string) string {
	return prefix + ":ev:{" + tenantID + ":" + sessionID + "}"
}

// liveHub multiplexes every live subscription of one api process onto one Redis pub/sub
// connection.
type liveHub struct {
	rdb    redis.UniversalClient
	prefix string
	logger *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*liveSub]struct{}
	pubsub  *redis.PubSub
	done    chan struct{}
	stopped chan struct{}
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
	return &liveHub{rdb: rdb, prefix: prefix, logger: logger, subs: map[string]map[*liveSub]struct{}{}}
}

func (h *liveHub) start(ctx context.Context) {
	h.pubsub = h.rdb.Subscribe(ctx)
	h.done = make(chan struct{})
	h.stopped = make(chan struct{})
	ch := h.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	go func() {
		defer close(h.stopped)
		confirmed := map[string]bool{}
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
					// A second confirmation of a channel means go-redis reconnected and
					// resubscribed: messages in between are lost.
					if msg.Kind == "subscribe" {
						if confirmed[msg.Channel] {
							h.signalResync(msg.Channel)
						}
						confirmed[msg.Channel] = true
					} else if msg.Kind == "unsubscribe" {
						delete(confirmed, msg.Channel)
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
	<-h.stopped
}

func (h *liveHub) deliver(channel string, e *Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[channel] {
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

func (h *liveHub) signalResync(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[channel] {
		select {
		case s.Resync <- struct{}{}:
		default:
		}
	}
}

// liveBuffer is how many live events a subscriber may fall behind before it reads the rest
// from PostgreSQL. It is 1 KiB of every SSE stream's memory; a subscriber this far behind is
// better served by one page from the database than by a deeper queue.
const liveBuffer = 128

// subscribe adds a subscriber to a session's channel.
func (h *liveHub) subscribe(ctx context.Context, tenantID, sessionID string) (*liveSub, error) {
	ch := eventChannel(h.prefix, tenantID, sessionID)
	s := &liveSub{hub: h, channel: ch, C: make(chan *Event, liveBuffer), Resync: make(chan struct{}, 1)}
	h.mu.Lock()
	first := len(h.subs[ch]) == 0
	if first {
		h.subs[ch] = map[*liveSub]struct{}{}
	}
	h.subs[ch][s] = struct{}{}
	h.mu.Unlock()
	if first {
		if err := h.pubsub.Subscribe(ctx, ch); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *liveSub) close() {
	h := s.hub
	h.mu.Lock()
	delete(h.subs[s.channel], s)
	last := len(h.subs[s.channel]) == 0
	if last {
		delete(h.subs, s.channel)
	}
	h.mu.Unlock()
	if last {
		_ = h.pubsub.Unsubscribe(context.Background(), s.channel)
	}
}
