package tracker

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Short timings so failure cases play out in about a second.
const (
	testNodeTTL   = 1200 * time.Millisecond
	testHeartbeat = 250 * time.Millisecond
	testLeaseTTL  = 900 * time.Millisecond
	testClaimTTL  = 900 * time.Millisecond
	testReap      = 300 * time.Millisecond
)

// recorder collects what a node's callbacks receive.
type recorder struct {
	mu     sync.Mutex
	notes  []Notification
	gaps   []Gap
	losses []*Lease
}

func (r *recorder) notifications() []Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notes)
}

func (r *recorder) gapList() []Gap {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.gaps)
}

// has reports whether a notification of kind for session arrived.
func (r *recorder) has(kind NotificationKind, session string) bool {
	for _, n := range r.notifications() {
		if n.Kind == kind && n.Session == session {
			return true
		}
	}
	return false
}

// summary lists "kind tenant/session uri" strings, sorted.
func (r *recorder) summary(skip func(Notification) bool) []string {
	var out []string
	for _, n := range r.notifications() {
		if skip != nil && skip(n) {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s/%s %s%s", n.Kind, n.Tenant, n.Session, n.URI, n.ElicitationID))
	}
	sort.Strings(out)
	return out
}

type node struct {
	*Tracker
	rec *recorder
}

// startNode starts a tracker with test timings; Stop runs in Cleanup.
func startNode(t testing.TB, rdb redis.UniversalClient, prefix, name string, mutate ...func(*Config)) *node {
	t.Helper()
	rec := &recorder{}
	cfg := &Config{
		Prefix: prefix, NodeName: name, Addr: "http://" + name + ".internal:8081",
		NodeTTL: testNodeTTL, HeartbeatInterval: testHeartbeat, LeaseTTL: testLeaseTTL,
		ClaimTTL: testClaimTTL, ReapInterval: testReap,
		OnNotify: func(_ context.Context, n Notification) {
			rec.mu.Lock()
			rec.notes = append(rec.notes, n)
			rec.mu.Unlock()
		},
		OnGap: func(_ context.Context, g Gap) {
			rec.mu.Lock()
			rec.gaps = append(rec.gaps, g)
			rec.mu.Unlock()
		},
		OnLeaseLost: func(l *Lease) {
			rec.mu.Lock()
			rec.losses = append(rec.losses, l)
			rec.mu.Unlock()
		},
	}
	for _, m := range mutate {
		m(cfg)
	}
	tr, err := New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(tr.Stop)
	return &node{Tracker: tr, rec: rec}
}

// backendClient returns a client for b, closed in Cleanup.
func backendClient(t testing.TB, b redistest.Backend) redis.UniversalClient {
	t.Helper()
	return b.New(t)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ids returns "session" or "session/id" of each entry.
func ids(es []Entry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		if e.Ref.ID == "" {
			out = append(out, e.Ref.Session)
		} else {
			out = append(out, e.Ref.Session+"/"+e.Ref.ID)
		}
	}
	return out
}

func listenerIDs(ls []Listener) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.Session+" "+l.URI)
	}
	return out
}

// consistently checks cond at every poll for d and fails on the first false.
func consistently(t *testing.T, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !cond() {
			t.Fatalf("condition broke: %s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
