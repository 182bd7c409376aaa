package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/tapline/tapline/internal/db"
)

// Persister defaults: a shard commits whatever is queued, up to maxBatch events, holding a
// batch that is not full for up to flushEvery so the events of one exchange (a tool call's
// request and response frames and its call_result) share one commit: that halved the
// statements per tool call, and the database's work is what a busy worker waits for. Under a
// flood, batches fill before the timer. Callers waiting for a tool call hear from the owner
// directly (Runtime.notifyCall), not through these events.
const (
	defaultMaxBatch   = 500
	defaultFlushEvery = 2 * time.Millisecond
	defaultQueueSize  = 16384
	// defaultQueueBytes bounds what a shard's queued events hold, in bytes, as the queue's
	// length bounds their number: a target sending large frames (or tools large results)
	// faster than PostgreSQL takes them is held back at this, not at the worker's memory.
	defaultQueueBytes = 32 << 20
	// eventOverhead is about what an event holds besides its data.
	eventOverhead = 256
)

// pendingEvent is an event waiting for its commit.
type pendingEvent struct {
	tenantID, sessionID string
	epoch               int64
	typ                 EventType
	data                json.RawMessage
	// build, when set, encodes data; the shard calls it before the commit.
	build func() json.RawMessage
	// size is about the bytes the event holds until its commit, when build is set;
	// otherwise data's length counts. weight is what the event took of the queue's bytes.
	size, weight int64
	at           time.Time
	// committed, when set, receives the assigned seq (or an error) once committed and
	// published.
	committed chan<- commitResult
	// flush marks no event but a point in the queue: its committed is answered once every
	// event queued before it is committed and published, or given up (see commitShard.flush).
	flush bool
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
	// onPublished is told how many events of a batch were handed to Redis (benchmarks).
	onPublished func(n int)

	queue chan pendingEvent
	// queued holds the bytes of the queued events, up to queueBytes.
	queued     *semaphore.Weighted
	queueBytes int64
	stop       chan struct{}
	stopped    chan struct{}
	once       sync.Once
}

func newCommitShard(pool *pgxpool.Pool, rdb redis.UniversalClient, prefix string, logger *slog.Logger) *commitShard {
	return &commitShard{
		pool: pool, rdb: rdb, prefix: prefix, logger: logger,
		maxBatch: defaultMaxBatch, flushEvery: defaultFlushEvery,
		queue:  make(chan pendingEvent, defaultQueueSize),
		queued: semaphore.NewWeighted(defaultQueueBytes), queueBytes: defaultQueueBytes,
		stop: make(chan struct{}), stopped: make(chan struct{}),
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

func (p *persister) setPublishedHook(fn func(n int)) {
	for _, s := range p.shards {
		s.onPublished = fn
	}
}

func (p *persister) append(ctx context.Context, e pendingEvent) error {
	return p.shard(&e).append(ctx, e)
}

func (p *persister) appendSync(ctx context.Context, e pendingEvent) (int64, error) {
	return p.shard(&e).appendSync(ctx, e)
}

// flush waits until the events queued for sessionID before it are committed (see
// commitShard.flush).
func (p *persister) flush(ctx context.Context, sessionID string) error {
	return p.shard(&pendingEvent{sessionID: sessionID}).flush(ctx)
}

// publishCommitted publishes a session's events that were committed outside the persister (the
// owner's end of its session: see endSessionAsOwner), on the session's shard's Redis.
func (p *persister) publishCommitted(ctx context.Context, tenantID, sessionID string, events []Event) error {
	s := p.shard(&pendingEvent{sessionID: sessionID})
	return publishEvents(ctx, s.rdb, s.prefix, tenantID, sessionID, events)
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

// append queues an event, blocking while the queue is full, by count or by bytes
// (backpressure on a flood); ctx ends only that wait. An event with room in the queue is
// always taken, even once ctx is done: what an owner records as it stops (a request it
// expired) must not be dropped at random by select.
func (p *commitShard) append(ctx context.Context, e pendingEvent) error {
	size := e.size
	if e.build == nil {
		size = int64(len(e.data))
	}
	e.weight = min(size+eventOverhead, p.queueBytes)
	if !p.queued.TryAcquire(e.weight) {
		if err := p.awaitBytes(ctx, e.weight); err != nil {
			return err
		}
	}
	select {
	case p.queue <- e:
		return nil
	default:
	}
	select {
	case p.queue <- e:
		return nil
	case <-p.stop:
		p.queued.Release(e.weight)
		return errPersisterStopped
	case <-ctx.Done():
		p.queued.Release(e.weight)
		return ctx.Err()
	}
}

// awaitBytes waits until the queue has n bytes free and takes them, or ctx ends, or the
// shard stops.
func (p *commitShard) awaitBytes(ctx context.Context, n int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := p.queued.Acquire(ctx, n); err != nil {
		select {
		case <-p.stop:
			return errPersisterStopped
		default:
			return err
		}
	}
	return nil
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

// flush waits until every event queued before it is committed and published, or given up,
// so that what an owner writes next outside the persister (the end of its session) comes after
// them in the session's history. It fails with errPersisterStopped once the shard has stopped:
// it committed what was queued when it stopped, and commits nothing more.
func (p *commitShard) flush(ctx context.Context) error {
	ch := make(chan commitResult, 1)
	if err := p.append(ctx, pendingEvent{flush: true, committed: ch}); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-p.stopped:
		return errPersisterStopped
	case <-ctx.Done():
		return ctx.Err()
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
	var linger *time.Timer
	if p.flushEvery > 0 {
		linger = time.NewTimer(time.Hour)
		linger.Stop()
	}
	for {
		select {
		case e := <-p.queue:
			batch = append(batch[:0], e)
		case <-p.stop:
			p.drain(batch[:0])
			return
		}
		// Group commit: the batch is whatever waited while the previous one committed, so a
		// lone event goes out at once and a flood fills whole batches.
		batch = p.take(batch)
		if linger != nil && len(batch) < p.maxBatch {
			linger.Reset(p.flushEvery)
		wait:
			for len(batch) < p.maxBatch {
				select {
				case e := <-p.queue:
					batch = p.take(append(batch, e))
				case <-linger.C:
					break wait
				case <-p.stop:
					break wait
				}
			}
			linger.Stop()
		}
		p.commit(batch)
	}
}

// take appends the events already queued to batch, up to a full batch.
func (p *commitShard) take(batch []pendingEvent) []pendingEvent {
	for len(batch) < p.maxBatch {
		select {
		case e := <-p.queue:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// drain commits everything still queued once the shard is stopping.
func (p *commitShard) drain(batch []pendingEvent) {
	for {
		batch = p.take(batch[:0])
		if len(batch) == 0 {
			return
		}
		p.commit(batch)
	}
}

// commit writes a batch, retrying while PostgreSQL is unavailable (the queue fills up
// meanwhile and pushes back on the sessions), then publishes what was committed.
func (p *commitShard) commit(batch []pendingEvent) {
	// The events' bytes are free once the batch is written, published or given up.
	var held int64
	for _, e := range batch {
		held += e.weight
	}
	defer p.queued.Release(held)
	// Flush marks are answered once the events before them are: after this batch.
	events := batch[:0]
	var marks []pendingEvent
	for _, e := range batch {
		if e.flush {
			marks = append(marks, e)
		} else {
			events = append(events, e)
		}
	}
	defer answerMarks(marks)
	batch = events
	for i := range batch {
		if batch[i].build != nil {
			batch[i].data, batch[i].build = batch[i].build(), nil
		}
		// Events carry what targets sent: a U+0000 in it would make PostgreSQL refuse it.
		batch[i].data = db.StorableJSON(batch[i].data)
	}
	batch, ids := p.parseIDs(batch)
	if len(batch) == 0 {
		return
	}
	p.commitPart(batch, ids)
}

// commitPart writes events and publishes them. When PostgreSQL refuses them for their data
// (db.ErrInvalidInput: a value jsonb cannot hold that StorableJSON does not fix, such as
// bytes that are not UTF-8 or a number beyond numeric's range), it commits each half on its
// own, down to the events at fault, which alone are dropped: one target's value must not
// cost other sessions, or other tenants, their events. A refused statement wrote nothing
// and took no seq, so seqs stay gapless, and the halves go in order, so each session's
// events keep theirs. A single poisoned event among n costs about 2·log2(n) more statements.
func (p *commitShard) commitPart(batch []pendingEvent, ids []sessionKey) {
	allocs, err := p.write(batch, ids)
	switch {
	case err == nil:
		if again, againIDs := p.publish(batch, ids, allocs); len(again) > 0 {
			p.commitPart(again, againIDs)
		}
	case errors.Is(err, db.ErrInvalidInput) && len(batch) > 1:
		half := len(batch) / 2
		p.commitPart(batch[:half], ids[:half])
		p.commitPart(batch[half:], ids[half:])
	case len(batch) == 1:
		e := batch[0]
		p.logger.Error("persist event failed; dropping it", slog.String("tenant_id", e.tenantID),
			slog.String("session_id", e.sessionID), slog.String("type", string(e.typ)), slog.Any("error", err))
		p.fail(batch, err)
	default:
		p.logger.Error("persist events failed; dropping batch", slog.Int("events", len(batch)), slog.Any("error", err))
		p.fail(batch, err)
	}
}

// answerMarks answers flush marks.
func answerMarks(marks []pendingEvent) {
	for _, m := range marks {
		m.committed <- commitResult{}
	}
}

// fail answers the events that were not committed.
func (p *commitShard) fail(batch []pendingEvent, err error) {
	for _, e := range batch {
		if e.committed != nil {
			e.committed <- commitResult{err: fmt.Errorf("persist events: %w", err)}
		}
	}
}

// allocation is what tapline_append_events answered for a session: its first seq, or that
// it refused the session's events.
type allocation struct {
	first   int64
	refused bool
}

// write commits events in one statement, retrying while PostgreSQL is unavailable, and
// returns each session's allocation.
func (p *commitShard) write(batch []pendingEvent, ids []sessionKey) (map[sessionKey]allocation, error) {
	start := time.Now()
	n := len(batch)
	// UUIDs go as binary uuid[]: pgx encodes strings into uuid[] only after failing the
	// binary format, and that failure formats the whole array into an error message.
	tenants := make([]pgtype.UUID, n)
	sessions := make([]pgtype.UUID, n)
	epochs := make([]int64, n)
	types := make([]string, n)
	datas := make([][]byte, n)
	ats := make([]time.Time, n)
	for i, e := range batch {
		tenants[i] = pgtype.UUID{Bytes: ids[i].tenant, Valid: true}
		sessions[i] = pgtype.UUID{Bytes: ids[i].session, Valid: true}
		epochs[i], types[i], datas[i], ats[i] = e.epoch, string(e.typ), e.data, e.at
	}
	delay := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		allocs := map[sessionKey]allocation{}
		// The batch may be committed only once: do not reuse a context that a stopping
		// worker cancels half way.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rows, err := p.pool.Query(ctx, `select tenant_id, session_id, first_seq, refused from tapline_append_events($1, $2, $3, $4, $5, $6)`,
			tenants, sessions, epochs, types, datas, ats)
		if err == nil {
			for rows.Next() {
				var t, s [16]byte
				var first *int64
				var refused bool
				if err = rows.Scan(&t, &s, &first, &refused); err != nil {
					break
				}
				a := allocation{refused: refused}
				if first != nil {
					a.first = *first
				}
				allocs[sessionKey{t, s}] = a
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		cancel()
		if err == nil {
			if p.onCommitted != nil {
				p.onCommitted(n, time.Since(start))
			}
			return allocs, nil
		}
		err = db.InterpretError(err)
		if !errors.Is(err, db.ErrUnavailable) || attempt >= 600 {
			return nil, err
		}
		if attempt == 0 {
			p.logger.Warn("database unavailable; holding events", slog.Int("events", n), slog.Any("error", err))
		}
		time.Sleep(delay)
		delay = min(delay*2, 2*time.Second)
	}
}

// publish assigns the committed events their seqs in batch order, publishes them, session
// by session, in one pipeline, and answers every event.
//
// PostgreSQL refuses a session's events together when they carry different epochs
// (migrations/0019): those of a stale owner shared the batch with a newer owner's, as when a
// worker lost a session and won it back before its queue drained. The events of the newest
// epoch may be the current owner's, and nothing of the session was written: publish leaves
// them unanswered and returns them, to be committed again on their own.
func (p *commitShard) publish(batch []pendingEvent, ids []sessionKey, allocs map[sessionKey]allocation) (again []pendingEvent, againIDs []sessionKey) {
	newest := newestOfMixedEpochs(batch, ids, allocs)
	type published struct {
		seq     int64
		channel string
	}
	type refusal struct {
		session sessionKey
		epoch   int64
	}
	next := make(map[sessionKey]published, 16)
	pipe := p.rdb.Pipeline()
	var refusedSeen map[refusal]bool
	// Every message is cut from one buffer: the pipeline keeps them until Exec.
	size := 0
	for _, e := range batch {
		size += len(e.data) + 96
	}
	buf := make([]byte, 0, size)
	seqs := make([]int64, len(batch))
	for i, e := range batch {
		k := ids[i]
		a := allocs[k]
		if a.refused {
			if epoch, mixed := newest[k]; mixed && e.epoch == epoch {
				seqs[i] = 0 // answered when committed again
				again, againIDs = append(again, e), append(againIDs, k)
				continue
			}
			seqs[i] = -1
			if r := (refusal{k, e.epoch}); !refusedSeen[r] {
				if refusedSeen == nil {
					refusedSeen = map[refusal]bool{}
				}
				refusedSeen[r] = true
				if p.onRefused != nil {
					p.onRefused(e.tenantID, e.sessionID, e.epoch)
				}
			}
			continue
		}
		cur, ok := next[k]
		if !ok {
			cur = published{seq: a.first, channel: eventChannel(p.prefix, e.tenantID, e.sessionID)}
		}
		seqs[i] = cur.seq
		from := len(buf)
		buf = appendEventJSON(buf, cur.seq, e.typ, e.at, e.data)
		pipe.Publish(context.Background(), cur.channel, buf[from:len(buf):len(buf)])
		cur.seq++
		next[k] = cur
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	publishing := pipe.Len()
	if publishing > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			// Subscribers detect the gap and read the events from PostgreSQL.
			p.logger.Warn("publish events", slog.Any("error", err))
		}
	}
	for i, e := range batch {
		switch {
		case e.committed == nil || seqs[i] == 0:
		case seqs[i] < 0:
			e.committed <- commitResult{err: db.ErrStaleEpoch}
		default:
			e.committed <- commitResult{seq: seqs[i]}
		}
	}
	if p.onPublished != nil {
		p.onPublished(publishing)
	}
	return again, againIDs
}

// publishEvents publishes a session's events, committed by someone other than its owner's
// persister (the end of a session, by request or by its owner: see endAndReport), as the
// persister publishes its own. A follower that misses them, or gets them out of order with
// the owner's, reads them from PostgreSQL.
func publishEvents(ctx context.Context, rdb redis.UniversalClient, prefix, tenantID, sessionID string, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	channel := eventChannel(prefix, tenantID, sessionID)
	pipe := rdb.Pipeline()
	for _, e := range events {
		pipe.Publish(ctx, channel, appendEventJSON(nil, e.Seq, e.Type, e.At, e.Data))
	}
	_, err := pipe.Exec(ctx)
	return err
}

// newestOfMixedEpochs returns, for each refused session whose events in batch carry more
// than one epoch, the newest of those epochs. It allocates nothing when no session was
// refused, as nearly always.
func newestOfMixedEpochs(batch []pendingEvent, ids []sessionKey, allocs map[sessionKey]allocation) map[sessionKey]int64 {
	refused := false
	for _, a := range allocs {
		refused = refused || a.refused
	}
	if !refused {
		return nil
	}
	newest, mixed := map[sessionKey]int64{}, map[sessionKey]bool{}
	for i, e := range batch {
		k := ids[i]
		if !allocs[k].refused {
			continue
		}
		if cur, seen := newest[k]; !seen || e.epoch > cur {
			mixed[k] = seen
			newest[k] = e.epoch
		} else if e.epoch != cur {
			mixed[k] = true
		}
	}
	for k := range newest {
		if !mixed[k] {
			delete(newest, k)
		}
	}
	return newest
}

// sessionKey is a session's tenant and id as UUID bytes.
type sessionKey struct{ tenant, session [16]byte }

// parseIDs returns the batch's events with their ids parsed. An event whose ids are not
// UUIDs is answered with an error and left out; runners only emit for sessions read from
// the database, so this does not happen, but PostgreSQL would refuse the whole batch.
func (p *commitShard) parseIDs(batch []pendingEvent) ([]pendingEvent, []sessionKey) {
	out := batch[:0]
	ids := make([]sessionKey, 0, len(batch))
	for _, e := range batch {
		t, err1 := uuid.Parse(e.tenantID)
		s, err2 := uuid.Parse(e.sessionID)
		if err1 != nil || err2 != nil {
			p.logger.Error("event for a malformed session id dropped", slog.String("session_id", e.sessionID))
			if e.committed != nil {
				e.committed <- commitResult{err: fmt.Errorf("persist events: malformed session id %q", e.sessionID)}
			}
			continue
		}
		out = append(out, e)
		ids = append(ids, sessionKey{t, s})
	}
	return out, ids
}

// appendEventJSON appends the Event as json.Marshal encodes it, except that data goes as it
// is: it is JSON that PostgreSQL has just accepted as jsonb, and compacting and re-checking
// it cost as much as the rest of the publish. Readers decode it.
func appendEventJSON(buf []byte, seq int64, typ EventType, at time.Time, data json.RawMessage) []byte {
	buf = append(buf, `{"seq":`...)
	buf = strconv.AppendInt(buf, seq, 10)
	buf = append(buf, `,"type":`...)
	buf = appendJSONString(buf, string(typ))
	buf = append(buf, `,"at":"`...)
	buf = at.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","data":`...)
	if len(data) == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, data...)
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string; event types are plain ASCII names, anything
// else goes through encoding/json.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}
