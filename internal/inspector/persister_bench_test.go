package inspector

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/redisconn"
)

// BenchmarkPersistAndPublish measures events committed to PostgreSQL and published to
// Redis per second by one worker's persister, with events spread over 16 sessions as a
// busy worker sees them. It reports events/s; each event is a typical 300-byte frame.
func BenchmarkPersistAndPublish(b *testing.B) {
	ctx := context.Background()
	d := dbtest.New(b)
	pool := d.AppPool
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
	var tenantID string
	type sess struct{ id string }
	var ss []sess
	tenantID = newID()
	if _, err := d.Pool.Exec(ctx, `insert into tenants (id, name) values ($1, $2)`, tenantID, "bench-"+tenantID); err != nil {
		b.Fatal(err)
	}
	for range sessions {
		id := newID()
		err := db.WithTenantTx(ctx, pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `insert into sessions (id, tenant_id, transport, url, status, epoch) values ($1, $2, 'streamable_http', 'http://x', 'ready', 1)`, id, tenantID)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		ss = append(ss, sess{id: id})
	}
	frame, _ := json.Marshal(map[string]any{"dir": "recv", "message": map[string]any{
		"jsonrpc": "2.0", "method": "notifications/progress",
		"params": map[string]any{"progressToken": "01a2012e-b35c-7c93-9f53-55f24d715636", "progress": 12, "total": 100, "message": "working on it, step twelve of one hundred"},
	}, "http": map[string]any{"method": "POST", "sse_event": "message", "sse_id": "0_12"}})

	p := newPersister(pool, rdb, "bench:"+tenantID, nil)
	var mu sync.Mutex
	var committed int
	var batches int
	var dbTime time.Duration
	p.setHooks(nil, func(n int, took time.Duration) { mu.Lock(); committed += n; batches++; dbTime += took; mu.Unlock() })
	p.start()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	last := make(chan commitResult, 1)
	for i := range b.N {
		e := pendingEvent{tenantID: tenantID, sessionID: ss[i%sessions].id, epoch: 1, typ: EventFrame, data: frame, at: time.Now()}
		if i == b.N-1 {
			e.committed = last
		}
		if err := p.append(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	if r := <-last; r.err != nil {
		b.Fatal(r.err)
	}
	b.StopTimer()
	p.close()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if batches > 0 {
		b.ReportMetric(float64(committed)/float64(batches), "events/batch")
		b.ReportMetric(float64(dbTime.Milliseconds())/float64(batches), "db_ms/batch")
	}
	var n int
	_ = db.WithTenantTx(ctx, pool, tenantID, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, `select count(*) from session_events where tenant_id = $1`, tenantID).Scan(&n)
	})
	if n != b.N {
		b.Fatalf("%d events stored, want %d", n, b.N)
	}
	_ = fmt.Sprint
}
