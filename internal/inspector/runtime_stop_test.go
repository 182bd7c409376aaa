package inspector

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/redistest"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tracker"
)

// holdingPropagator holds, in Extract, the commands whose trace carries its mark: the first
// thing a worker does with a command, so the test has one being served for as long as it
// likes, whatever the runtime's context says.
type holdingPropagator struct {
	propagation.TextMapPropagator
	mark    string
	once    sync.Once
	held    chan struct{} // closed once a command is held
	release chan struct{}
}

func (p *holdingPropagator) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if carrier.Get("tapline-test-hold") == p.mark {
		p.once.Do(func() { close(p.held) })
		<-p.release
	}
	return p.TextMapPropagator.Extract(ctx, carrier)
}

// Stop returns only once the commands the worker was serving have ended, so nothing of a
// stopped runtime (a reply, an owner's write) comes after it; its context bounds that wait.
// Not parallel: it replaces the process's propagator while it runs.
func TestStopWaitsForTheCommandsBeingServed(t *testing.T) {
	for _, bounded := range []bool{false, true} {
		name := "Waits"
		if bounded {
			name = "BoundedByItsContext"
		}
		t.Run(name, func(t *testing.T) { testStopWaitsForCommands(t, bounded) })
	}
}

func testStopWaitsForCommands(t *testing.T, bounded bool) {
	ctx := context.Background()
	rdb := redistest.Single(t, os.Getenv("TEST_REDIS_URL"))
	prefix := redistest.Prefix(t)
	d := dbtest.New(t)
	k, err := secretbox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secretbox.ParseKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	trk, err := tracker.New(rdb, &tracker.Config{Prefix: prefix + ":trk", NodeName: "stopping"})
	if err != nil {
		t.Fatal(err)
	}
	if err := trk.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(trk.Stop)

	// The package's tests run with no propagator of their own (the global one delegates to
	// whatever is set, so it cannot be wrapped): an empty composite is the same.
	hold := &holdingPropagator{TextMapPropagator: propagation.NewCompositeTextMapPropagator(), mark: newID(),
		held: make(chan struct{}), release: make(chan struct{})}
	otel.SetTextMapPropagator(hold)
	t.Cleanup(func() { otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator()) })
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold.release) }) }
	t.Cleanup(release)

	rt, err := NewRuntime(&RuntimeConfig{Pool: d.AppPool, Redis: rdb, Tracker: trk, Guard: guard, Keys: keys, Prefix: prefix,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The worker reads its inbox from the newest command it finds there on start: send until
	// one is taken.
	replyTo := "api-" + newID()
	send := func() {
		raw, _ := json.Marshal(&Command{ID: newID(), Op: OpPing, TenantID: newID(), Session: newID(), ReplyTo: replyTo,
			Deadline: time.Now().Add(time.Minute), Trace: map[string]string{"tapline-test-hold": hold.mark}})
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: inboxKey(prefix, rt.nodeID), Values: map[string]any{"c": string(raw)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	send()
	for held := false; !held; {
		select {
		case <-hold.held:
			held = true
		case <-time.After(200 * time.Millisecond):
			send()
		case <-time.After(10 * time.Second):
			t.Fatal("the worker never took the command")
		}
	}

	// The inbox's read blocks for up to 2s, which Stop waits for in any case: hold the
	// command longer than that.
	const holdFor = 3 * time.Second
	limit := 30 * time.Second
	if bounded {
		limit = holdFor
	}
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	stopped := make(chan time.Time, 1)
	began := time.Now()
	go func() {
		rt.Stop(sctx)
		stopped <- time.Now()
	}()
	if bounded {
		select {
		case <-stopped:
			if took := time.Since(began); took < limit {
				t.Fatalf("Stop returned after %v, before its context ended, with a command held", took)
			}
		case <-time.After(limit + 10*time.Second):
			t.Fatal("Stop did not return once its context ended")
		}
		return
	}
	select {
	case at := <-stopped:
		t.Fatalf("Stop returned after %v while a command was being served", at.Sub(began))
	case <-time.After(holdFor):
	}
	released := time.Now()
	release()
	select {
	case at := <-stopped:
		if at.Before(released) {
			t.Fatalf("Stop returned before the command it waited for ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return once the command ended")
	}
}
