package inspector

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/tracker"
)

// DefaultPrefix starts every Redis key and channel of the command bus and live events.
const DefaultPrefix = "tapline"

// ServiceConfig configures the api-side Service.
type ServiceConfig struct {
	Pool    *pgxpool.Pool
	Redis   redis.UniversalClient
	Tracker *tracker.Tracker
	Guard   *netguard.Guard
	Keys    *secretbox.Keyring
	// Prefix starts Redis keys and channels. Defaults to DefaultPrefix.
	Prefix string
	// MaxLiveSessions caps live sessions per tenant. Defaults to 50.
	MaxLiveSessions int
	// CommandTimeout bounds a synchronous command. Defaults to 15s.
	CommandTimeout time.Duration
	// KeepAlive is the SSE keep-alive interval. Defaults to 15s.
	KeepAlive time.Duration
	// Audit records every mutating action; nil records nothing.
	Audit  Auditor
	Logger *slog.Logger
}

// Auditor appends to the audit log; *audit.Recorder is one. With a tx, the entry commits or
// rolls back with the change it records.
type Auditor interface {
	Record(ctx context.Context, tx pgx.Tx, e audit.Entry) (*audit.Event, error)
	// Pipeline prepares an entry for a transaction sent in batches (tool calls).
	Pipeline(ctx context.Context, e audit.Entry) (*audit.Pipelined, error)
}

// audited returns a hook that records action on a session inside the change's transaction.
func (s *Service) audited(tenantID, action string, target audit.Target, details any) txHook {
	if s.cfg.Audit == nil {
		return nil
	}
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := s.cfg.Audit.Record(ctx, tx, audit.Entry{TenantID: tenantID, Action: action, Target: target, Details: details})
		return err
	}
}

// auditAfter records an action that was carried out by a worker (no local transaction).
func (s *Service) auditAfter(ctx context.Context, tenantID, action string, target audit.Target, details any) error {
	if s.cfg.Audit == nil {
		return nil
	}
	_, err := s.cfg.Audit.Record(ctx, nil, audit.Entry{TenantID: tenantID, Action: action, Target: target, Details: details})
	return err
}

func sessionTarget(id string) audit.Target { return audit.Target{Type: "session", ID: id} }

// Service is the api side of inspector sessions: it stores what scripts and browsers ask
// for and forwards what needs the live connection to the worker that owns the session.
type Service struct {
	cfg      ServiceConfig
	store    *Store
	commands *commandClient
	hub      *liveHub
	logger   *slog.Logger
}

// NewService validates cfg and builds a Service; call Start before use and Stop after.
func NewService(cfg *ServiceConfig) (*Service, error) {
	if cfg == nil || cfg.Pool == nil || cfg.Redis == nil || cfg.Tracker == nil || cfg.Guard == nil || cfg.Keys == nil {
		return nil, errors.New("inspector: Pool, Redis, Tracker, Guard and Keys are required")
	}
	c := *cfg
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	c.MaxLiveSessions = cmp.Or(c.MaxLiveSessions, 50)
	c.CommandTimeout = cmp.Or(c.CommandTimeout, 15*time.Second)
	c.KeepAlive = cmp.Or(c.KeepAlive, 15*time.Second)
	logger := c.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg:      c,
		store:    NewStore(c.Pool),
		commands: newCommandClient(c.Redis, c.Prefix, c.Tracker.NodeID(), logger),
		hub:      newLiveHub(c.Redis, c.Prefix, logger),
		logger:   logger,
	}, nil
}

// Start subscribes to command replies and live events.
func (s *Service) Start(ctx context.Context) error {
	if err := s.commands.start(ctx); err != nil {
		return err
	}
	s.hub.start(ctx)
	return nil
}

// Stop closes the subscriptions.
func (s *Service) Stop() {
	s.hub.stop()
	s.commands.stop()
}

// Store exposes the service's store for read paths.
func (s *Service) Store() *Store { return s.store }

// CreateSessionParams is a new session.
type CreateSessionParams struct {
	Name      string
	Target    Target
	Roots     []Root
	CreatedBy string
}

// maxHeaderValue and maxHeaders bound what a session may send to its target.
const (
	maxHeaders     = 32
	maxHeaderValue = 8 << 10
	maxRoots       = 100
)

// reservedHeaders are set by the transport; a session may not override them.
var reservedHeaders = []string{"host", "content-length", "content-type", "accept", "connection", "transfer-encoding", //nolint:gochecknoglobals // lookup table
	"upgrade", "te", "trailer", "keep-alive", "proxy-authorization", "mcp-session-id", "mcp-protocol-version", "last-event-id"}

// validateTarget checks a target's shape and asks the SSRF guard whether it may be reached.
func (s *Service) validateTarget(ctx context.Context, t *Target) error {
	t.Transport = cmp.Or(t.Transport, TransportStreamableHTTP)
	if t.Transport != TransportStreamableHTTP && t.Transport != TransportSSE {
		return &ValidationError{Field: "target.transport", Reason: "want streamable_http or sse"}
	}
	t.ProtocolVersion = cmp.Or(t.ProtocolVersion, "auto")
	if !slices.Contains(ProtocolVersions, t.ProtocolVersion) {
		return &ValidationError{Field: "target.protocol_version", Reason: "want auto or one of " + strings.Join(ProtocolVersions[1:], ", ")}
	}
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &ValidationError{Field: "target.url", Reason: "want an absolute http or https URL"}
	}
	if u.User != nil {
		return &ValidationError{Field: "target.url", Reason: "credentials in the URL are not allowed; use headers or bearer_token"}
	}
	if len(t.URL) > 2048 {
		return &ValidationError{Field: "target.url", Reason: "at most 2048 characters"}
	}
	if len(t.Headers) > maxHeaders {
		return &ValidationError{Field: "target.headers", Reason: fmt.Sprintf("at most %d headers", maxHeaders)}
	}
	for name, value := range t.Headers {
		field := "target.headers." + name
		if !validHeaderName(name) {
			return &ValidationError{Field: field, Reason: "not a valid header name"}
		}
		if slices.Contains(reservedHeaders, strings.ToLower(name)) {
			return &ValidationError{Field: field, Reason: "set by the transport; cannot be overridden"}
		}
		if strings.EqualFold(name, "authorization") && t.BearerToken != "" {
			return &ValidationError{Field: field, Reason: "give either an Authorization header or bearer_token"}
		}
		if len(value) > maxHeaderValue || strings.ContainsAny(value, "\r\n\x00") {
			return &ValidationError{Field: field, Reason: "value too long or contains control characters"}
		}
	}
	if len(t.BearerToken) > maxHeaderValue || strings.ContainsAny(t.BearerToken, "\r\n\x00 ") {
		return &ValidationError{Field: "target.bearer_token", Reason: "too long or contains spaces or control characters"}
	}
	if err := s.cfg.Guard.CheckURL(ctx, t.URL); err != nil {
		var refused *netguard.RefusedError
		if errors.As(err, &refused) {
			return &TargetRefusedError{Field: "target.url", Reason: refused.Error(), Err: err}
		}
		return &TargetRefusedError{Field: "target.url", Reason: "cannot resolve the target host", Err: err}
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

func validateRoots(roots []Root) error {
	if len(roots) > maxRoots {
		return &ValidationError{Field: "roots", Reason: fmt.Sprintf("at most %d roots", maxRoots)}
	}
	for i, r := range roots {
		u, err := url.Parse(r.URI)
		if err != nil || u.Scheme == "" || len(r.URI) > 2048 {
			return &ValidationError{Field: fmt.Sprintf("roots.%d.uri", i), Reason: "want an absolute URI such as file:///path"}
		}
		if len(r.Name) > 200 {
			return &ValidationError{Field: fmt.Sprintf("roots.%d.name", i), Reason: "at most 200 characters"}
		}
	}
	return nil
}

// CreateSession stores a new session and wakes the workers so one connects it.
func (s *Service) CreateSession(ctx context.Context, tenantID string, p CreateSessionParams) (*Session, error) {
	if len(p.Name) > 200 {
		return nil, &ValidationError{Field: "name", Reason: "at most 200 characters"}
	}
	if err := validateRoots(p.Roots); err != nil {
		return nil, err
	}
	if err := s.validateTarget(ctx, &p.Target); err != nil {
		return nil, err
	}
	id := newID()
	sealed, err := sealSecrets(s.cfg.Keys, tenantID, id, p.Target)
	if err != nil {
		return nil, err
	}
	sess, err := s.store.insertSession(ctx, tenantID, insertSessionParams{
		ID: id, Name: p.Name, CreatedBy: p.CreatedBy, Target: p.Target, Sealed: sealed, Roots: p.Roots,
		MaxLive: s.cfg.MaxLiveSessions,
	}, s.audited(tenantID, audit.ActionSessionCreate, sessionTarget(id), map[string]any{
		"name": p.Name, "url": p.Target.URL, "transport": p.Target.Transport, "protocol_version": p.Target.ProtocolVersion,
		"header_names": slices.Sorted(maps.Keys(p.Target.Headers)), "has_bearer_token": p.Target.BearerToken != "",
	}))
	if err != nil {
		return nil, err
	}
	s.commands.wake(ctx)
	return sess, nil
}

// GetSession returns one session.
func (s *Service) GetSession(ctx context.Context, tenantID, id string) (*Session, error) {
	return s.store.GetSession(ctx, tenantID, id)
}

// ListSessions pages through a tenant's sessions.
func (s *Service) ListSessions(ctx context.Context, tenantID string, p ListSessionsParams) (*Page[Session], error) {
	return s.store.ListSessions(ctx, tenantID, p)
}

// publishCommitted publishes events an api transaction committed to a session's log (a close,
// a cancel), best effort: followers that miss them read them from PostgreSQL.
func (s *Service) publishCommitted(ctx context.Context, tenantID, sessionID string, events []Event) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := publishEvents(ctx, s.cfg.Redis, s.cfg.Prefix, tenantID, sessionID, events); err != nil {
		s.logger.WarnContext(ctx, "publish committed events", slog.Int("events", len(events)), slog.Any("error", err))
	}
}

// CloseSession closes a session; its history stays. Closing a closed session is a no-op.
func (s *Service) CloseSession(ctx context.Context, tenantID, id string) (*Session, error) {
	var reported []Event
	sess, changed, err := s.store.setSessionStatus(ctx, tenantID, id, []Status{StatusConnecting, StatusReady, StatusError}, StatusClosed, "closed by request",
		endWithSession(tenantID, id, &reported), s.audited(tenantID, audit.ActionSessionClose, sessionTarget(id), nil))
	if err != nil {
		return nil, err
	}
	if changed {
		// The close recorded what it ended, and itself, as events.
		s.publishCommitted(ctx, tenantID, id, reported)
		// The owner notices the status through the doorbell, cancels the calls the close
		// ended at the target and disconnects.
		_ = s.doorbell(ctx, tenantID, id, OpClose, nil)
	}
	return sess, nil
}

// ReconnectSession asks for a fresh connection to the same target. A closed or failed
// session becomes connecting again.
func (s *Service) ReconnectSession(ctx context.Context, tenantID, id string) (*Session, error) {
	sess, err := s.store.GetSession(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	if sess.Status == StatusClosed || sess.Status == StatusError {
		sess, _, err = s.store.setSessionStatus(ctx, tenantID, id, []Status{StatusClosed, StatusError}, StatusConnecting, "",
			liveSessionQuota(tenantID, s.cfg.MaxLiveSessions),
			s.audited(tenantID, audit.ActionSessionConnect, sessionTarget(id), nil))
		if err != nil {
			return nil, err
		}
		s.commands.wake(ctx)
		return sess, nil
	}
	if err := s.doorbell(ctx, tenantID, id, OpReconnect, nil); err != nil {
		return nil, err
	}
	if err := s.auditAfter(ctx, tenantID, audit.ActionSessionConnect, sessionTarget(id), nil); err != nil {
		return nil, err
	}
	return s.store.GetSession(ctx, tenantID, id)
}

// RequestOptions qualify a forwarded operation.
type RequestOptions struct {
	// Principal is who asks; it scopes IdempotencyKey.
	Principal string
	// IdempotencyKey, when set, makes the command's id a function of it and of the request:
	// a retry with the same key, on any api node, joins the command on the owner or gets its
	// reply, instead of sending the request to the target again.
	IdempotencyKey string
}

// idempotentCommandSpace is the UUIDv5 namespace of command ids derived from
// Idempotency-Keys.
var idempotentCommandSpace = uuid.MustParse("dbaa35c5-f754-4a71-bd43-827d2cfe498d") //nolint:gochecknoglobals // a constant UUID

// commandID names a forwarded operation's command: a fresh id, or with an Idempotency-Key
// one derived from the key and the request, so a key reused for a different request does
// not get the other one's reply.
func commandID(tenantID, sessionID string, op Op, params json.RawMessage, o *RequestOptions) string {
	if o == nil || o.IdempotencyKey == "" {
		return newID()
	}
	sum := sha256.Sum256(params)
	name := strings.Join([]string{tenantID, sessionID, o.Principal, string(op), o.IdempotencyKey, hex.EncodeToString(sum[:])}, "\x00")
	return uuid.NewSHA1(idempotentCommandSpace, []byte(name)).String()
}

// Request runs a fast operation on the session's live connection and returns the target's
// JSON result. A JSON-RPC error from the target is a *RemoteError. opts may be nil.
func (s *Service) Request(ctx context.Context, tenantID, sessionID string, op Op, params any, opts *RequestOptions) (json.RawMessage, error) {
	sess, err := s.store.GetSession(ctx, tenantID, sessionID)
	if err != nil {
		return nil, err
	}
	if sess.Status != StatusReady && sess.Status != StatusConnecting {
		return nil, fmt.Errorf("%w: it is %s", ErrNotReady, sess.Status)
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	if err := checkRequestURIs(op, raw); err != nil {
		return nil, err
	}
	cmd := &Command{ID: commandID(tenantID, sessionID, op, raw, opts), Op: op, TenantID: tenantID, Session: sessionID, Params: raw}
	rep, err := s.call(ctx, tenantID, sessionID, cmd)
	if err != nil {
		return nil, err
	}
	if action, ok := auditedOps[op]; ok {
		// Recorded once the worker acted, whatever the target answered.
		if err := s.auditAfter(ctx, tenantID, action, sessionTarget(sessionID), map[string]any{"op": op, "params": json.RawMessage(raw)}); err != nil {
			return nil, err
		}
	}
	return rep.Result, rep.err()
}

// auditedOps are the forwarded operations that change something at the target.
var auditedOps = map[Op]string{ //nolint:gochecknoglobals // lookup table
	OpRPC:             audit.ActionRPC,
	OpSubscribe:       audit.ActionRPC,
	OpUnsubscribe:     audit.ActionRPC,
	OpSetLoggingLevel: audit.ActionRPC,
}

// call delivers a command to the session's owner and waits for the reply, following the
// session to a new owner when it moves, until the command timeout.
func (s *Service) call(ctx context.Context, tenantID, sessionID string, cmd *Command) (_ *Reply, err error) {
	ctx, span := tracer.Start(ctx, "command "+string(cmd.Op), trace.WithSpanKind(trace.SpanKindProducer))
	defer func() {
		if err != nil {
			span.RecordError(err)
		}
		span.End()
	}()
	// The worker gives up on the target at the command's deadline and says so (codeTimeout);
	// the wait here lasts a little longer, so that answer, not a race with it, decides.
	cmd.Deadline = time.Now().Add(s.cfg.CommandTimeout)
	ctx, cancel := context.WithDeadline(ctx, cmd.Deadline.Add(replyGrace))
	defer cancel()
	for {
		node, err := s.awaitOwner(ctx, tenantID, sessionID)
		if err != nil {
			return nil, err
		}
		// Give each attempt a slice of the budget, so a command sent to an owner that
		// died is redelivered to the next one (the same id makes it harmless).
		actx, acancel := context.WithTimeout(ctx, max(s.cfg.CommandTimeout/3, time.Second))
		start := time.Now()
		rep, err := s.commands.request(actx, node, cmd)
		acancel()
		if err == nil {
			instruments.commandSeconds.Record(ctx, time.Since(start).Seconds())
		}
		switch {
		case err == nil && errors.Is(rep.err(), errNotOwner):
			// The session moved between our lookup and the delivery.
			node = ""
		case err == nil:
			return rep, nil
		case ctx.Err() != nil:
			return nil, s.unanswered(ctx, tenantID, sessionID, node, cmd.Op)
		case !errors.Is(err, context.DeadlineExceeded):
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, s.unanswered(ctx, tenantID, sessionID, node, cmd.Op)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// replyGrace is how long past a command's deadline its sender waits for the worker's own
// answer that the deadline passed.
const replyGrace = 250 * time.Millisecond

// unanswered is the error of a command without a reply in time. node is the owner the last
// attempt waited on, if any: when it still holds the session and is alive, it has the
// command and is waiting on the target; else no worker was there to answer.
func (s *Service) unanswered(ctx context.Context, tenantID, sessionID, node string, op Op) error {
	if node != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if o, err := s.cfg.Tracker.Owner(ctx, tracker.SessionRef(tenantID, sessionID)); err == nil && o.NodeID == node {
			return fmt.Errorf("%w: %s", ErrWorkerTimeout, op)
		}
	}
	return fmt.Errorf("%w: %s", ErrNoWorker, op)
}

// awaitOwner returns the node holding the session's lease, waiting (and waking workers)
// while nobody holds it.
func (s *Service) awaitOwner(ctx context.Context, tenantID, sessionID string) (string, error) {
	woke := false
	for {
		node, _, err := s.cfg.Tracker.LeaseHolder(ctx, tenantID, sessionID)
		if err == nil {
			return node, nil
		}
		if ctx.Err() != nil {
			// The command's time ran out during the look-up itself.
			return "", fmt.Errorf("%w: no worker holds the session", ErrNoWorker)
		}
		if !errors.Is(err, tracker.ErrNotFound) {
			return "", err
		}
		if !woke {
			s.commands.wake(ctx)
			woke = true
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: no worker holds the session", ErrNoWorker)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// doorbell tells the owner, if any, that durable state changed; without an owner the next
// owner reads that state when it adopts the session.
func (s *Service) doorbell(ctx context.Context, tenantID, sessionID string, op Op, params any) error {
	node, _, err := s.cfg.Tracker.LeaseHolder(ctx, tenantID, sessionID)
	return s.ring(ctx, tenantID, sessionID, op, params, node, err)
}

// ringAhead rings the session's owner in the background, before the change the doorbell
// announces is committed, and returns the outcome. The owner's reaction must wait for that
// commit: for a call, its claim waits on the lock the inserting transaction holds (see
// callLockSQL). The owner found is as good as one read after the commit: a doorbell to an
// owner that has just lost the session goes unanswered either way, and the next owner's
// sweep starts what it finds queued.
func (s *Service) ringAhead(ctx context.Context, tenantID, sessionID string, op Op, params any) <-chan error {
	rang := make(chan error, 1)
	go func() {
		ctx, span := tracer.Start(ctx, "command "+string(op), trace.WithSpanKind(trace.SpanKindProducer))
		defer span.End()
		node, _, err := s.cfg.Tracker.LeaseHolder(ctx, tenantID, sessionID)
		rang <- s.ring(ctx, tenantID, sessionID, op, params, node, err)
	}()
	return rang
}

func (s *Service) ring(ctx context.Context, tenantID, sessionID string, op Op, params any, node string, err error) error {
	if errors.Is(err, tracker.ErrNotFound) {
		s.commands.wake(ctx)
		return nil
	}
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(params)
	return s.commands.send(ctx, node, &Command{ID: newID(), Op: op, TenantID: tenantID, Session: sessionID, Params: raw,
		Deadline: time.Now().Add(s.cfg.CommandTimeout)})
}

// StartCallParams is a tool call.
type StartCallParams struct {
	Name      string
	Arguments json.RawMessage
	CreatedBy string
	// IdempotencyKey, when set, makes the call's id a function of it: repeating the request
	// with the same key returns the first call instead of starting another.
	IdempotencyKey string
	// Wait, when positive, waits up to that long for the call to finish and returns it as it
	// is then, finished or not.
	Wait time.Duration
}

// idempotentCallSpace is the UUIDv5 namespace of call ids derived from Idempotency-Keys.
var idempotentCallSpace = uuid.MustParse("5d0c3c1e-2a7b-4f57-9a43-6f1f7f3e8a10") //nolint:gochecknoglobals // a constant UUID

// StartCall queues a tool call and rings the owner. The call's progress and result arrive
// as events and in GetCall.
func (s *Service) StartCall(ctx context.Context, tenantID, sessionID string, p StartCallParams) (*Call, error) {
	if !validID(tenantID) || !validID(sessionID) {
		return nil, ErrNotFound
	}
	if p.Name == "" || len(p.Name) > 256 {
		return nil, &ValidationError{Field: "name", Reason: "a tool name of 1 to 256 characters"}
	}
	args := p.Arguments
	if len(args) == 0 || string(args) == "null" {
		args = json.RawMessage(`{}`)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(args, &obj); err != nil {
		return nil, &ValidationError{Field: "arguments", Reason: "must be a JSON object"}
	}
	callID := newID()
	if p.IdempotencyKey != "" {
		// The same key always names the same call, so a retry can never start a second one,
		// however long after the first it comes and whichever api pod takes it.
		callID = uuid.NewSHA1(idempotentCallSpace, []byte(tenantID+"\x00"+sessionID+"\x00"+p.CreatedBy+"\x00"+p.IdempotencyKey)).String()
	}
	// A waiting caller hears of the end straight from the owner, which sends the finished
	// call here once its row is committed; it is registered before the owner can know of
	// the call.
	var notice <-chan Reply
	if p.Wait > 0 {
		var stop func()
		notice, stop = s.commands.awaitNotice(callID)
		defer stop()
	}
	var audited *audit.Pipelined
	if s.cfg.Audit != nil {
		var err error
		audited, err = s.cfg.Audit.Pipeline(ctx, audit.Entry{TenantID: tenantID, Action: audit.ActionToolCall,
			Target: audit.Target{Type: "call", ID: callID}, Details: map[string]any{"session_id": sessionID, "tool": p.Name}})
		if err != nil {
			return nil, err
		}
	}
	// The owner is rung while the call is inserted: its claim waits for the insert.
	params := map[string]string{"call_id": callID}
	if notice != nil {
		params["notify"] = s.commands.node
	}
	rungAt := time.Now()
	rang := s.ringAhead(ctx, tenantID, sessionID, OpStartCall, params)
	call, existing, err := s.store.insertCall(ctx, tenantID, sessionID, callID, p.Name, args, p.CreatedBy, audited)
	if ringErr := <-rang; ringErr != nil && err == nil && !existing {
		s.logger.WarnContext(ctx, "call doorbell", slog.Any("error", ringErr))
	}
	if err != nil {
		return nil, err
	}
	if !existing && time.Since(rungAt) > claimPatience {
		// The insert was slow (a busy pool, a loaded database): the owner may have given up
		// looking for the row before it was there. Ring again now that it is; a claim of a
		// call already running changes nothing.
		if err := s.doorbell(ctx, tenantID, sessionID, OpStartCall, params); err != nil {
			s.logger.WarnContext(ctx, "call doorbell", slog.Any("error", err))
		}
	}
	if existing {
		notice = nil // started by an earlier request; its owner reports to that one
	}
	if p.Wait <= 0 || call.Status.Finished() {
		return call, nil
	}
	// The call is queued: whatever happens to the wait, answer with it.
	if done, err := s.waitCall(ctx, tenantID, sessionID, callID, p.Wait, notice); err == nil {
		call = done
	}
	return call, nil
}

// GetCall returns a call.
func (s *Service) GetCall(ctx context.Context, tenantID, sessionID, callID string) (*Call, error) {
	return s.store.GetCall(ctx, tenantID, sessionID, callID)
}

// WaitCall returns the call once it has finished or wait has passed, whichever is first.
func (s *Service) WaitCall(ctx context.Context, tenantID, sessionID, callID string, wait time.Duration) (*Call, error) {
	call, err := s.store.GetCall(ctx, tenantID, sessionID, callID)
	if err != nil || call.Status.Finished() || wait <= 0 {
		return call, err
	}
	return s.waitCall(ctx, tenantID, sessionID, callID, wait, nil)
}

// noticeGrace is how long a waiter counts on the owner's notice alone before it also follows
// the session's events: most calls end within it, and following costs a Redis subscription.
const noticeGrace = 250 * time.Millisecond

// waitCall waits for a call that had not finished when last read. notice, when not nil,
// carries the finished call from its owner; the session's call_result events, gaps in them
// and a slow poll of the row cover a notice that never comes (the owner died, the call moved).
func (s *Service) waitCall(ctx context.Context, tenantID, sessionID, callID string, wait time.Duration, notice <-chan Reply) (*Call, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	fromNotice := func(r Reply) (*Call, bool) {
		var c Call
		if json.Unmarshal(r.Result, &c) != nil || c.ID != callID || !c.Status.Finished() {
			return nil, false
		}
		return &c, true
	}
	if notice != nil {
		grace := time.NewTimer(noticeGrace)
		select {
		case r := <-notice:
			grace.Stop()
			if c, ok := fromNotice(r); ok {
				return c, nil
			}
		case <-grace.C:
		case <-ctx.Done():
			grace.Stop()
			return s.store.GetCall(context.WithoutCancel(ctx), tenantID, sessionID, callID)
		}
	}
	sub, err := s.hub.subscribe(ctx, tenantID, sessionID)
	if err != nil {
		if ctx.Err() != nil {
			// The wait ended while Redis confirmed the subscription: the call as it is.
			return s.store.GetCall(context.WithoutCancel(ctx), tenantID, sessionID, callID)
		}
		return nil, err
	}
	defer sub.close()
	// The result may have landed before the subscription.
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	for {
		call, err := s.store.GetCall(context.WithoutCancel(ctx), tenantID, sessionID, callID)
		if err != nil || call.Status.Finished() {
			return call, err
		}
		// Read the row again only when something may have finished the call: its result
		// event, a possible gap in the live stream, or the slow poll. Other events of a busy
		// session cost nothing.
	wait:
		for {
			select {
			case <-ctx.Done():
				return call, nil
			case r := <-notice:
				if c, ok := fromNotice(r); ok {
					return c, nil
				}
			case e := <-sub.C:
				if e.Type == EventCallResult && strings.Contains(string(e.Data), callID) {
					break wait
				}
			case <-sub.Resync:
				break wait
			case <-poll.C:
				break wait
			}
		}
	}
}

// CancelCall cancels a call: a queued one at once, a running one through its owner, which
// sends notifications/cancelled (or closes the request stream in 2026-07-28).
func (s *Service) CancelCall(ctx context.Context, tenantID, sessionID, callID string) (*Call, error) {
	call, err := s.store.GetCall(ctx, tenantID, sessionID, callID)
	if err != nil || call.Status.Finished() {
		return call, err
	}
	if call.Status == CallQueued {
		ok, reported, err := s.store.cancelQueuedCall(ctx, tenantID, sessionID, callID,
			s.audited(tenantID, audit.ActionCallCancel, audit.Target{Type: "call", ID: callID}, map[string]any{"session_id": sessionID}))
		if err != nil {
			return nil, err
		}
		if ok {
			s.publishCommitted(ctx, tenantID, sessionID, reported)
			return s.store.GetCall(ctx, tenantID, sessionID, callID)
		}
	}
	raw, _ := json.Marshal(map[string]string{"call_id": callID})
	if _, err := s.call(ctx, tenantID, sessionID, &Command{ID: newID(), Op: OpCancelCall, TenantID: tenantID, Session: sessionID, Params: raw}); err != nil {
		return nil, err
	}
	if err := s.auditAfter(ctx, tenantID, audit.ActionCallCancel, audit.Target{Type: "call", ID: callID}, map[string]any{"session_id": sessionID}); err != nil {
		return nil, err
	}
	return s.WaitCall(ctx, tenantID, sessionID, callID, 2*time.Second)
}

// ListCalls returns a session's recent calls.
func (s *Service) ListCalls(ctx context.Context, tenantID, sessionID string, limit int) ([]Call, error) {
	return s.store.ListCalls(ctx, tenantID, sessionID, limit)
}

// ListPending lists a session's parked requests (statuses filters; none = all).
func (s *Service) ListPending(ctx context.Context, tenantID, sessionID string, statuses []PendingStatus) ([]Pending, error) {
	return s.store.ListPending(ctx, tenantID, sessionID, statuses)
}

// AnswerPending records a person's answer to a parked request and rings the owner, which
// sends it to the target. Answering twice is ErrConflict.
func (s *Service) AnswerPending(ctx context.Context, tenantID, sessionID, requestID, by string, a PendingAnswer) (*Pending, error) {
	p, err := s.store.GetPending(ctx, tenantID, sessionID, requestID)
	if err != nil {
		return nil, err
	}
	if p.Status != PendingWaiting {
		return nil, fmt.Errorf("%w: the request is %s", ErrConflict, p.Status)
	}
	if err := validateAnswer(p.Kind, &a); err != nil {
		return nil, err
	}
	answer, _ := json.Marshal(a)
	status := PendingAnswered
	if a.Action == "cancel" {
		status = PendingCancelled
	}
	out, changed, err := s.store.resolvePending(ctx, tenantID, sessionID, requestID, status, answer, by,
		s.audited(tenantID, audit.ActionPendingAnswer, audit.Target{Type: "pending_request", ID: requestID},
			map[string]any{"session_id": sessionID, "kind": p.Kind, "status": status, "action": a.Action}))
	if err != nil {
		return nil, err
	}
	if !changed {
		return nil, fmt.Errorf("%w: the request is %s", ErrConflict, out.Status)
	}
	if err := s.doorbell(ctx, tenantID, sessionID, OpAnswerPending, map[string]string{"request_id": requestID}); err != nil {
		s.logger.WarnContext(ctx, "answer doorbell", slog.Any("error", err))
	}
	return out, nil
}

func validateAnswer(kind PendingKind, a *PendingAnswer) error {
	switch kind {
	case PendingSampling:
		if (len(a.Result) == 0) == (a.Error == nil) {
			return &ValidationError{Field: "result", Reason: "give either result (a CreateMessageResult) or error"}
		}
		if len(a.Result) > 0 {
			var r struct {
				Role    string          `json:"role"`
				Model   string          `json:"model"`
				Content json.RawMessage `json:"content"`
			}
			if err := json.Unmarshal(a.Result, &r); err != nil || r.Content == nil || r.Role == "" {
				return &ValidationError{Field: "result", Reason: "a CreateMessageResult needs role, model and content"}
			}
		}
	case PendingElicitation, PendingInputRequired:
		switch a.Action {
		case "accept":
			if len(a.Content) > 0 {
				var obj map[string]any
				if err := json.Unmarshal(a.Content, &obj); err != nil {
					return &ValidationError{Field: "content", Reason: "must be a JSON object"}
				}
			}
		case "decline", "cancel":
			if len(a.Content) > 0 && string(a.Content) != "null" {
				return &ValidationError{Field: "content", Reason: "only an accepted elicitation carries content"}
			}
		default:
			if kind == PendingInputRequired && (len(a.Result) > 0 || a.Error != nil) {
				return nil
			}
			return &ValidationError{Field: "action", Reason: "want accept, decline or cancel"}
		}
	}
	return nil
}

// SetRoots replaces the session's roots; the owner sends notifications/roots/list_changed.
// opts may be nil; with an Idempotency-Key, a retry of the change reaches the owner as the
// same command, so the target hears of it once.
func (s *Service) SetRoots(ctx context.Context, tenantID, sessionID string, roots []Root, opts *RequestOptions) ([]Root, error) {
	if err := validateRoots(roots); err != nil {
		return nil, err
	}
	roots = nonNilRoots(roots)
	sess, err := s.store.GetSession(ctx, tenantID, sessionID)
	if err != nil {
		return nil, err
	}
	if sess.Status.Live() {
		if _, err := s.Request(ctx, tenantID, sessionID, OpSetRoots, map[string]any{"roots": roots}, opts); err != nil {
			return nil, err
		}
		if err := s.auditAfter(ctx, tenantID, audit.ActionRootsUpdate, sessionTarget(sessionID), map[string]any{"roots": roots}); err != nil {
			return nil, err
		}
		return roots, nil
	}
	// Not connected: remember them for the next connection.
	if err := s.store.setRootsOffline(ctx, tenantID, sessionID, roots,
		s.audited(tenantID, audit.ActionRootsUpdate, sessionTarget(sessionID), map[string]any{"roots": roots})); err != nil {
		return nil, err
	}
	return roots, nil
}

// Events returns a page of a session's events.
func (s *Service) Events(ctx context.Context, tenantID, sessionID string, p EventsParams) ([]Event, error) {
	return s.store.Events(ctx, tenantID, sessionID, p)
}

// EventPage returns a page of a session's events and the seqs right before it that retention
// deleted (see Store.EventPage).
func (s *Service) EventPage(ctx context.Context, tenantID, sessionID string, p EventsParams) (EventPage, error) {
	return s.store.EventPage(ctx, tenantID, sessionID, p)
}

// ExportEvents streams a session's whole history.
func (s *Service) ExportEvents(ctx context.Context, tenantID, sessionID string, fn func(Event) error) error {
	return s.store.ExportEvents(ctx, tenantID, sessionID, fn)
}
