package inspector

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

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
