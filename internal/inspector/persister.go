package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/db"
)

// Persister defaults: a batch is committed when it holds maxBatch events or the oldest has
// waited flushEvery, whichever comes first.
const (
	defaultMaxBatch   = 500
	defaultFlushEvery = 3 * time.Millisecond
	defaultQueueSize  = 16384
)

// pendingEvent is an event waiting for its commit.
type pendingEvent struct {
	tenantID, sessionID string
	epoch               int64
	typ                 EventType
	data                json.RawMessage
	at                  time.Time
	// committed, when set, receives the assigned seq (or an error) once committed and
	// published.
	committed chan<- commitResult
}

type commitResult struct {
	seq int64
	err error
}

// commitShard group-commits the events of the sessions hashed to it: one statement per
// batch (tapline_append_events) allocates gapless seqs and refuses stale owners, and only
// then are the events published live. Events of one session keep the order they were
// appended in, because a session always goes to the same shard.
type commitShard struct {
	pool       *pgxpool.Pool
	rdb        redis.UniversalClient
	prefix     string
	logger     *slog.Logger
	maxBatch   int
	flushEvery time.Duration
	// onRefused is told when PostgreSQL refused a session's events: its owner is stale.
	onRefused func(tenantID, sessionID string, epoch int64)
	// onCommitted observes each committed batch (metrics).
	onCommitted func(n int, took time.Duration)

	queue   chan pendingEvent
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func newCommitShard(pool *pgxpool.Pool, rdb redis.UniversalClient, prefix string, logger *slog.Logger) *commitShard {
	return &commitShard{
		pool: pool, rdb: rdb, prefix: prefix, logger: logger,
		maxBatch: defaultMaxBatch, flushEvery: defaultFlushEvery,
		queue: make(chan pendingEvent, defaultQueueSize),
		stop:  make(chan struct{}), stopped: make(chan struct{}),
	}
}

// persister spreads a worker's sessions over a few commit shards so several batches are
// committed at once; each shard commits its batches one after another.
type persister struct {
	shards []*commitShard
}

// defaultShards is the number of batches a worker commits concurrently.
const defaultShards = 4

func newPersister(pool *pgxpool.Pool, rdb redis.UniversalClient, prefix string, logger *slog.Logger) *persister {
	p := &persister{}
	for range defaultShards {
		p.shards = append(p.shards, newCommitShard(pool, rdb, prefix, logger))
	}
	return p
}

func (p *persister) shard(e *pendingEvent) *commitShard {
	h := fnv.New32a()
	_, _ = h.Write([]byte(e.sessionID))
	return p.shards[h.Sum32()%uint32(len(p.shards))]
}

func (p *persister) setHooks(onRefused func(tenantID, sessionID string, epoch int64), onCommitted func(n int, took time.Duration)) {
	for _, s := range p.shards {
		s.onRefused, s.onCommitted = onRefused, onCommitted
	}
}

func (p *persister) append(ctx context.Context, e pendingEvent) error {
	return p.shard(&e).append(ctx, e)
}

func (p *persister) appendSync(ctx context.Context, e pendingEvent) (int64, error) {
	return p.shard(&e).appendSync(ctx, e)
}

func (p *persister) start() {
	for _, s := range p.shards {
		s.start()
	}
}

func (p *persister) close() {
	for _, s := range p.shards {
		s.close()
	}
}

// errPersisterStopped is returned for events appended after Stop.
var errPersisterStopped = errors.New("persister stopped")

// append queues an event, blocking while the queue is full (backpressure on a flood).
func (p *commitShard) append(ctx context.Context, e pendingEvent) error {
	select {
	case p.queue <- e:
		return nil
	case <-p.stop:
		return errPersisterStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// appendSync queues an event and waits until it is committed and published.
func (p *commitShard) appendSync(ctx context.Context, e pendingEvent) (int64, error) {
	ch := make(chan commitResult, 1)
	e.committed = ch
	if err := p.append(ctx, e); err != nil {
		return 0, err
	}
	select {
	case r := <-ch:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *commitShard) start() { go p.run() }

// close stops accepting events, commits what is queued and returns.
func (p *commitShard) close() {
	p.once.Do(func() { close(p.stop) })
	<-p.stopped
}

func (p *commitShard) run() {
	defer close(p.stopped)
	batch := make([]pendingEvent, 0, p.maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case e := <-p.queue:
			if len(batch) == 0 {
				timer.Reset(p.flushEvery)
			}
			batch = append(batch, e)
			// Take whatever else is already waiting, up to a full batch.
			for len(batch) < p.maxBatch {
				select {
				case e := <-p.queue:
					batch = append(batch, e)
					continue
				default:
				}
				break
			}
			if len(batch) >= p.maxBatch {
				timer.Stop()
				p.commit(batch)
				batch = batch[:0]
			}
		case <-timer.C:
			p.commit(batch)
			batch = batch[:0]
		case <-p.stop:
			timer.Stop()
			for {
				select {
				case e := <-p.queue:
					batch = append(batch, e)
					if len(batch) >= p.maxBatch {
						p.commit(batch)
						batch = batch[:0]
					}
					continue
				default:
				}
				break
			}
			p.commit(batch)
			return
		}
	}
}

// commit writes a batch, retrying while PostgreSQL is unavailable (the queue fills up
// meanwhile and pushes back on the sessions), then publishes what was committed.
func (p *commitShard) commit(batch []pendingEvent) {
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	n := len(batch)
	tenants := make([]string, n)
	sessions := make([]string, n)
	epochs := make([]int64, n)
	types := make([]string, n)
	datas := make([][]byte, n)
	ats := make([]time.Time, n)
	for i, e := range batch {
		tenants[i], sessions[i], epochs[i], types[i], datas[i], ats[i] = e.tenantID, e.sessionID, e.epoch, string(e.typ), e.data, e.at
	}
	type key struct{ tenant, session string }
	type alloc struct {
		first   int64
		refused bool
	}
	var allocs map[key]alloc
	delay := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		allocs = map[key]alloc{}
		// The batch may be committed only once: do not reuse a context that a stopping
		// worker cancels half way.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rows, err := p.pool.Query(ctx, `select tenant_id, session_id, first_seq, refused from tapline_append_events($1, $2, $3, $4, $5, $6)`,
			tenants, sessions, epochs, types, datas, ats)
		if err == nil {
			for rows.Next() {
				var t, s string
				var first *int64
				var refused bool
				if err = rows.Scan(&t, &s, &first, &refused); err != nil {
					break
				}
				a := alloc{refused: refused}
				if first != nil {
					a.first = *first
				}
				allocs[key{t, s}] = a
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		cancel()
		if err == nil {
			break
		}
		err = db.InterpretError(err)
		if !errors.Is(err, db.ErrUnavailable) || attempt >= 600 {
			p.logger.Error("persist events failed; dropping batch", slog.Int("events", n), slog.Any("error", err))
			for _, e := range batch {
				if e.committed != nil {
					e.committed <- commitResult{err: fmt.Errorf("persist events: %w", err)}
				}
			}
			return
		}
		if attempt == 0 {
			p.logger.Warn("database unavailable; holding events", slog.Int("events", n), slog.Any("error", err))
		}
		time.Sleep(delay)
		delay = min(delay*2, 2*time.Second)
	}
	if p.onCommitted != nil {
		p.onCommitted(n, time.Since(start))
	}

	// Assign seqs in batch order and publish, session by session, in one pipeline.
	next := map[key]int64{}
	pipe := p.rdb.Pipeline()
	refusedSeen := map[key]bool{}
	for _, e := range batch {
		k := key{e.tenantID, e.sessionID}
		a := allocs[k]
		if a.refused {
			if !refusedSeen[k] {
				refusedSeen[k] = true
				if p.onRefused != nil {
					p.onRefused(e.tenantID, e.sessionID, e.epoch)
				}
			}
			if e.committed != nil {
				e.committed <- commitResult{err: db.ErrStaleEpoch}
			}
			continue
		}
		seq, ok := next[k]
		if !ok {
			seq = a.first
		}
		next[k] = seq + 1
		ev := Event{Seq: seq, Type: e.typ, At: e.at, Data: e.data}
		body, _ := json.Marshal(ev)
		pipe.Publish(context.Background(), eventChannel(p.prefix, e.tenantID, e.sessionID), body)
		if e.committed != nil {
			e.committed <- commitResult{seq: seq}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pipe.Exec(ctx); err != nil {
		// Subscribers detect the gap and read the events from PostgreSQL.
		p.logger.Warn("publish events", slog.Any("error", err))
	}
}
