package inspector

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tracker"
)

// RuntimeConfig configures a worker's Runtime.
type RuntimeConfig struct {
	Pool    *pgxpool.Pool
	Redis   redis.UniversalClient
	Tracker *tracker.Tracker
	Guard   *netguard.Guard
	Keys    *secretbox.Keyring
	// Prefix starts Redis keys and channels; it must match the api's. Defaults to
	// DefaultPrefix.
	Prefix string
	// Version is sent as the client's version in initialize.
	Version string
	// ConnectAttempts before a session goes to error. Defaults to 3.
	ConnectAttempts int
	// ConnectTimeout bounds one connection attempt. Defaults to 20s.
	ConnectTimeout time.Duration
	// PendingTimeout expires parked requests nobody answered. Defaults to 10m.
	PendingTimeout time.Duration
	// IdleClose closes sessions nobody used or watched for this long; 0 disables.
	IdleClose time.Duration
	// DiscoveryInterval is how often the worker looks for sessions without an owner (it is
	// also woken whenever an api creates or reconnects one). Defaults to 2s.
	DiscoveryInterval time.Duration
	// MaxSessions caps the sessions this worker holds; 0 means no cap.
	MaxSessions int
	// WatchersSettle is how long a session's presence must stay unchanged before its owner
	// records a watchers event, so a client that reconnects its stream adds nothing to the
	// history. Defaults to 2s.
	WatchersSettle time.Duration
	Logger         *slog.Logger
}

// Runtime is the worker side of inspector sessions: it claims sessions that need an owner,
// holds their connections and serves the commands api nodes send.
type Runtime struct {
	cfg       RuntimeConfig
	store     *Store
	persister *persister
	transport http.RoundTripper
	nodeID    string
	logger    *slog.Logger

	mu      sync.Mutex
	runners map[string]*sessionRunner // tenant/session → runner
	seen    *commandLedger

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	serving inflight // commands being served
	wakeup  chan struct{}
	stopped bool
}

// NewRuntime validates cfg and builds a Runtime. The tracker's OnLeaseLost should call
// LeaseLost so a lost lease stops its session at once.
func NewRuntime(cfg *RuntimeConfig) (*Runtime, error) {
	if cfg == nil || cfg.Pool == nil || cfg.Redis == nil || cfg.Tracker == nil || cfg.Guard == nil || cfg.Keys == nil {
		return nil, errors.New("inspector: Pool, Redis, Tracker, Guard and Keys are required")
	}
	c := *cfg
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	c.Version = cmp.Or(c.Version, "dev")
	c.ConnectAttempts = cmp.Or(c.ConnectAttempts, 3)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, 20*time.Second)
	c.PendingTimeout = cmp.Or(c.PendingTimeout, 10*time.Minute)
	c.DiscoveryInterval = cmp.Or(c.DiscoveryInterval, 2*time.Second)
	c.WatchersSettle = cmp.Or(c.WatchersSettle, 2*time.Second)
	logger := c.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	transport := c.Guard.Transport()
	// Tool calls may answer with a plain JSON body after minutes; calls and commands carry
	// their own deadlines instead.
	transport.ResponseHeaderTimeout = 0
	rt := &Runtime{
		cfg: c, store: NewStore(c.Pool), transport: transport, nodeID: c.Tracker.NodeID(), logger: logger,
		runners: map[string]*sessionRunner{}, seen: newCommandLedger(4096), wakeup: make(chan struct{}, 1),
	}
	rt.persister = newPersister(c.Pool, c.Redis, c.Prefix, logger)
	rt.persister.setHooks(rt.refused, func(n int, took time.Duration) {
		instruments.eventsStored.Add(context.Background(), int64(n))
		instruments.batchSeconds.Record(context.Background(), took.Seconds())
	})
	return rt, nil
}

// Start begins discovery and command handling.
func (rt *Runtime) Start(ctx context.Context) error {
	rt.ctx, rt.cancel = context.WithCancel(context.WithoutCancel(ctx))
	rt.persister.start()
	wake := rt.cfg.Redis.Subscribe(rt.ctx, wakeChannel(rt.cfg.Prefix))
	rt.wg.Add(3)
	go rt.wakeLoop(wake)
	go rt.discoveryLoop()
	go rt.inboxLoop()
	return nil
}

// Stop drains the worker: it stops taking sessions and commands, lets the commands it is
// serving end, closes its connections without writing for them, commits what is queued,
// hands its leases over so other workers take the sessions at once, and wakes them. ctx
// bounds the wait for the commands; nothing else of the runtime writes once Stop returns.
func (rt *Runtime) Stop(ctx context.Context) {
	rt.mu.Lock()
	if rt.stopped {
		rt.mu.Unlock()
		return
	}
	rt.stopped = true
	runners := make([]*sessionRunner, 0, len(rt.runners))
	for _, r := range rt.runners {
		runners = append(runners, r)
	}
	rt.mu.Unlock()
	rt.cancel()
	rt.wg.Wait()
	// The inbox is read no more, so no command starts; those started see the runtime's
	// context ended and answer (a reply, perhaps a write of their session's owner) at once.
	select {
	case <-rt.serving.idle():
	case <-ctx.Done():
		rt.logger.WarnContext(ctx, "commands still running at shutdown", slog.Any("error", ctx.Err()))
	}
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Go(r.stop)
	}
	wg.Wait()
	rt.persister.close()
	if leases, err := rt.cfg.Tracker.HandOverLeases(ctx); err != nil {
		rt.logger.WarnContext(ctx, "hand over leases", slog.Any("error", err))
	} else if len(leases) > 0 {
		rt.logger.InfoContext(ctx, "leases handed over", slog.Int("sessions", len(leases)))
		_ = rt.cfg.Redis.Publish(ctx, wakeChannel(rt.cfg.Prefix), "1").Err()
	}
}

// Sessions reports how many sessions this worker holds.
func (rt *Runtime) Sessions() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.runners)
}

// LeaseLost stops the session whose lease the tracker found lost.
func (rt *Runtime) LeaseLost(l *tracker.Lease) {
	if r := rt.runner(l.Tenant(), l.Name()); r != nil && r.lease == l {
		r.logger.Warn("lease lost; dropping the session")
		r.markStale()
	}
}

func (rt *Runtime) refused(tenantID, sessionID string, epoch int64) {
	if r := rt.runner(tenantID, sessionID); r != nil && r.epoch == epoch {
		r.logger.Warn("postgres refused our epoch; dropping the session")
		r.markStale()
	}
}

func (rt *Runtime) runner(tenantID, sessionID string) *sessionRunner {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.runners[tenantID+"/"+sessionID]
}

func (rt *Runtime) wakeLoop(ps *redis.PubSub) {
	defer rt.wg.Done()
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case <-ch:
			select {
			case rt.wakeup <- struct{}{}:
			default:
			}
		}
	}
}

func (rt *Runtime) discoveryLoop() {
	defer rt.wg.Done()
	for {
		// Look again at the interval, or as soon as a lease held elsewhere lapses: a worker
		// that died stops renewing, and its sessions are taken over one lease TTL after its
		// last renewal rather than up to a discovery interval later.
		wait := rt.cfg.DiscoveryInterval
		if lapse := rt.discover(); lapse > 0 {
			wait = min(wait, max(lapse+20*time.Millisecond, 50*time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-rt.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-rt.wakeup:
			t.Stop()
		}
	}
}

// discover claims live sessions whose lease is free. It returns how long until the first
// lease it found held by another node lapses unless renewed (0 when none).
func (rt *Runtime) discover() time.Duration {
	live, err := rt.store.liveSessions(rt.ctx, 20000)
	if err != nil {
		if rt.ctx.Err() == nil {
			rt.logger.Warn("discover sessions", slog.Any("error", err))
		}
		return 0
	}
	var lapse time.Duration
	for _, l := range live {
		if rt.ctx.Err() != nil {
			return 0
		}
		if rt.runner(l.TenantID, l.ID) != nil {
			continue
		}
		if rt.cfg.MaxSessions > 0 && rt.Sessions() >= rt.cfg.MaxSessions {
			return 0
		}
		if ttl := rt.tryAdopt(l); ttl > 0 && (lapse == 0 || ttl < lapse) {
			lapse = ttl
		}
	}
	return lapse
}

// tryAdopt claims a session's lease and, with PostgreSQL agreeing on the epoch, starts
// holding it. When another node holds the lease, it returns the time the lease has left.
func (rt *Runtime) tryAdopt(l liveSession) time.Duration {
	ctx := rt.ctx
	lease, err := rt.cfg.Tracker.ClaimLease(ctx, l.TenantID, l.ID, uint64(l.Epoch))
	if err != nil {
		var held *tracker.LeaseHeldError
		if errors.As(err, &held) {
			return held.TTL
		}
		if ctx.Err() == nil {
			rt.logger.Warn("claim session lease", slog.String("session_id", l.ID), slog.Any("error", err))
		}
		return 0
	}
	epoch := int64(lease.Epoch())
	sess, err := rt.store.adoptSession(ctx, l.TenantID, l.ID, epoch, rt.nodeID)
	if err != nil {
		_ = rt.cfg.Tracker.ReleaseLease(context.WithoutCancel(ctx), lease)
		if !errors.Is(err, db.ErrStaleEpoch) && !errors.Is(err, ErrNotReady) {
			rt.logger.Warn("adopt session", slog.String("session_id", l.ID), slog.Any("error", err))
		}
		return 0
	}
	var moved *movedFrom
	if l.Epoch > 0 && l.OwnerNode != "" {
		moved = &movedFrom{node: l.OwnerNode, epoch: l.Epoch}
	}
	r := newSessionRunner(rt, lease, sess)
	rt.mu.Lock()
	if rt.stopped {
		rt.mu.Unlock()
		_ = rt.cfg.Tracker.ReleaseLease(context.WithoutCancel(ctx), lease)
		return 0
	}
	rt.runners[l.TenantID+"/"+l.ID] = r
	rt.mu.Unlock()
	_ = rt.cfg.Tracker.Track(ctx, tracker.SessionRef(l.TenantID, l.ID), tracker.Meta{"epoch": fmt.Sprint(epoch)})
	addSessions(ctx, 1)
	if moved != nil {
		instruments.takeovers.Add(ctx, 1)
	}
	r.logger.Info("session adopted", slog.Int64("epoch", epoch), slog.Bool("moved", moved != nil))
	go func() {
		r.run(moved)
		addSessions(context.Background(), -1)
		rt.mu.Lock()
		if rt.runners[l.TenantID+"/"+l.ID] == r {
			delete(rt.runners, l.TenantID+"/"+l.ID)
		}
		stopping := rt.stopped
		rt.mu.Unlock()
		if !stopping {
			// The session ended here (closed, failed, lost): let go of it.
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = rt.cfg.Tracker.Untrack(cctx, tracker.SessionRef(l.TenantID, l.ID))
			if lease.Valid() {
				_ = rt.cfg.Tracker.ReleaseLease(cctx, lease)
			}
			cancel()
		}
	}()
	return 0
}

// inboxLoop reads this node's command stream and serves each command.
func (rt *Runtime) inboxLoop() {
	defer rt.wg.Done()
	key := inboxKey(rt.cfg.Prefix, rt.nodeID)
	// Read from a position, never from "$": "$" means whatever arrives during this read, so
	// a command added between two reads (after a read timed out, say) would be skipped.
	last := rt.inboxTail(key)
	for rt.ctx.Err() == nil {
		res, err := rt.cfg.Redis.XRead(rt.ctx, &redis.XReadArgs{Streams: []string{key, last}, Count: 256, Block: 2 * time.Second}).Result()
		if err != nil {
			if errors.Is(err, redis.Nil) || rt.ctx.Err() != nil {
				continue
			}
			rt.logger.Warn("read command inbox", slog.Any("error", err))
			select {
			case <-rt.ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for _, stream := range res {
			for _, msg := range stream.Messages {
				last = msg.ID
				raw, _ := msg.Values["c"].(string)
				var cmd Command
				if err := json.Unmarshal([]byte(raw), &cmd); err != nil {
					rt.logger.Warn("bad command", slog.Any("error", err))
					continue
				}
				rt.serving.enter()
				go func() {
					defer rt.serving.leave()
					rt.serve(&cmd)
				}()
			}
		}
	}
}

// inboxTail is the id of the newest command already in the inbox, so reading starts after it.
func (rt *Runtime) inboxTail(key string) string {
	for rt.ctx.Err() == nil {
		msgs, err := rt.cfg.Redis.XRevRangeN(rt.ctx, key, "+", "-", 1).Result()
		if err == nil {
			if len(msgs) == 0 {
				return "0-0"
			}
			return msgs[0].ID
		}
		rt.logger.Warn("read command inbox", slog.Any("error", err))
		select {
		case <-rt.ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return "0-0"
}

// serve runs one command and publishes its reply when one is expected. A command runs once
// per id: a repeat of a running one waits for its reply, a repeat of a finished one gets the
// reply again. The api repeats a command it has no answer to yet, so a slow target must not
// see the request again.
func (rt *Runtime) serve(cmd *Command) {
	if !cmd.Deadline.IsZero() && time.Now().After(cmd.Deadline) {
		return
	}
	rep, run := rt.seen.begin(cmd.ID, cmd.ReplyTo)
	if !run {
		if rep != nil {
			rt.reply(cmd.ReplyTo, rep)
		}
		return
	}
	ctx := otel.GetTextMapPropagator().Extract(rt.ctx, propagation.MapCarrier(cmd.Trace))
	ctx, span := tracer.Start(ctx, "worker "+string(cmd.Op),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("tenant.id", cmd.TenantID), attribute.String("session.id", cmd.Session)))
	defer span.End()
	if !cmd.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, cmd.Deadline)
		defer cancel()
	}
	rep = rt.execute(ctx, cmd)
	rep.ID = cmd.ID
	if rep.Error != "" && rep.Code == "" && rep.Remote == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		rep.Code = codeTimeout
	}
	if rep.Error != "" {
		span.RecordError(errors.New(rep.Error))
	}
	// A worker that does not hold the session did nothing: a repeat, once it does hold it
	// or after the session moved back, must run.
	for _, node := range rt.seen.finish(cmd.ID, rep, rep.Code != codeNotOwner) {
		rt.reply(node, rep)
	}
}

// notifyCall sends a finished call, already committed, to the api node waiting for it.
// Best effort: a waiter that misses it reads the call's row.
func (rt *Runtime) notifyCall(ctx context.Context, node string, c *Call) {
	body, err := json.Marshal(c)
	if err != nil {
		return
	}
	rep, _ := json.Marshal(&Reply{ID: callNoticeID(c.ID), Result: body})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = rt.cfg.Redis.Publish(ctx, replyChannel(rt.cfg.Prefix, node), rep).Err()
}

// reply publishes rep to the api node that asked for it, if any.
func (rt *Runtime) reply(node string, rep *Reply) {
	if node == "" {
		return
	}
	body, _ := json.Marshal(rep)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rt.cfg.Redis.Publish(ctx, replyChannel(rt.cfg.Prefix, node), body).Err()
}

func (rt *Runtime) execute(ctx context.Context, cmd *Command) *Reply {
	r := rt.runner(cmd.TenantID, cmd.Session)
	// A worker that was paused past its lease finds commands queued before the pause; the
	// api has meanwhile sent them to the new owner. Valid is measured on the monotonic clock
	// since the last renewal, so it is false at once on waking, before any renewal tells.
	if r == nil || r.isStale() || !r.lease.Valid() {
		return &Reply{Error: "this worker does not hold the session", Code: codeNotOwner}
	}
	r.touch()
	var p struct {
		CallID    string `json:"call_id"`
		RequestID string `json:"request_id"`
		Notify    string `json:"notify"`
	}
	_ = json.Unmarshal(cmd.Params, &p)
	switch cmd.Op {
	case OpStartCall:
		r.startCall(trace.SpanContextFromContext(ctx), p.CallID, p.Notify)
		return &Reply{}
	case OpCancelCall:
		return replyFrom(nil, r.cancelCall(p.CallID))
	case OpAnswerPending:
		r.ringPending(p.RequestID)
		return &Reply{}
	case OpClose:
		r.closeByRequest(ctx)
		return &Reply{}
	case OpReconnect:
		select {
		case r.reconnectWant <- struct{}{}:
		default:
		}
		return &Reply{}
	case OpWatchers:
		r.ringWatchers()
		return &Reply{}
	}
	// Everything else needs the live connection: wait for the first connection attempt.
	select {
	case <-r.connected:
	case <-ctx.Done():
		return &Reply{Error: "the session is still connecting", Code: codeNotReady}
	}
	cs := r.session()
	if cs == nil {
		return &Reply{Error: "the session is not connected", Code: codeNotReady}
	}
	res, err := r.request(ctx, cs, cmd.Op, cmd.Params)
	return replyFrom(res, err)
}

func replyFrom(res any, err error) *Reply {
	if err != nil {
		var rpcErr *jsonrpc.Error
		var ve *ValidationError
		switch {
		case errors.As(err, &rpcErr):
			return &Reply{Remote: &RemoteError{Code: rpcErr.Code, Message: rpcErr.Message, Data: rpcErr.Data}}
		case errors.As(err, &ve):
			return &Reply{Error: ve.Error(), Code: codeValidation}
		case errors.Is(err, ErrNotReady):
			return &Reply{Error: err.Error(), Code: codeNotReady}
		}
		return &Reply{Error: err.Error()}
	}
	if res == nil {
		return &Reply{}
	}
	if raw, ok := res.(json.RawMessage); ok {
		return &Reply{Result: raw}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return &Reply{Error: err.Error()}
	}
	return &Reply{Result: b}
}

// request runs a fast operation on the live connection.
func (r *sessionRunner) request(ctx context.Context, cs *mcp.ClientSession, op Op, raw json.RawMessage) (any, error) {
	var p struct {
		Cursor    string            `json:"cursor"`
		All       bool              `json:"all"`
		URI       string            `json:"uri"`
		Name      string            `json:"name"`
		Arguments map[string]string `json:"arguments"`
		Level     string            `json:"level"`
		Method    string            `json:"method"`
		Params    json.RawMessage   `json:"params"`
		Roots     []Root            `json:"roots"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, &ValidationError{Field: "params", Reason: err.Error()}
		}
	}
	switch op {
	case OpListTools:
		if !p.All {
			return cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: p.Cursor})
		}
		return collect(cs.Tools(ctx, nil), "tools")
	case OpListResources:
		if !p.All {
			return cs.ListResources(ctx, &mcp.ListResourcesParams{Cursor: p.Cursor})
		}
		return collect(cs.Resources(ctx, nil), "resources")
	case OpListResourceTemplates:
		if !p.All {
			return cs.ListResourceTemplates(ctx, &mcp.ListResourceTemplatesParams{Cursor: p.Cursor})
		}
		return collect(cs.ResourceTemplates(ctx, nil), "resourceTemplates")
	case OpListPrompts:
		if !p.All {
			return cs.ListPrompts(ctx, &mcp.ListPromptsParams{Cursor: p.Cursor})
		}
		return collect(cs.Prompts(ctx, nil), "prompts")
	case OpReadResource:
		return cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: p.URI})
	case OpGetPrompt:
		return cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: p.Name, Arguments: p.Arguments})
	case OpComplete:
		var cp mcp.CompleteParams
		if err := json.Unmarshal(raw, &cp); err != nil {
			return nil, &ValidationError{Field: "params", Reason: err.Error()}
		}
		return cs.Complete(ctx, &cp)
	case OpSubscribe, OpUnsubscribe:
		return nil, r.subscription(ctx, cs, op, p.URI)
	case OpSetLoggingLevel:
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: mcp.LoggingLevel(p.Level)}); err != nil {
			return nil, err
		}
		return nil, r.ownerWrite(r.rt.store.updateAsOwner(ctx, r.tenant, r.id, r.epoch, OwnerUpdate{LoggingLevel: &p.Level}))
	case OpPing:
		start := time.Now()
		if err := cs.Ping(ctx, nil); err != nil {
			return nil, err
		}
		return map[string]float64{"ms": float64(time.Since(start).Microseconds()) / 1000}, nil
	case OpSetRoots:
		return nil, r.setRoots(ctx, p.Roots)
	case OpRPC:
		return r.rpc(ctx, cs, p.Method, p.Params)
	}
	return nil, &ValidationError{Field: "op", Reason: "unknown operation " + string(op)}
}

func collect[T any](seq func(func(*T, error) bool), key string) (any, error) {
	items := []*T{}
	for item, err := range seq {
		if err != nil {
			return nil, err
		}
		items = append(items, item)
		if len(items) > 100000 {
			return nil, fmt.Errorf("the target listed more than 100000 %s", key)
		}
	}
	return map[string]any{key: items}, nil
}

// subscription subscribes or unsubscribes a resource and records it for reconnects and
// takeovers.
func (r *sessionRunner) subscription(ctx context.Context, cs *mcp.ClientSession, op Op, uri string) error {
	if uri == "" {
		return &ValidationError{Field: "uri", Reason: "is required"}
	}
	var err error
	if op == OpSubscribe {
		err = cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
	} else {
		err = cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri})
	}
	if err != nil {
		return err
	}
	if op == OpSubscribe {
		_ = r.rt.cfg.Tracker.SubscribeResource(ctx, r.tenant, r.id, uri)
	} else {
		_ = r.rt.cfg.Tracker.UnsubscribeResource(ctx, r.tenant, r.id, uri)
	}
	return r.ownerWrite(r.rt.store.recordSubscription(ctx, r.tenant, r.id, r.epoch, uri, op == OpSubscribe))
}

// rpc sends any JSON-RPC request. Methods the SDK knows go through its typed API (so its
// session state stays right); others go out as custom methods with raw params.
func (r *sessionRunner) rpc(ctx context.Context, cs *mcp.ClientSession, method string, params json.RawMessage) (any, error) {
	if method == "" {
		return nil, &ValidationError{Field: "method", Reason: "is required"}
	}
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage(`{}`)
	}
	typed := func(dst any) error {
		if err := json.Unmarshal(params, dst); err != nil {
			return &ValidationError{Field: "params", Reason: err.Error()}
		}
		return nil
	}
	switch method {
	case "ping":
		return map[string]any{}, cs.Ping(ctx, nil)
	case "tools/list":
		var p mcp.ListToolsParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.ListTools(ctx, &p)
	case "tools/call":
		var p mcp.CallToolParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.CallTool(ctx, &p)
	case "resources/list":
		var p mcp.ListResourcesParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.ListResources(ctx, &p)
	case "resources/templates/list":
		var p mcp.ListResourceTemplatesParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.ListResourceTemplates(ctx, &p)
	case "resources/read":
		var p mcp.ReadResourceParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.ReadResource(ctx, &p)
	case "prompts/list":
		var p mcp.ListPromptsParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.ListPrompts(ctx, &p)
	case "prompts/get":
		var p mcp.GetPromptParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.GetPrompt(ctx, &p)
	case "completion/complete":
		var p mcp.CompleteParams
		if err := typed(&p); err != nil {
			return nil, err
		}
		return cs.Complete(ctx, &p)
	case "logging/setLevel", "resources/subscribe", "resources/unsubscribe", "initialize", "notifications/initialized":
		return nil, &ValidationError{Field: "method", Reason: method + " changes session state; use its own endpoint"}
	}
	r.mu.Lock()
	client := r.client
	r.mu.Unlock()
	if err := mcp.AddSendingCustomMethod[*rawParams, *rawResult](client, method); err != nil {
		return nil, &ValidationError{Field: "method", Reason: err.Error()}
	}
	res, err := mcp.CallCustomMethod[*rawParams, *rawResult](ctx, cs, method, &rawParams{raw: params})
	if err != nil {
		return nil, err
	}
	return res.raw, nil
}

// rawParams and rawResult carry arbitrary JSON through go-sdk's custom-method API.
type rawParams struct {
	mcp.ParamsBase
	raw json.RawMessage
}

func (p *rawParams) MarshalJSON() ([]byte, error) { return p.raw, nil }

type rawResult struct {
	mcp.ResultBase
	raw json.RawMessage
}

func (r *rawResult) UnmarshalJSON(data []byte) error {
	r.raw = append(json.RawMessage(nil), data...)
	return nil
}

// commandLedger remembers the commands a worker started, by id, so that none runs twice:
// running ones until they finish, finished ones with their replies up to a bound, oldest
// forgotten first. Running commands are never forgotten; each one finishes (its deadline, or
// the runtime's stop, ends it).
type commandLedger struct {
	mu       sync.Mutex
	max      int
	finished []string // ids of finished commands, oldest first
	items    map[string]*ledgerEntry
}

type ledgerEntry struct {
	// reply is nil while the command runs.
	reply *Reply
	// askers are the api nodes waiting for a running command's reply, each once.
	askers []string
}

func newCommandLedger(max int) *commandLedger {
	return &commandLedger{max: max, items: map[string]*ledgerEntry{}}
}

// begin records that command id is wanted by replyTo (empty when nobody waits). It returns
// run true when the command is new and the caller must run it. Otherwise rep is the finished
// command's reply, or nil when the command runs and replyTo will get the reply from finish.
func (l *commandLedger) begin(id, replyTo string) (rep *Reply, run bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.items[id]
	if !ok {
		e = &ledgerEntry{}
		l.items[id] = e
		run = true
	}
	if e.reply != nil {
		return e.reply, false
	}
	if replyTo != "" && !slices.Contains(e.askers, replyTo) {
		e.askers = append(e.askers, replyTo)
	}
	return nil, run
}

// finish records the reply of a command begin let run and returns the api nodes to send it
// to. With keep false the command is forgotten, so a repeat runs it again.
func (l *commandLedger) finish(id string, rep *Reply, keep bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.items[id]
	if e == nil {
		return nil
	}
	askers := e.askers
	if !keep {
		delete(l.items, id)
		return askers
	}
	e.reply, e.askers = rep, nil
	l.finished = append(l.finished, id)
	if len(l.finished) > l.max {
		delete(l.items, l.finished[0])
		l.finished[0] = ""
		l.finished = l.finished[1:]
	}
	return askers
}
