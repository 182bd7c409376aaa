package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/redistest"
)

// shardTest is a commit shard on a database of its own, not started, so that a test can
// queue the events of one batch before the shard takes them.
type shardTest struct {
	t      *testing.T
	d      *dbtest.Database
	rdb    redis.UniversalClient
	prefix string
	shard  *commitShard

	mu      sync.Mutex
	refused []string // session/epoch, as onRefused heard them
}

func newShardTest(t *testing.T) *shardTest {
	t.Helper()
	s := &shardTest{t: t, d: dbtest.New(t), rdb: redistest.Single(t, os.Getenv("TEST_REDIS_URL")), prefix: redistest.Prefix(t)}
	s.shard = newCommitShard(s.d.AppPool, s.rdb, s.prefix, slog.New(slog.NewTextHandler(t.Output(), nil)))
	s.shard.onRefused = func(_, sessionID string, epoch int64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.refused = append(s.refused, sessionID+"/"+strconv.FormatInt(epoch, 10))
	}
	return s
}

// start lets the shard take what was queued: one batch.
func (s *shardTest) start() {
	s.shard.start()
	s.t.Cleanup(s.shard.close)
}

// tenant creates a tenant with a session at each of epochs and returns their ids.
func (s *shardTest) tenant(epochs ...int64) (tenantID string, sessionIDs []string) {
	s.t.Helper()
	ctx := context.Background()
	tenantID = newID()
	if _, err := s.d.Pool.Exec(ctx, `insert into tenants (id, name) values ($1, $2)`, tenantID, "t-"+tenantID); err != nil {
		s.t.Fatal(err)
	}
	for _, epoch := range epochs {
		id := newID()
		if _, err := s.d.Pool.Exec(ctx, `insert into sessions (id, tenant_id, transport, url, status, epoch)
			values ($1, $2, 'streamable_http', 'http://x', 'ready', $3)`, id, tenantID, epoch); err != nil {
			s.t.Fatal(err)
		}
		sessionIDs = append(sessionIDs, id)
	}
	return tenantID, sessionIDs
}

// queue appends an event and returns the channel its commit is answered on.
func (s *shardTest) queue(tenantID, sessionID string, epoch int64, data string) <-chan commitResult {
	s.t.Helper()
	ch := make(chan commitResult, 1)
	err := s.shard.append(context.Background(), pendingEvent{tenantID: tenantID, sessionID: sessionID, epoch: epoch,
		typ: EventFrame, data: json.RawMessage(data), at: time.Now(), committed: ch})
	if err != nil {
		s.t.Fatal(err)
	}
	return ch
}

// stored returns a session's events as PostgreSQL holds them, by seq.
func (s *shardTest) stored(sessionID string) []string {
	s.t.Helper()
	rows, err := s.d.Pool.Query(context.Background(), `select seq || ' ' || data::text from session_events where session_id = $1 order by seq`, sessionID)
	if err != nil {
		s.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func answer(t *testing.T, ch <-chan commitResult) commitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("an event was never answered")
		return commitResult{}
	}
}

func wantSeq(t *testing.T, what string, ch <-chan commitResult, seq int64) {
	t.Helper()
	if r := answer(t, ch); r.err != nil || r.seq != seq {
		t.Errorf("%s: seq %d, error %v; want seq %d", what, r.seq, r.err, seq)
	}
}

// A target's U+0000, valid JSON that jsonb refuses, is stored as U+FFFD, and the events
// batched with it are committed.
func TestPersisterStoresANULAsAReplacementCharacter(t *testing.T) {
	t.Parallel()
	s := newShardTest(t)
	tenantID, ids := s.tenant(1, 1)
	other := s.queue(tenantID, ids[0], 1, `{"ok":true}`)
	nul := s.queue(tenantID, ids[1], 1, `{"t":"a\u0000b","escaped":"\\u0000"}`)
	s.start()
	wantSeq(t, "the other session's event", other, 1)
	wantSeq(t, "the event with a NUL", nul, 1)
	if got, want := s.stored(ids[1]), []string{`1 {"t": "a` + "\uFFFD" + `b", "escaped": "\\u0000"}`}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stored %q, want %q", got, want)
	}
}

// An event PostgreSQL refuses for its data is dropped alone: the events of other sessions
// and other tenants in its batch, and those after it in its own session, are committed with
// gapless seqs and published. The poisoned events hold bytes that are not UTF-8 and a
// number beyond numeric's range, which StorableJSON leaves as they are, so they reach
// PostgreSQL: this tests the split, not the sanitizer.
func TestPersisterDropsOnlyTheEventPostgresRefuses(t *testing.T) {
	t.Parallel()
	s := newShardTest(t)
	tenantA, a := s.tenant(1, 1)
	tenantB, b := s.tenant(1)
	ps := s.rdb.Subscribe(context.Background(), eventChannel(s.prefix, tenantB, b[0]))
	defer ps.Close()
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	a0 := s.queue(tenantA, a[0], 1, `{"n":1}`)
	b0 := s.queue(tenantB, b[0], 1, `{"n":1}`)
	a1 := s.queue(tenantA, a[1], 1, `{"n":1}`)
	notUTF8 := s.queue(tenantA, a[1], 1, "{\"t\":\"a\xffb\"}")
	a1Later := s.queue(tenantA, a[1], 1, `{"n":2}`)
	b1 := s.queue(tenantB, b[0], 1, `{"n":2}`)
	tooLarge := s.queue(tenantB, b[0], 1, `{"n":1e999999}`)
	a0Later := s.queue(tenantA, a[0], 1, `{"n":2}`)
	s.start()

	for what, ch := range map[string]<-chan commitResult{"bytes that are not UTF-8": notUTF8, "a number out of range": tooLarge} {
		if r := answer(t, ch); !errors.Is(r.err, db.ErrInvalidInput) {
			t.Errorf("the event with %s: seq %d, error %v; want ErrInvalidInput", what, r.seq, r.err)
		}
	}
	wantSeq(t, "tenant A, session 0", a0, 1)
	wantSeq(t, "tenant A, session 0, later", a0Later, 2)
	wantSeq(t, "tenant A, session 1, before the poisoned event", a1, 1)
	wantSeq(t, "tenant A, session 1, after the poisoned event", a1Later, 2)
	wantSeq(t, "tenant B", b0, 1)
	wantSeq(t, "tenant B, later", b1, 2)
	for id, want := range map[string][]string{
		a[0]: {`1 {"n": 1}`, `2 {"n": 2}`}, a[1]: {`1 {"n": 1}`, `2 {"n": 2}`}, b[0]: {`1 {"n": 1}`, `2 {"n": 2}`},
	} {
		if got := s.stored(id); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("session %s stored %q, want %q", id, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for seq := int64(1); seq <= 2; seq++ {
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("waiting for seq %d to be published: %v", seq, err)
		}
		var e Event
		if err := json.Unmarshal([]byte(msg.Payload), &e); err != nil || e.Seq != seq {
			t.Fatalf("published %s (%v), want seq %d", msg.Payload, err, seq)
		}
	}
}

// A stale owner's event batched with the current owner's makes PostgreSQL refuse the
// session's events (migrations/0019); the current owner's go again on their own.
func TestPersisterCommitsTheNewestEpochOfARefusedSession(t *testing.T) {
	t.Parallel()
	s := newShardTest(t)
	tenantID, ids := s.tenant(7, 1)
	stale := s.queue(tenantID, ids[0], 6, `{"stale":true}`)
	current := s.queue(tenantID, ids[0], 7, `{"stale":false}`)
	other := s.queue(tenantID, ids[1], 1, `{"n":1}`)
	staleLater := s.queue(tenantID, ids[0], 6, `{"stale":true}`)
	currentLater := s.queue(tenantID, ids[0], 7, `{"stale":false,"n":2}`)
	s.start()

	for what, ch := range map[string]<-chan commitResult{"the stale event": stale, "the later stale event": staleLater} {
		if r := answer(t, ch); !errors.Is(r.err, db.ErrStaleEpoch) {
			t.Errorf("%s: seq %d, error %v; want ErrStaleEpoch", what, r.seq, r.err)
		}
	}
	wantSeq(t, "the current owner's event", current, 1)
	wantSeq(t, "the current owner's later event", currentLater, 2)
	wantSeq(t, "the other session's event", other, 1)
	want := []string{`1 {"stale": false}`, `2 {"n": 2, "stale": false}`}
	if got := s.stored(ids[0]); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("stored %q, want %q", got, want)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.refused) != 1 || s.refused[0] != ids[0]+"/6" {
		t.Errorf("onRefused heard %v, want only %s/6", s.refused, ids[0])
	}
}

// The queue holds back on bytes as it does on count: past its bytes, an append waits until
// a commit frees them, and a lazily built event counts what its builder holds. A caller
// whose wait ends takes nothing from the queue.
func TestPersisterQueueIsBoundedByBytes(t *testing.T) {
	s := newShardTest(t)
	s.shard.queueBytes = 1 << 20
	s.shard.queued = semaphore.NewWeighted(s.shard.queueBytes)
	tenantID, sessions := s.tenant(1)
	big := `{"text":"` + strings.Repeat("x", 300<<10) + `"}`
	var answers []<-chan commitResult
	for range 3 {
		answers = append(answers, s.queue(tenantID, sessions[0], 1, big))
	}
	lazy := pendingEvent{tenantID: tenantID, sessionID: sessions[0], epoch: 1, typ: EventFrame, at: time.Now(),
		size: 300 << 10, build: func() json.RawMessage { return json.RawMessage(big) }}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.shard.append(ctx, lazy); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fourth 300 KiB event in a 1 MiB queue: %v, want to wait", err)
	}
	if n := len(s.shard.queue); n != 3 {
		t.Fatalf("%d events queued, want the 3 that fit", n)
	}
	// Once the shard commits, the bytes are free again.
	s.start()
	for i, ch := range answers {
		wantSeq(t, "big event", ch, int64(i+1))
	}
	committed := make(chan commitResult, 1)
	lazy.committed = committed
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.shard.append(ctx, lazy); err != nil {
		t.Fatal(err)
	}
	wantSeq(t, "lazy event", committed, 4)
	// The bytes are released as the commit returns, just after the answers.
	for deadline := time.Now().Add(5 * time.Second); !s.shard.queued.TryAcquire(s.shard.queueBytes); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bytes still held once every event was committed")
		}
	}
}
