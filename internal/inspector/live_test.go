package inspector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/redistest"
)

// startLiveHub starts a hub of its own on rdb under a fresh prefix.
func startLiveHub(t *testing.T, rdb redis.UniversalClient) *liveHub {
	t.Helper()
	h := newLiveHub(rdb, redistest.Prefix(t), slog.New(slog.DiscardHandler))
	h.start(context.Background())
	t.Cleanup(h.stop)
	return h
}

// liveProbe publishes events on one session's channel, as an owner does.
type liveProbe struct {
	t       *testing.T
	rdb     redis.UniversalClient
	channel string
	seq     int64
}

// delivered publishes one event and reports whether s receives it within a second. One
// publish is enough: a subscriber is only handed out once Redis confirmed the subscription.
func (p *liveProbe) delivered(s *liveSub) bool {
	p.t.Helper()
	p.seq++
	b, _ := json.Marshal(Event{Seq: p.seq, Type: EventFrame, At: time.Now(), Data: json.RawMessage(`{}`)})
	if err := p.rdb.Publish(context.Background(), p.channel, b).Err(); err != nil {
		p.t.Fatal(err)
	}
	timeout := time.After(time.Second)
	for {
		select {
		case e := <-s.C:
			if e.Seq == p.seq {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// A stream that opens on a session just as another closes there (a browser reload, a
// ?wait= call ending) must get live events: the UNSUBSCRIBE of the leaving one must not
// reach Redis after the SUBSCRIBE of the new one. Other sessions come and go meanwhile.
func TestLiveSubscriberReplacingAnotherGetsLiveEvents(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		ctx := context.Background()
		rdb := b.New(t)
		h := startLiveHub(t, rdb)
		tenantID, sessionID := "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"
		probe := &liveProbe{t: t, rdb: rdb, channel: eventChannel(h.prefix, tenantID, sessionID)}

		stop := make(chan struct{})
		var churn sync.WaitGroup
		for g := range 4 {
			churn.Add(1)
			go func() {
				defer churn.Done()
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					other := fmt.Sprintf("00000000-0000-0000-0000-%012d", 1000+g*1000000+j)
					if s, err := h.subscribe(ctx, tenantID, other); err == nil {
						s.close()
					}
				}
			}()
		}
		defer func() { close(stop); churn.Wait() }()

		const rounds = 400
		lost := 0
		for i := range rounds {
			old, err := h.subscribe(ctx, tenantID, sessionID)
			if err != nil || !probe.delivered(old) {
				t.Fatalf("round %d: the first subscriber gets no live events (%v)", i, err)
			}
			var s *liveSub
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); old.close() }()
			go func() {
				defer wg.Done()
				// Spread the two over the window in which they race.
				for start := time.Now(); time.Since(start) < time.Duration(i%20)*time.Microsecond; {
				}
				s, err = h.subscribe(ctx, tenantID, sessionID)
			}()
			wg.Wait()
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if !probe.delivered(s) {
				lost++
				n, _ := rdb.PubSubNumSub(ctx, probe.channel).Result()
				t.Logf("round %d: no live event; PUBSUB NUMSUB = %d", i, n[probe.channel])
			}
			s.close()
		}
		if lost > 0 {
			t.Fatalf("%d of %d new subscribers receive no live events", lost, rounds)
		}
	})
}

// When the pub/sub connection drops, go-redis reconnects and subscribes again: followers
// are told to read what they missed from PostgreSQL, live events flow again, and channels
// come and go as before.
func TestLiveHubRecoversFromALostConnection(t *testing.T) {
	t.Parallel()
	redistest.Run(t, func(t *testing.T, b redistest.Backend) {
		t.Parallel()
		ctx := context.Background()
		name := "live-" + redistest.Prefix(t)[len("test:"):]
		rdb := b.NewNamed(t, name)
		h := startLiveHub(t, rdb)
		tenantID := "00000000-0000-0000-0000-000000000001"
		sessions := []string{"00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000003"}
		probes := map[string]*liveProbe{}
		subs := map[string]*liveSub{}
		for _, id := range sessions {
			probes[id] = &liveProbe{t: t, rdb: rdb, channel: eventChannel(h.prefix, tenantID, id)}
			s, err := h.subscribe(ctx, tenantID, id)
			if err != nil || !probes[id].delivered(s) {
				t.Fatalf("session %s: no live events before the drop (%v)", id, err)
			}
			subs[id] = s
		}
		for _, id := range sessions {
			select {
			case <-subs[id].Resync:
				t.Fatalf("session %s: resync before the connection dropped", id)
			default:
			}
		}
		if n, err := redistest.KillClients(ctx, rdb, name, "flags=P"); err != nil || n == 0 {
			t.Fatalf("killed %d pub/sub connections: %v", n, err)
		}
		for _, id := range sessions {
			select {
			case <-subs[id].Resync:
			case <-time.After(10 * time.Second):
				t.Fatalf("session %s: no resync after the connection dropped", id)
			}
			if !probes[id].delivered(subs[id]) {
				t.Fatalf("session %s: no live events after the reconnect", id)
			}
		}
		// A channel left and taken again, and a new one, work on the new connection.
		subs[sessions[0]].close()
		for _, id := range []string{sessions[0], "00000000-0000-0000-0000-000000000004"} {
			p := &liveProbe{t: t, rdb: rdb, channel: eventChannel(h.prefix, tenantID, id), seq: 100}
			s, err := h.subscribe(ctx, tenantID, id)
			if err != nil || !p.delivered(s) {
				t.Fatalf("session %s: a subscriber after the reconnect gets no live events (%v)", id, err)
			}
			s.close()
		}
		subs[sessions[1]].close()
	})
}

// A confirmation the hub never sees must not keep a channel waiting for good: the waiter
// that gives up has the SUBSCRIBE written again, and the others get the channel.
func TestLiveChannelRecoversFromAMissingConfirmation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Single(t, os.Getenv("TEST_REDIS_URL"))
	h := startLiveHub(t, rdb)
	h.confirmWait = time.Second
	tenantID, sessionID := "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"
	name := eventChannel(h.prefix, tenantID, sessionID)
	// As if a confirmation had gone missing: the hub waits for one more than will come.
	h.mu.Lock()
	h.channels[name] = &liveChannel{subs: map[*liveSub]struct{}{}, ready: make(chan struct{}), unconfirmed: 1}
	h.mu.Unlock()
	first := make(chan error, 1)
	go func() {
		_, err := h.subscribe(ctx, tenantID, sessionID)
		first <- err
	}()
	time.Sleep(h.confirmWait / 2)
	s, err := h.subscribe(ctx, tenantID, sessionID)
	if err != nil {
		t.Fatalf("second subscriber: %v", err)
	}
	defer s.close()
	if err := <-first; err != errSubscribeTimeout {
		t.Fatalf("first subscriber: %v, want it to give up", err)
	}
	if p := (&liveProbe{t: t, rdb: rdb, channel: name}); !p.delivered(s) {
		t.Fatal("no live events after the SUBSCRIBE was written again")
	}
}
