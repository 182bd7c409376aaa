package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/tracker"
)

// sessionRunner holds one session's live MCP connection for the worker that owns it.
type sessionRunner struct {
	rt     *Runtime
	lease  *tracker.Lease
	tenant string
	id     string
	epoch  int64
	logger *slog.Logger

	ctx    context.Context // cancelled when the runner stops
	cancel context.CancelFunc
	done   chan struct{}

	mu            sync.Mutex
	sess          *Session
	client        *mcp.Client
	cs            *mcp.ClientSession
	connCancel    context.CancelFunc // ends cs's context, which its streams read with
	parkedCancel  context.CancelFunc // expires the requests the target parked on cs
	connected     chan struct{}      // closed once the first connection attempt ended
	calls         map[string]context.CancelFunc
	callsRunning  inflight                 // calls being run
	parkedWaiting inflight                 // handlers of requests the target parked
	waiters       map[string]chan struct{} // pending request id → doorbell
	roots         []Root
	resumable     []resumableCall
	lastActivity  time.Time
	stale         bool
	reconnectWant chan struct{}
	watchers      watchersRecord
	// connGen counts the connections made; a refusal names the one it came on. probing is
	// set while a ping asks the target whether it still takes the connection (refused).
	connGen atomic.Uint64
	probing atomic.Bool
}

// watchersRecord is what a runner needs to record its session's presence once it settles.
type watchersRecord struct {
	timer *time.Timer // runs recordWatchers; nil until the first ring
	since time.Time   // the first ring not recorded yet; zero when none is waiting
	// recording serializes recordWatchers, which the timer may start again while one runs;
	// last is the data of the last watchers event this runner recorded.
	recording sync.Mutex
	last      string
}

func newSessionRunner(rt *Runtime, lease *tracker.Lease, sess *Session) *sessionRunner {
	ctx, cancel := context.WithCancel(context.Background())
	return &sessionRunner{
		rt: rt, lease: lease, tenant: sess.TenantID, id: sess.ID, epoch: sess.Epoch, sess: sess,
		logger: rt.logger.With(slog.String("tenant_id", sess.TenantID), slog.String("session_id", sess.ID)),
		ctx:    ctx, cancel: cancel, done: make(chan struct{}),
		connected: make(chan struct{}), calls: map[string]context.CancelFunc{}, waiters: map[string]chan struct{}{},
		roots: sess.Roots, lastActivity: time.Now(), reconnectWant: make(chan struct{}, 1),
	}
}

// emit appends an event for this session; it is published once committed.
func (r *sessionRunner) emit(typ EventType, data any) {
	raw, err := json.Marshal(data)
	if err != nil {
		r.logger.Error("encode event", slog.String("type", string(typ)), slog.Any("error", err))
		return
	}
	r.emitRaw(typ, raw)
}

func (r *sessionRunner) emitRaw(typ EventType, raw json.RawMessage) {
	if r.isStale() {
		return
	}
	_ = r.rt.persister.append(r.ctx, pendingEvent{tenantID: r.tenant, sessionID: r.id, epoch: r.epoch, typ: typ, data: raw, at: eventTime()})
}

// emitLazy records an event whose data build encodes once the persister takes it up, so
// the encoding is not on the path of the request that produced it. size is about the bytes
// build holds on to until then.
func (r *sessionRunner) emitLazy(typ EventType, size int, build func() json.RawMessage) {
	if r.isStale() {
		return
	}
	_ = r.rt.persister.append(r.ctx, pendingEvent{tenantID: r.tenant, sessionID: r.id, epoch: r.epoch, typ: typ, build: build, size: int64(size), at: eventTime()})
}

// eventTime is an event's time, to the microsecond PostgreSQL keeps: a live event and its
// replay from the database carry the same time.
func eventTime() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func (r *sessionRunner) isStale() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stale
}

// markStale stops all writes: a newer owner exists (lease lost or refused by PostgreSQL).
func (r *sessionRunner) markStale() {
	r.mu.Lock()
	r.stale = true
	r.mu.Unlock()
	r.cancel()
}

// ownerWrite runs a fenced store write; a stale epoch stops the runner.
func (r *sessionRunner) ownerWrite(err error) error {
	if errors.Is(err, db.ErrStaleEpoch) {
		r.logger.Warn("a newer owner exists; dropping the session")
		r.markStale()
	}
	return err
}

// ownerWriteRetry runs a fenced store write, retrying while PostgreSQL is unavailable: an
// outage delays an owner's write (a call's result, a status) instead of losing it, and is no
// reason to give the session up. It stops retrying when the runner stops; a stale epoch stops
// the runner.
func (r *sessionRunner) ownerWriteRetry(write func(ctx context.Context) error) error {
	delay := 100 * time.Millisecond
	for logged := false; ; {
		err := write(context.WithoutCancel(r.ctx))
		if !errors.Is(err, db.ErrUnavailable) {
			return r.ownerWrite(err)
		}
		if !logged {
			r.logger.Warn("database unavailable; retrying the write", slog.Any("error", err))
			logged = true
		}
		select {
		case <-r.ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// sweepInterval is how often a runner looks for queued calls whose doorbell never reached it
// (a command lost with Redis, a dispatch refused while PostgreSQL was away).
const sweepInterval = 5 * time.Second

// run connects and keeps the session until the runner is stopped, the session is closed or
// the lease is lost.
func (r *sessionRunner) run(moved *movedFrom) {
	defer close(r.done)
	defer r.disconnect()
	defer r.stopWatchers()
	if moved != nil {
		r.takeOver(moved)
	}
	r.connectWithRetry()
	idle := time.NewTicker(idleCheckInterval(r.rt.cfg.IdleClose))
	defer idle.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	for {
		var waitDone <-chan struct{}
		if cs := r.session(); cs != nil {
			waitDone = sessionEnded(cs)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-r.lease.Done():
			r.logger.Warn("lease lost; dropping the session")
			r.markStale()
			return
		case <-waitDone:
			if r.ctx.Err() != nil {
				return
			}
			r.logger.Info("connection to the target ended; reconnecting")
			r.setConnection(nil)
			r.connectWithRetry()
		case <-r.reconnectWant:
			r.disconnect()
			r.connectWithRetry()
		case <-idle.C:
			r.closeIfIdle()
		case <-sweep.C:
			r.dispatchQueued()
		}
	}
}

var endedCache sync.Map // *mcp.ClientSession → chan struct{}

// sessionEnded returns a channel closed when cs's connection ends.
func sessionEnded(cs *mcp.ClientSession) <-chan struct{} {
	if ch, ok := endedCache.Load(cs); ok {
		return ch.(chan struct{})
	}
	ch := make(chan struct{})
	if prev, loaded := endedCache.LoadOrStore(cs, ch); loaded {
		return prev.(chan struct{})
	}
	go func() {
		_ = cs.Wait()
		close(ch)
		endedCache.Delete(cs)
	}()
	return ch
}

func (r *sessionRunner) session() *mcp.ClientSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cs
}

func (r *sessionRunner) setConnection(cs *mcp.ClientSession) {
	r.mu.Lock()
	r.cs = cs
	r.mu.Unlock()
}

// inflight counts what is running and tells when nothing is. Unlike a sync.WaitGroup it may
// be waited on while more enters: a connection closing waits for its calls and parked
// requests while the target can still send another.
type inflight struct {
	mu    sync.Mutex
	n     int
	empty chan struct{} // closed while n is 0; nil stands for closed
}

func (f *inflight) enter() {
	f.mu.Lock()
	if f.n == 0 {
		f.empty = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inflight) leave() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.empty)
	}
	f.mu.Unlock()
}

// idle returns a channel closed once nothing that has entered is running.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return closedChan
	}
	return f.empty
}

// movedFrom says the session was held before by another owner.
type movedFrom struct {
	node  string
	epoch int64
}

// takeOver ends what belonged to the previous owner's connection: running calls are
// interrupted, its pending requests expire.
func (r *sessionRunner) takeOver(m *movedFrom) {
	ctx := r.ctx
	r.emit(EventSessionMoved, map[string]any{"from_worker": m.node, "to_worker": r.rt.nodeID, "epoch": r.epoch})
	// A previous owner that died between recording a call's end and committing its
	// call_result event left the event out: emit it now, before this takeover ends calls of
	// its own (whose events are not committed yet and must not be taken for missing).
	var unreported []Call
	if err := r.ownerWriteRetry(func(ctx context.Context) (err error) {
		unreported, err = r.rt.store.unreportedCalls(ctx, r.tenant, r.id, r.epoch)
		return err
	}); err != nil {
		r.logger.Warn("list unreported calls", slog.Any("error", err))
	}
	for _, c := range unreported {
		ev := callResultEvent(&c)
		ev["recovered"] = true
		r.emit(EventCallResult, ev)
	}
	var calls []Call
	if err := r.ownerWriteRetry(func(ctx context.Context) (err error) {
		calls, err = r.rt.store.openCalls(ctx, r.tenant, r.id)
		return err
	}); err != nil {
		r.logger.Warn("list open calls", slog.Any("error", err))
	}
	for _, c := range calls {
		if c.Status != CallRunning {
			continue // queued calls never reached the target; they are dispatched below
		}
		if round, err := r.rt.store.inputRound(ctx, r.tenant, r.id, c.ID); err == nil && len(round) > 0 && roundAnswerable(round) {
			// A 2026-07-28 call waiting for input carries its own state: the new owner
			// retries it once the round is answered.
			r.resumable = append(r.resumable, resumableCall{call: c, round: round})
			continue
		}
		errJSON, _ := json.Marshal(map[string]string{"message": "interrupted: the worker holding the session stopped while the call ran"})
		applied := false
		if r.ownerWriteRetry(func(ctx context.Context) (err error) {
			_, applied, err = r.rt.store.updateCallAsOwner(ctx, r.tenant, r.id, c.ID, r.epoch, callUpdate{Status: CallInterrupted, Error: errJSON})
			return err
		}) == nil && applied {
			// Not applied: the call ended meanwhile (its session closed), and what ended it
			// reported it.
			r.emit(EventCallResult, map[string]any{"call_id": c.ID, "ok": false, "status": CallInterrupted, "error": json.RawMessage(errJSON)})
		}
	}
	var ids []string
	if err := r.ownerWriteRetry(func(ctx context.Context) (err error) {
		ids, err = r.rt.store.expireOldPending(ctx, r.tenant, r.id, r.epoch)
		return err
	}); err != nil {
		r.logger.Warn("expire pending", slog.Any("error", err))
	}
	for _, id := range ids {
		r.emit(EventPendingResolved, map[string]any{"request_id": id, "status": PendingExpired, "reason": "the connection that received it ended"})
	}
}

// connectWithRetry connects, retrying transient failures a few times before the session
// goes to the error state.
func (r *sessionRunner) connectWithRetry() {
	defer func() {
		r.mu.Lock()
		select {
		case <-r.connected:
		default:
			close(r.connected)
		}
		r.mu.Unlock()
	}()
	delay := 500 * time.Millisecond
	var err error
	for attempt := 1; attempt <= r.rt.cfg.ConnectAttempts; attempt++ {
		if r.ctx.Err() != nil {
			return
		}
		err = r.connect()
		if err == nil {
			return
		}
		if r.isStale() || errors.Is(err, errSessionEnded) {
			return
		}
		if errors.Is(err, db.ErrUnavailable) {
			// Our database is away, not the target: wait for it without using up attempts.
			attempt--
		}
		r.logger.Info("connect failed", slog.Int("attempt", attempt), slog.Any("error", err))
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
	// An errored session needs no owner until someone asks to reconnect, which may be days
	// later or never: the calls it holds fail now, saying why, instead of waiting for that.
	msg := err.Error()
	r.endSession(StatusError, msg, failedEnd(msg), map[string]any{"state": StatusError, "error": msg})
}

func (r *sessionRunner) connect() error {
	ctx, cancel := context.WithTimeout(r.ctx, r.rt.cfg.ConnectTimeout)
	defer cancel()
	st := StatusConnecting
	empty := ""
	if err := r.ownerStatus(ctx, OwnerUpdate{Status: &st, Error: &empty}); err != nil {
		return err
	}
	r.emit(EventStatus, map[string]any{"state": StatusConnecting})

	sess, err := r.rt.store.GetSession(ctx, r.tenant, r.id)
	if err != nil {
		return err
	}
	sealed, err := r.rt.store.sessionSecrets(ctx, r.tenant, r.id)
	if err != nil {
		return err
	}
	secrets, err := openSecrets(r.rt.cfg.Keys, r.tenant, r.id, sealed)
	if err != nil {
		return err
	}
	secretNames := make([]string, 0, len(secrets.Headers))
	for k := range secrets.Headers {
		secretNames = append(secretNames, k)
	}
	target, err := url.Parse(sess.Target.URL)
	if err != nil {
		return fmt.Errorf("target url: %w", err)
	}
	tap := &tapTransport{
		next: r.rt.transport, headers: secrets.Headers, bearer: secrets.BearerToken, origin: originOf(target), secret: secretNames,
		sink: func(size int, build func() json.RawMessage) { r.emitLazy(EventFrame, size, build) },
	}

	// The connection lives in a context of its own, which disconnect ends: go-sdk keeps the
	// context given to Connect for the connection's streams (the legacy SSE transport reads
	// its event stream with it), so the connect timeout must end the attempt, not the
	// connection that came of it.
	connCtx, connCancel := context.WithCancel(r.ctx)
	parkedCtx, parkedCancel := context.WithCancel(connCtx)
	client := mcp.NewClient(&mcp.Implementation{Name: "tapline", Title: "Tapline inspector", Version: r.rt.cfg.Version}, r.clientOptions(parkedCtx))
	for _, root := range sess.Roots {
		client.AddRoots(&mcp.Root{URI: root.URI, Name: root.Name})
	}
	var transport mcp.Transport
	if sess.Target.Transport == TransportSSE {
		httpClient := &http.Client{Transport: tap, CheckRedirect: r.rt.cfg.Guard.CheckRedirect}
		transport = &mcp.SSEClientTransport{Endpoint: sess.Target.URL, HTTPClient: httpClient, MaxEventSize: maxBodySize}
	} else {
		// A target refusing one request over HTTP must not cost the session its connection,
		// unless it refuses them all (refused).
		gen := r.connGen.Add(1)
		refusals := refusalTransport{next: tap, refused: func(method string) { r.refused(gen, method) }}
		httpClient := &http.Client{Transport: refusals, CheckRedirect: r.rt.cfg.Guard.CheckRedirect}
		transport = &mcp.StreamableClientTransport{Endpoint: sess.Target.URL, HTTPClient: httpClient, MaxEventSize: maxBodySize, MaxRetries: 2}
	}
	var opts *mcp.ClientSessionOptions
	if sess.Target.ProtocolVersion != "" && sess.Target.ProtocolVersion != "auto" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: sess.Target.ProtocolVersion}
	}
	stopTimeout := context.AfterFunc(ctx, connCancel)
	cs, err := client.Connect(connCtx, transport, opts)
	if !stopTimeout() && err == nil {
		// The timeout struck as the connection came up: it is already cancelled.
		_ = cs.Close()
		err = ctx.Err()
	}
	if err != nil {
		parkedCancel()
		connCancel()
		return fmt.Errorf("connect to %s: %w", sess.Target.URL, err)
	}
	ir := cs.InitializeResult()
	upd := OwnerUpdate{Status: ptr(StatusReady), Error: &empty}
	if ir != nil {
		upd.ProtocolVersion = &ir.ProtocolVersion
		upd.Instructions = &ir.Instructions
		if ir.ServerInfo != nil {
			upd.ServerInfo, _ = json.Marshal(ir.ServerInfo)
		} else {
			upd.ServerInfo = json.RawMessage(`{}`)
		}
		if ir.Capabilities != nil {
			upd.Capabilities, _ = json.Marshal(ir.Capabilities)
		} else {
			upd.Capabilities = json.RawMessage(`{}`)
		}
	}
	r.mu.Lock()
	r.client, r.cs, r.connCancel, r.parkedCancel, r.roots = client, cs, connCancel, parkedCancel, sess.Roots
	r.mu.Unlock()

	// Restore what the session had: logging level and resource subscriptions.
	if sess.LoggingLevel != "" {
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: mcp.LoggingLevel(sess.LoggingLevel)}); err != nil {
			r.logger.Info("restore logging level", slog.Any("error", err))
		}
	}
	for _, uri := range sess.Subscriptions {
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			r.logger.Info("restore subscription", slog.String("uri", uri), slog.Any("error", err))
		}
	}
	if err := r.ownerStatus(ctx, upd); err != nil {
		r.disconnect()
		return err
	}
	pv := ""
	if ir != nil {
		pv = ir.ProtocolVersion
	}
	r.emit(EventStatus, map[string]any{"state": StatusReady, "protocol_version": pv})
	r.logger.Info("session connected", slog.String("protocol_version", pv))
	// Calls queued while nobody held the session go out now, and input rounds of calls
	// that moved here continue.
	r.dispatchQueued()
	r.mu.Lock()
	resumable := r.resumable
	r.resumable = nil
	r.mu.Unlock()
	for _, rc := range resumable {
		r.resumeInputCall(rc.call, rc.round)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// refusalProbeTimeout bounds the ping that follows a refusal.
const refusalProbeTimeout = 10 * time.Second

// refused reacts to the target's refusal of one request on connection gen (see
// refusalTransport). Any request but a ping may be refused for itself, such as a method the
// target does not handle, so it only asks the target for a ping, one at a time. A refused
// ping means the target no longer takes the connection (a server that lost its session and
// says so with a 400): the session reconnects, as it does when the target ends the session
// with a 404. It runs on the refused request's goroutine, so it takes no lock.
func (r *sessionRunner) refused(gen uint64, method string) {
	if gen != r.connGen.Load() {
		return // an earlier connection's
	}
	if method == "ping" {
		r.logger.Warn("the target refuses even a ping on this connection; reconnecting")
		select {
		case r.reconnectWant <- struct{}{}:
		default:
		}
		return
	}
	if !r.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.probing.Store(false)
		cs := r.session()
		if cs == nil || gen != r.connGen.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, refusalProbeTimeout)
		defer cancel()
		_ = cs.Ping(ctx, nil) // its refusal comes back here
	}()
}

// ownerStatus records the owner's change of its session's status, fenced. A session that
// is no longer live (closed by request while the owner connected) stays as it is, and the
// runner stops: what the session held is the close's to end (endWithSession).
func (r *sessionRunner) ownerStatus(ctx context.Context, u OwnerUpdate) error {
	err := r.ownerWrite(r.rt.store.updateAsOwner(ctx, r.tenant, r.id, r.epoch, u))
	if errors.Is(err, errSessionEnded) {
		r.logger.Info("the session ended while connecting; dropping it")
		r.cancel()
	}
	return err
}

// disconnect closes the live connection. Requests the target parked on it expire first, as
// go-sdk's Close waits for in-flight handlers; nobody could send their answers on another
// connection.
func (r *sessionRunner) disconnect() {
	r.mu.Lock()
	cs, connCancel := r.cs, r.connCancel
	r.cs, r.connCancel = nil, nil
	r.mu.Unlock()
	if connCancel != nil {
		defer connCancel()
	}
	// Let cancelled calls unwind (go-sdk sends notifications/cancelled) and expired requests
	// answer the target before closing: Close waits for the connection to be idle, and a
	// target may wait for its answers before it lets the connection go.
	select {
	case <-r.cancelRunning():
	case <-time.After(2 * time.Second):
	}
	if cs != nil {
		done := make(chan struct{})
		go func() { _ = cs.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			r.logger.Warn("closing the target connection timed out")
		}
	}
}

// cancelRunning cancels the running calls and expires the requests the target parked on
// the live connection; the channel it returns is closed once all of them have unwound.
func (r *sessionRunner) cancelRunning() <-chan struct{} {
	r.mu.Lock()
	for _, cancel := range r.calls {
		cancel()
	}
	parkedCancel := r.parkedCancel
	r.mu.Unlock()
	if parkedCancel != nil {
		parkedCancel()
	}
	unwound := make(chan struct{})
	go func() { <-r.callsRunning.idle(); <-r.parkedWaiting.idle(); close(unwound) }()
	return unwound
}

// closeByRequest ends the session for the api, which already stored the close, ended the
// session's open calls and parked requests and recorded their events with the close's
// (endWithSession): the runner lets go of what it ended (letGo).
func (r *sessionRunner) closeByRequest(ctx context.Context) {
	r.letGo(ctx)
}

// letGo stops the runner once its session's end is committed with its report: the calls
// running here are cancelled at the target and the requests parked here expire, each finding
// itself ended and reporting nothing again, so each is reported once, by the end. Then the
// runner stops, which lets the connection go.
func (r *sessionRunner) letGo(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	select {
	case <-r.cancelRunning():
	case <-ctx.Done():
	}
	r.cancel()
}

// endSession ends the session from its owner (idle, or its target unreachable): the status,
// the end of its open calls and parked requests and the report of the end (their call_result
// and pending_resolved events, then status) are one fenced transaction (endSessionAsOwner),
// as a close by request's are; the report is published once committed. What the owner
// recorded before is committed first, so the end comes after it in the history. A session the
// api closed meanwhile is left to that close, which reported it.
func (r *sessionRunner) endSession(to Status, reason string, how sessionEnd, status map[string]any) {
	if err := r.rt.persister.flush(r.ctx, r.id); err != nil && r.ctx.Err() == nil && !errors.Is(err, errPersisterStopped) {
		r.logger.Warn("wait for the events recorded before the end", slog.Any("error", err))
	}
	var reported []Event
	err := r.ownerWriteRetry(func(ctx context.Context) (err error) {
		reported, err = r.rt.store.endSessionAsOwner(ctx, r.tenant, r.id, r.epoch, to, reason, how, status)
		return err
	})
	if err != nil || reported == nil {
		if err != nil && r.ctx.Err() == nil && !r.isStale() {
			r.logger.Warn("end the session", slog.String("status", string(to)), slog.Any("error", err))
		}
		r.cancel()
		return
	}
	ctx := context.WithoutCancel(r.ctx)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := r.rt.persister.publishCommitted(pctx, r.tenant, r.id, reported); err != nil {
		// Followers read what they missed from PostgreSQL.
		r.logger.Warn("publish the end of the session", slog.Int("events", len(reported)), slog.Any("error", err))
	}
	cancel()
	r.letGo(ctx)
}

// stop ends the runner and waits for it.
func (r *sessionRunner) stop() {
	r.cancel()
	<-r.done
}

func (r *sessionRunner) touch() {
	r.mu.Lock()
	r.lastActivity = time.Now()
	r.mu.Unlock()
}

// closeIfIdle closes the session when nobody used it for IdleClose and nobody watches it.
func (r *sessionRunner) closeIfIdle() {
	if r.rt.cfg.IdleClose <= 0 {
		return
	}
	r.mu.Lock()
	idleFor := time.Since(r.lastActivity)
	running := len(r.calls) + len(r.waiters)
	r.mu.Unlock()
	if idleFor < r.rt.cfg.IdleClose || running > 0 {
		return
	}
	if streams, err := r.rt.cfg.Tracker.StreamsOf(r.ctx, r.tenant, r.id); err == nil && len(streams) > 0 {
		r.touch()
		return
	}
	r.logger.Info("closing the session after being idle")
	r.endSession(StatusClosed, "closed after being idle", closeEnd, map[string]any{"state": StatusClosed, "reason": "idle"})
}

// idleCheckInterval is how often a runner asks whether its session has been idle for
// IdleClose: often enough that the close comes at most a quarter late.
func idleCheckInterval(idleClose time.Duration) time.Duration {
	if idleClose <= 0 {
		return time.Minute
	}
	return min(time.Minute, max(idleClose/4, 10*time.Millisecond))
}

// clientOptions wires go-sdk's handlers to events and pending requests. parked ends when the
// connection does: the requests parked on it expire then.
func (r *sessionRunner) clientOptions(parked context.Context) *mcp.ClientOptions {
	return &mcp.ClientOptions{
		Logger: r.logger,
		// Input requests of 2026-07-28 tool calls are parked for a person (see runCall), not
		// answered in memory, so they survive a worker's death.
		MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{ListChanged: true},
			Sampling:    &mcp.SamplingCapabilities{},
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (res *mcp.CreateMessageResult, err error) {
			defer r.recoverHandler(&err)
			var out mcp.CreateMessageResult
			if err := r.park(ctx, parked, PendingSampling, req.Params, &out); err != nil {
				return nil, err
			}
			return &out, nil
		},
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (res *mcp.ElicitResult, err error) {
			defer r.recoverHandler(&err)
			var out mcp.ElicitResult
			if err := r.park(ctx, parked, PendingElicitation, elicitParams(req.Params), &out); err != nil {
				return nil, err
			}
			return &out, nil
		},
		ElicitationCompleteHandler: func(_ context.Context, req *mcp.ElicitationCompleteNotificationRequest) {
			r.notification("notifications/elicitation/complete", req.Params)
		},
		ToolListChangedHandler: func(_ context.Context, req *mcp.ToolListChangedRequest) {
			r.notification("notifications/tools/list_changed", req.Params)
		},
		PromptListChangedHandler: func(_ context.Context, req *mcp.PromptListChangedRequest) {
			r.notification("notifications/prompts/list_changed", req.Params)
		},
		ResourceListChangedHandler: func(_ context.Context, req *mcp.ResourceListChangedRequest) {
			r.notification("notifications/resources/list_changed", req.Params)
		},
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			r.notification("notifications/resources/updated", req.Params)
		},
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) {
			r.notification("notifications/message", req.Params)
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			r.progress(req.Params)
		},
	}
}

func (r *sessionRunner) recoverHandler(err *error) {
	if p := recover(); p != nil {
		r.logger.Error("handler panic", slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
		*err = fmt.Errorf("internal error in the inspector")
	}
}

func (r *sessionRunner) notification(method string, params any) {
	r.emit(EventNotification, map[string]any{"method": method, "params": params})
}

// progress turns a progress notification into a progress event for its call.
func (r *sessionRunner) progress(p *mcp.ProgressNotificationParams) {
	if p == nil {
		return
	}
	callID, _ := p.ProgressToken.(string)
	pr := Progress{Progress: p.Progress, Message: p.Message}
	if p.Total > 0 {
		total := p.Total
		pr.Total = &total
	}
	ev := map[string]any{"call_id": callID, "progress": pr.Progress}
	if pr.Total != nil {
		ev["total"] = *pr.Total
	}
	if pr.Message != "" {
		ev["message"] = pr.Message
	}
	r.emit(EventProgress, ev)
	if callID != "" && validID(callID) {
		_, _, err := r.rt.store.updateCallAsOwner(r.ctx, r.tenant, r.id, callID, r.epoch, callUpdate{Progress: &pr})
		_ = r.ownerWrite(err)
	}
}

// park stores a server→client request as pending, waits for a person's answer (or the
// timeout, or the end of conn, the connection it came on) and decodes the answer into out.
func (r *sessionRunner) park(ctx, conn context.Context, kind PendingKind, params any, out any) error {
	r.parkedWaiting.enter()
	defer r.parkedWaiting.leave()
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.rt.cfg.PendingTimeout)
	defer cancel()
	// The handler must end before the connection closes (go-sdk waits for it).
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	stopAfter := context.AfterFunc(conn, func() { cancelCause(errConnectionEnded) })
	defer stopAfter()
	p, err := r.parkRow(ctx, kind, raw, nil)
	if err != nil {
		return err
	}
	final, err := r.awaitAnswer(ctx, p)
	if err != nil {
		return err
	}
	return r.deliverAnswer(final, out)
}

// parkRow inserts a pending row and announces it.
func (r *sessionRunner) parkRow(ctx context.Context, kind PendingKind, raw json.RawMessage, in *pendingInput) (*Pending, error) {
	p, err := r.rt.store.insertPending(ctx, r.tenant, r.id, r.epoch, kind, raw, time.Now().Add(r.rt.cfg.PendingTimeout), in)
	if err != nil {
		_ = r.ownerWrite(err)
		return nil, fmt.Errorf("park request: %w", err)
	}
	ev := map[string]any{"request_id": p.RequestID, "kind": kind, "params": json.RawMessage(raw), "expires_at": p.ExpiresAt.UTC()}
	if in != nil {
		ev["call_id"] = in.CallID
	}
	r.emit(EventPendingRequest, ev)
	return p, nil
}

// awaitAnswer waits until p is no longer pending and returns it; when ctx ends first, p is
// expired (unless it was answered meanwhile).
func (r *sessionRunner) awaitAnswer(ctx context.Context, p *Pending) (*Pending, error) {
	bell := make(chan struct{}, 1)
	r.mu.Lock()
	r.waiters[p.RequestID] = bell
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, p.RequestID)
		r.mu.Unlock()
	}()
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for {
		cur, err := r.rt.store.GetPending(context.WithoutCancel(ctx), r.tenant, r.id, p.RequestID)
		if err == nil && cur.Status != PendingWaiting {
			return cur, nil
		}
		if time.Now().After(p.ExpiresAt) {
			ctx = expiredContext{ctx}
		}
		select {
		case <-ctx.Done():
			reason := "nobody answered in time"
			if errors.Is(context.Cause(ctx), errConnectionEnded) {
				reason = "the connection ended"
			}
			if r.ctx.Err() != nil {
				if p.Kind == PendingInputRequired {
					// It carries its own state: the next owner picks it up.
					return nil, r.ctx.Err()
				}
				reason = "the connection ended"
			}
			// Fenced: a stale owner (paused past its lease) must not touch the new owner's rows.
			cur, changed, err := r.rt.store.expirePendingAsOwner(context.WithoutCancel(ctx), r.tenant, r.id, p.RequestID, r.epoch)
			if err != nil {
				return nil, r.ownerWrite(err)
			}
			if changed {
				r.emit(EventPendingResolved, map[string]any{"request_id": p.RequestID, "status": PendingExpired, "reason": reason})
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "request expired: " + reason}
			}
			return cur, nil
		case <-bell:
		case <-poll.C:
		}
	}
}

// errConnectionEnded ends the wait for an answer to a request whose connection ended.
var errConnectionEnded = errors.New("the connection ended")

// expiredContext is a context whose deadline has passed: a parked request past its
// expires_at (set by an earlier owner) ends like one whose timer fired.
type expiredContext struct{ context.Context }

func (expiredContext) Done() <-chan struct{} { return closedChan }
func (expiredContext) Err() error            { return context.DeadlineExceeded }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// deliverAnswer emits pending_resolved and turns the stored answer into the handler's result.
func (r *sessionRunner) deliverAnswer(p *Pending, out any) error {
	r.touch()
	r.resolved(p)
	if p.Status == PendingExpired {
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "request expired"}
	}
	var a PendingAnswer
	if err := json.Unmarshal(p.Answer, &a); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	switch {
	case a.Error != nil:
		return &jsonrpc.Error{Code: a.Error.Code, Message: a.Error.Message, Data: a.Error.Data}
	case len(a.Result) > 0:
		return json.Unmarshal(a.Result, out)
	default:
		body := map[string]any{"action": a.Action}
		if a.Action == "accept" && len(a.Content) > 0 {
			body["content"] = a.Content
		}
		b, _ := json.Marshal(body)
		return json.Unmarshal(b, out)
	}
}

// resolved emits pending_resolved for a request its handler found resolved: answered or
// cancelled by a person, which only the handler reports. One it found expired was expired by
// someone else (the end of the session, a takeover), who reported it: a handler reports only
// the expiries it makes itself (awaitAnswer). So a request parked just before its session
// ended, whose handler had not started waiting yet, is reported once.
func (r *sessionRunner) resolved(p *Pending) {
	if p.Status == PendingExpired {
		return
	}
	r.emit(EventPendingResolved, map[string]any{"request_id": p.RequestID, "status": p.Status, "answered_by": p.AnsweredBy})
}

// ringPending wakes the handler waiting for a pending request's answer.
func (r *sessionRunner) ringPending(requestID string) {
	r.mu.Lock()
	w := r.waiters[requestID]
	r.mu.Unlock()
	if w != nil {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// dispatchQueued starts every queued call of the session.
func (r *sessionRunner) dispatchQueued() {
	calls, err := r.rt.store.openCalls(r.ctx, r.tenant, r.id)
	if err != nil {
		r.logger.Warn("list queued calls", slog.Any("error", err))
		return
	}
	for _, c := range calls {
		if c.Status == CallQueued {
			r.startCall(trace.SpanContext{}, c.ID, "")
		}
	}
}

// startCall runs a queued call in the background. The queued → running transition in
// PostgreSQL makes a doorbell delivered twice start it once.
//
// parent is the span of the command that rang for the call, so the call's trace continues
// the REST request's. notify, when set, is the api node waiting for the call: it is sent
// the finished call as soon as its row is committed (see Service.StartCall).
func (r *sessionRunner) startCall(parent trace.SpanContext, callID, notify string) {
	cs := r.session()
	if cs == nil {
		return // dispatched once connected
	}
	r.mu.Lock()
	if _, running := r.calls[callID]; running {
		r.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	if parent.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, parent)
	}
	r.calls[callID] = cancel
	r.callsRunning.enter()
	r.mu.Unlock()
	r.touch()
	go func() {
		defer r.callsRunning.leave()
		defer func() {
			r.mu.Lock()
			delete(r.calls, callID)
			r.mu.Unlock()
			cancel()
		}()
		defer func() {
			if p := recover(); p != nil {
				r.logger.Error("call panic", slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			}
		}()
		r.runCall(ctx, cs, callID, notify)
	}()
}

func (r *sessionRunner) runCall(ctx context.Context, cs *mcp.ClientSession, callID, notify string) {
	ctx, span := tracer.Start(ctx, "mcp tools/call", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("tenant.id", r.tenant), attribute.String("session.id", r.id), attribute.String("call.id", callID)))
	defer span.End()
	if !r.lease.Valid() {
		// Not renewed lately (Redis away, or this process was paused): the call stays queued
		// for whoever holds the session once the lease is sure again (see sweepInterval).
		return
	}
	call, started, err := r.claimCall(ctx, callID)
	if r.ownerWrite(err) != nil || !started {
		return
	}
	if call.Status != CallRunning {
		return
	}
	var args map[string]any
	_ = json.Unmarshal(call.Arguments, &args)
	params := &mcp.CallToolParams{Name: call.Name, Arguments: args}
	params.SetProgressToken(callID)
	res, callErr := cs.CallTool(ctx, params)
	r.finishCall(ctx, cs, callID, params, res, callErr, notify)
}

// claimRetries are the pauses between claims of a call whose row is not there. The doorbell
// rings while the api inserts the row, and the claim waits for an insert in progress; one
// that overtook even the insert's start finds nothing and tries again. That one usually
// finds the insert under way, so the first pause is shorter than an insert: about one call
// in 400 of BenchmarkCallOverhead takes this path. A call whose insert failed never appears;
// for one slower than the retries, the api rings again once its row is in (claimPatience).
var claimRetries = []time.Duration{500 * time.Microsecond, 2 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond} //nolint:gochecknoglobals // constant pauses

// claimPatience is how long an api may take to insert a call before its early doorbell may
// have been in vain: half the time the owner's claims look for the row (the sum of
// claimRetries), the rest a margin. An api whose insert took longer rings the owner again
// after its commit.
var claimPatience = func() time.Duration { //nolint:gochecknoglobals // derived from claimRetries
	var d time.Duration
	for _, p := range claimRetries {
		d += p
	}
	return d / 2
}()

// claimCall is store.startCall for this runner, retried while the call is not there.
func (r *sessionRunner) claimCall(ctx context.Context, callID string) (*Call, bool, error) {
	for i := 0; ; i++ {
		call, started, err := r.rt.store.startCall(ctx, r.tenant, r.id, callID, r.epoch)
		if !errors.Is(err, ErrNotFound) || i == len(claimRetries) {
			return call, started, err
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(claimRetries[i]):
		}
	}
}

// resumableCall is a moved call whose input round can still be answered.
type resumableCall struct {
	call  Call
	round []Pending
}

// roundAnswerable reports whether no request of an input round expired.
func roundAnswerable(round []Pending) bool {
	for _, p := range round {
		if p.Status == PendingExpired || (p.Status == PendingWaiting && time.Now().After(p.ExpiresAt)) {
			return false
		}
	}
	return true
}

// maxInputRounds bounds how often a server may answer a call with input_required.
const maxInputRounds = 10

// finishCall completes a call: it runs the input_required rounds of a 2026-07-28 server
// (each input parked for a person, the call retried with the answers), then records the
// outcome, sends the recorded call to the api node notify names (if any) and emits the
// call_result event.
func (r *sessionRunner) finishCall(ctx context.Context, cs *mcp.ClientSession, callID string, params *mcp.CallToolParams, res *mcp.CallToolResult, callErr error, notify string) {
	for round := 0; callErr == nil && res.NeedsInput(); round++ {
		if round >= maxInputRounds {
			callErr = fmt.Errorf("the server asked for input more than %d times", maxInputRounds)
			break
		}
		responses, err := r.answerInputs(ctx, callID, res)
		if err != nil {
			callErr = err
			break
		}
		params.InputResponses, params.RequestState = responses, res.RequestState
		res, callErr = cs.CallTool(ctx, params)
	}

	upd := callUpdate{}
	event := map[string]any{"call_id": callID}
	switch {
	case callErr == nil:
		result, _ := json.Marshal(res)
		upd.Result = result
		upd.Status = CallSucceeded
		if res.IsError {
			upd.Status = CallFailed
			upd.Error, _ = json.Marshal(map[string]string{"message": "the tool reported an error"})
		}
		event["ok"] = !res.IsError
		event["result"] = json.RawMessage(result)
	case ctx.Err() != nil && r.ctx.Err() == nil:
		upd.Status = CallCancelled
		upd.Error, _ = json.Marshal(map[string]string{"message": "cancelled"})
		event["ok"] = false
	case r.ctx.Err() != nil:
		// The worker is stopping or lost the session: the next owner interrupts the call.
		return
	default:
		upd.Status = CallFailed
		upd.Error = remoteErrorJSON(callErr)
		event["ok"] = false
	}
	event["status"] = upd.Status
	if upd.Error != nil {
		event["error"] = json.RawMessage(upd.Error)
	}
	var done *Call
	applied := false
	span := trace.SpanFromContext(ctx)
	record := func(upd callUpdate) error {
		return r.ownerWriteRetry(func(wctx context.Context) (err error) {
			// The write outlives a cancelled call, and belongs to its trace.
			done, applied, err = r.rt.store.updateCallAsOwner(trace.ContextWithSpan(wctx, span), r.tenant, r.id, callID, r.epoch, upd)
			return err
		})
	}
	err := record(upd)
	if errors.Is(err, db.ErrInvalidInput) {
		// PostgreSQL refuses what the target answered even once made storable: the call
		// ends failed, saying why, instead of running for ever.
		r.logger.Warn("the call's outcome cannot be stored; recording it failed", slog.String("call_id", callID), slog.Any("error", err))
		upd = callUpdate{Status: CallFailed}
		upd.Error, _ = json.Marshal(map[string]string{"message": "the result could not be stored: " + err.Error()})
		event = map[string]any{"call_id": callID, "ok": false, "status": upd.Status, "error": json.RawMessage(upd.Error)}
		err = record(upd)
	}
	if err != nil {
		return
	}
	if notify != "" && done != nil {
		r.rt.notifyCall(trace.ContextWithSpan(context.WithoutCancel(ctx), span), notify, done)
	}
	if !applied {
		// The call had ended already: the end of its session ends the calls it cuts off,
		// and reports them (endAndReport).
		return
	}
	r.emit(EventCallResult, event)
}

// callResultEvent is the call_result event of a recorded call.
func callResultEvent(c *Call) map[string]any {
	ev := map[string]any{"call_id": c.ID, "ok": c.Status == CallSucceeded, "status": c.Status}
	if len(c.Result) > 0 {
		ev["result"] = json.RawMessage(c.Result)
	}
	if len(c.Error) > 0 {
		ev["error"] = json.RawMessage(c.Error)
	}
	return ev
}

// elicitParams are an elicitation's params as the pending request shows them, with the mode
// the server left out made explicit, as go-sdk's server infers it: url with a URL or an
// elicitation id, else form. Whoever
// answers (a script, the web inspector) then reads the mode instead of guessing it.
func elicitParams(p *mcp.ElicitParams) *mcp.ElicitParams {
	if p == nil || p.Mode != "" {
		return p
	}
	out := *p
	out.Mode = "form"
	if p.URL != "" || p.ElicitationID != "" {
		out.Mode = "url"
	}
	return &out
}

// remoteErrorJSON describes a failed request: the target's JSON-RPC error when it sent one.
func remoteErrorJSON(err error) json.RawMessage {
	var rpcErr *jsonrpc.Error
	if errors.As(err, &rpcErr) {
		b, _ := json.Marshal(map[string]any{"code": rpcErr.Code, "message": rpcErr.Message, "data": rpcErr.Data})
		return b
	}
	b, _ := json.Marshal(map[string]any{"message": err.Error()})
	return b
}

// cancelCall cancels a running call (go-sdk sends notifications/cancelled, or closes the
// request stream in 2026-07-28).
func (r *sessionRunner) cancelCall(callID string) error {
	r.mu.Lock()
	cancel := r.calls[callID]
	r.mu.Unlock()
	if cancel == nil {
		// Not running here: a queued call is cancelled by the api; nothing else to do.
		return nil
	}
	cancel()
	return nil
}

// setRoots replaces the client's roots (go-sdk sends notifications/roots/list_changed) and
// records them.
func (r *sessionRunner) setRoots(ctx context.Context, roots []Root) error {
	r.mu.Lock()
	client, old := r.client, r.roots
	r.mu.Unlock()
	if client == nil {
		return fmt.Errorf("%w: not connected", ErrNotReady)
	}
	var remove []string
	for _, o := range old {
		if !slices.ContainsFunc(roots, func(n Root) bool { return n.URI == o.URI }) {
			remove = append(remove, o.URI)
		}
	}
	if len(remove) > 0 {
		client.RemoveRoots(remove...)
	}
	add := make([]*mcp.Root, 0, len(roots))
	for _, n := range roots {
		add = append(add, &mcp.Root{URI: n.URI, Name: n.Name})
	}
	client.AddRoots(add...)
	r.mu.Lock()
	r.roots = roots
	r.mu.Unlock()
	return r.ownerWrite(r.rt.store.updateAsOwner(ctx, r.tenant, r.id, r.epoch, OwnerUpdate{Roots: nonNilRoots(roots)}))
}

// watchersLateness bounds, in settle delays, how late a change of presence is recorded
// while presence keeps changing.
const watchersLateness = 5

// ringWatchers is the doorbell an api rings when one of the session's streams starts or
// ends. The watchers event waits until presence has stayed unchanged for WatchersSettle,
// and then only records a presence that differs from the last one recorded: a stream that
// drops and comes back within the delay (a reconnect, a flaky network) records nothing,
// while a real join or leave is recorded WatchersSettle late, or at most watchersLateness
// times that while streams keep coming and going. Every api rings this runner, the
// session's one owner, and presence is read from the tracker, so streams on any api count.
func (r *sessionRunner) ringWatchers() {
	r.touch()
	if r.ctx.Err() != nil {
		return
	}
	settle := r.rt.cfg.WatchersSettle
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &r.watchers
	now := time.Now()
	if w.since.IsZero() {
		w.since = now
	}
	wait := min(settle, w.since.Add(watchersLateness*settle).Sub(now))
	if w.timer == nil {
		w.timer = time.AfterFunc(wait, r.recordWatchers)
		return
	}
	w.timer.Reset(wait)
}

// recordWatchers records who is watching the session now, unless that is what the last
// watchers event of this runner said. The first one a runner records may repeat its
// predecessor's last.
func (r *sessionRunner) recordWatchers() {
	r.mu.Lock()
	r.watchers.since = time.Time{}
	r.mu.Unlock()
	r.watchers.recording.Lock()
	defer r.watchers.recording.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	streams, err := r.rt.cfg.Tracker.StreamsOf(r.ctx, r.tenant, r.id)
	if err != nil {
		// Redis is away: look again later rather than leave the change unrecorded.
		if r.ctx.Err() == nil {
			r.ringWatchers()
		}
		return
	}
	raw, err := json.Marshal(watchersData(streams))
	if err != nil || string(raw) == r.watchers.last {
		return
	}
	r.watchers.last = string(raw)
	r.emitRaw(EventWatchers, raw)
}

// stopWatchers drops a watchers event still waiting to be recorded, as the runner stops.
func (r *sessionRunner) stopWatchers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watchers.timer != nil {
		r.watchers.timer.Stop()
	}
}

// watchersData is a watchers event's data: how many streams follow the session, and who
// follows them, each principal once, ordered by id so that equal presences encode equally.
func watchersData(streams []tracker.Entry) map[string]any {
	seen := map[string]bool{}
	principals := []map[string]string{}
	for _, s := range streams {
		p := s.Meta["principal"]
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		principals = append(principals, map[string]string{"id": p, "name": s.Meta["name"]})
	}
	slices.SortFunc(principals, func(a, b map[string]string) int { return strings.Compare(a["id"], b["id"]) })
	return map[string]any{"count": len(streams), "principals": principals}
}

// answerInputs parks every input request of an input_required result for a person (roots
// are answered from the session's roots) and returns the answers once all are in.
func (r *sessionRunner) answerInputs(ctx context.Context, callID string, res *mcp.CallToolResult) (mcp.InputResponseMap, error) {
	if len(res.InputRequests) == 0 {
		// The server is shedding load: retry after a pause.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
		return mcp.InputResponseMap{}, nil
	}
	keys := make([]string, 0, len(res.InputRequests))
	for k := range res.InputRequests {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	responses := mcp.InputResponseMap{}
	var parked []*Pending
	for _, key := range keys {
		var method string
		switch req := res.InputRequests[key].(type) {
		case *mcp.ListRootsParams:
			r.mu.Lock()
			roots := make([]*mcp.Root, 0, len(r.roots))
			for _, x := range r.roots {
				roots = append(roots, &mcp.Root{URI: x.URI, Name: x.Name})
			}
			r.mu.Unlock()
			responses[key] = &mcp.ListRootsResult{Roots: roots}
			continue
		case *mcp.ElicitParams:
			method = "elicitation/create"
		case *mcp.CreateMessageWithToolsParams, *mcp.CreateMessageParams:
			method = "sampling/createMessage"
		default:
			return nil, fmt.Errorf("the server asked for unsupported input %T", req)
		}
		raw, _ := json.Marshal(map[string]any{"call_id": callID, "key": key, "method": method, "params": res.InputRequests[key]})
		p, err := r.parkRow(ctx, PendingInputRequired, raw, &pendingInput{CallID: callID, Key: key, RequestState: res.RequestState})
		if err != nil {
			return nil, err
		}
		parked = append(parked, p)
	}
	return r.collectInputs(ctx, parked, responses)
}

// collectInputs waits for the parked input requests of one round and turns their answers
// into input responses.
func (r *sessionRunner) collectInputs(ctx context.Context, parked []*Pending, responses mcp.InputResponseMap) (mcp.InputResponseMap, error) {
	for _, p := range parked {
		final, err := r.awaitAnswer(ctx, p)
		if err != nil {
			return nil, err
		}
		r.resolved(final)
		var method struct {
			Method string `json:"method"`
		}
		_ = json.Unmarshal(final.Params, &method)
		var a PendingAnswer
		if final.Status == PendingAnswered || final.Status == PendingCancelled {
			if err := json.Unmarshal(final.Answer, &a); err != nil {
				return nil, fmt.Errorf("decode answer: %w", err)
			}
		}
		switch {
		case method.Method == "elicitation/create":
			action := a.Action
			if final.Status == PendingExpired || action == "" {
				action = "cancel"
			}
			out := &mcp.ElicitResult{Action: action}
			if action == "accept" && len(a.Content) > 0 {
				if err := json.Unmarshal(a.Content, &out.Content); err != nil {
					return nil, fmt.Errorf("decode elicitation content: %w", err)
				}
			}
			responses[final.inputKey] = out
		case a.Error != nil:
			return nil, &jsonrpc.Error{Code: a.Error.Code, Message: a.Error.Message, Data: a.Error.Data}
		case final.Status != PendingAnswered || len(a.Result) == 0:
			return nil, fmt.Errorf("input %q was not answered (%s)", final.inputKey, final.Status)
		default:
			var out mcp.CreateMessageResult
			if err := json.Unmarshal(a.Result, &out); err != nil {
				return nil, fmt.Errorf("decode sampling answer: %w", err)
			}
			responses[final.inputKey] = &out
		}
	}
	return responses, nil
}

// resumeInputCall continues, after a takeover, a call whose latest input round is still
// answerable: it waits for the round's answers and retries the call with the round's state.
func (r *sessionRunner) resumeInputCall(call Call, round []Pending) {
	cs := r.session()
	if cs == nil {
		return
	}
	r.mu.Lock()
	if _, running := r.calls[call.ID]; running {
		r.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.calls[call.ID] = cancel
	r.callsRunning.enter()
	r.mu.Unlock()
	go func() {
		defer r.callsRunning.leave()
		defer func() {
			r.mu.Lock()
			delete(r.calls, call.ID)
			r.mu.Unlock()
			cancel()
		}()
		var args map[string]any
		_ = json.Unmarshal(call.Arguments, &args)
		params := &mcp.CallToolParams{Name: call.Name, Arguments: args}
		params.SetProgressToken(call.ID)
		parked := make([]*Pending, len(round))
		for i := range round {
			parked[i] = &round[i]
		}
		// Roots are answered again from the session's roots; the rest from the rows.
		responses := mcp.InputResponseMap{}
		var state string
		for _, p := range round {
			state = p.requestState
		}
		responses, err := r.collectInputs(ctx, parked, responses)
		var res *mcp.CallToolResult
		if err == nil {
			params.InputResponses, params.RequestState = responses, state
			res, err = cs.CallTool(ctx, params)
		}
		r.finishCall(ctx, cs, call.ID, params, res, err, "")
	}()
}
