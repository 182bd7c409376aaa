package inspector

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/redisconn"
)

// BenchmarkPersistVsCopy measures one worker's persister (group commit through
// tapline_append_events as the application role under row-level security, then publish to
// Redis) against the floor for writing the same rows: one raw pgx CopyFrom into
// session_events as the tables' owner, with no RLS, no seq allocation, no fencing and no
// publish. The two alternate in rounds, so load from other processes on a shared machine
// hits both alike.
//
// b.N is the number of events each side writes, split over up to 10 rounds; events go to
// 16 sessions as a busy worker's would, each a typical 300-byte frame. It reports the
// median events/s of each side and the median of the per-round ratios persist/copy.
func BenchmarkPersistVsCopy(b *testing.B) {
	ctx := context.Background()
	d := dbtest.New(b)
	rc, err := config.ParseRedisURL(os.Getenv("TEST_REDIS_URL"))
	if err != nil {
		b.Fatal(err)
	}
	rdb, err := redisconn.Open(rc, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()

	const sessions = 16
	tenantID := newID()
	if _, err := d.Pool.Exec(ctx, `insert into tenants (id, name) values ($1, $2)`, tenantID, "bench-"+tenantID); err != nil {
		b.Fatal(err)
	}
	// The persister's sessions, and separate ones for the copy so seqs never collide.
	mk := func() []string {
		ids := make([]string, sessions)
		for i := range ids {
			ids[i] = newID()
			if _, err := d.Pool.Exec(ctx, `insert into sessions (id, tenant_id, transport, url, status, epoch)
				values ($1, $2, 'streamable_http', 'http://x', 'ready', 1)`, ids[i], tenantID); err != nil {
				b.Fatal(err)
			}
		}
		return ids
	}
	persistSessions, copySessions := mk(), mk()
	frame := benchFrame()

	p := newPersister(d.AppPool, rdb, "bench:"+tenantID, nil)
	var published atomic.Int64
	done := make(chan struct{}, 1)
	var target atomic.Int64
	p.setPublishedHook(func(n int) {
		if published.Add(int64(n)) >= target.Load() {
			select {
			case done <- struct{}{}:
			default:
			}
		}
	})
	p.start()
	defer p.close()

	// Warm both paths (prepared statements, connections) outside the measurement.
	target.Store(sessions)
	for i := range sessions {
		if err := p.append(ctx, pendingEvent{tenantID: tenantID, sessionID: persistSessions[i], epoch: 1, typ: EventFrame, data: frame, at: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	waitPublished(b, done)
	published.Store(0)
	tenantUUID := pgtype.UUID{Bytes: uuid.MustParse(tenantID), Valid: true}
	copyUUIDs := make([]pgtype.UUID, sessions)
	for i, id := range copySessions {
		copyUUIDs[i] = pgtype.UUID{Bytes: uuid.MustParse(id), Valid: true}
	}
	copySeq := make([]int64, sessions)
	copyRows := func(n int) {
		rows := make([][]any, n)
		now := time.Now()
		for i := range rows {
			s := i % sessions
			copySeq[s]++
			rows[i] = []any{tenantUUID, copyUUIDs[s], copySeq[s], string(EventFrame), frame, now}
		}
		got, err := d.Pool.CopyFrom(ctx, pgx.Identifier{"session_events"},
			[]string{"tenant_id", "session_id", "seq", "type", "data", "at"}, pgx.CopyFromRows(rows))
		if err != nil || got != int64(n) {
			b.Fatalf("copy %d rows: %d, %v", n, got, err)
		}
	}
	copyRows(sessions)

	rounds := min(b.N, 10)
	var persistRates, copyRates, ratios []float64
	b.ReportAllocs()
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r < b.N%rounds {
			n++
		}
		// Persister: flood it with n events and wait until all are committed and published.
		published.Store(0)
		target.Store(int64(n))
		start := time.Now()
		for i := range n {
			e := pendingEvent{tenantID: tenantID, sessionID: persistSessions[i%sessions], epoch: 1, typ: EventFrame, data: frame, at: time.Now()}
			if err := p.append(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
		waitPublished(b, done)
		persistRate := float64(n) / time.Since(start).Seconds()

		start = time.Now()
		copyRows(n)
		copyRate := float64(n) / time.Since(start).Seconds()
		persistRates, copyRates = append(persistRates, persistRate), append(copyRates, copyRate)
		ratios = append(ratios, persistRate/copyRate)
	}
	b.StopTimer()
	b.ReportMetric(median(persistRates), "events/s")
	b.ReportMetric(median(copyRates), "copy_rows/s")
	b.ReportMetric(median(ratios), "persist/copy")

	var stored int
	err = db.WithTenantTx(ctx, d.AppPool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, `select count(*) from session_events e join unnest($1::uuid[]) s(id) on e.session_id = s.id`, persistSessions).Scan(&stored)
	})
	if err != nil || stored != b.N+sessions {
		b.Fatalf("%d events stored by the persister, want %d (%v)", stored, b.N+sessions, err)
	}
	// Seqs stay gapless per session.
	var gaps int
	err = db.WithTenantTx(ctx, d.AppPool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, `select count(*) from (select session_id, max(seq) - count(*) as gap from session_events
			where session_id = any($1::uuid[]) group by session_id) g where gap <> 0`, persistSessions).Scan(&gaps)
	})
	if err != nil || gaps != 0 {
		b.Fatalf("%d sessions with gaps (%v)", gaps, err)
	}
}

// waitPublished waits for the persister to publish what was appended, at most two minutes.
func waitPublished(b *testing.B, done <-chan struct{}) {
	b.Helper()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatal("the persister did not publish the events within two minutes")
	}
}

// benchFrame is a typical tapped frame: a progress notification with its HTTP context.
func benchFrame() json.RawMessage {
	frame, _ := json.Marshal(map[string]any{"dir": "recv", "message": map[string]any{
		"jsonrpc": "2.0", "method": "notifications/progress",
		"params": map[string]any{"progressToken": "01a2012e-b35c-7c93-9f53-55f24d715636", "progress": 12, "total": 100, "message": "working on it, step twelve of one hundred"},
	}, "http": map[string]any{"method": "POST", "sse_event": "message", "sse_id": "0_12"}})
	return frame
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
