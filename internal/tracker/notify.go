package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// NotificationKind is what a notification says.
type NotificationKind uint8

// Notification kinds (the MCP notifications the tracker routes).
const (
	// ResourceUpdated: the resource URI changed; sent to its listeners.
	ResourceUpdated NotificationKind = iota + 1
	// ToolsListChanged: the tenant's tool list changed; sent to every session.
	ToolsListChanged
	// PromptsListChanged: the tenant's prompt list changed; sent to every session.
	PromptsListChanged
	// ResourcesListChanged: the tenant's resource list changed; sent to every session.
	ResourcesListChanged
	// ElicitationComplete: a URL-mode elicitation finished; sent to the node
	// tracking the request whose ID is the elicitation id.
	ElicitationComplete

	// kindRebuild asks a node to re-assert its entries (sent by the reaper
	// when it purged a node that turned out to be alive).
	kindRebuild NotificationKind = 100
)

// String returns the kind's name.
func (k NotificationKind) String() string {
	switch k {
	case ResourceUpdated:
		return "resource_updated"
	case ToolsListChanged:
		return "tools_list_changed"
	case PromptsListChanged:
		return "prompts_list_changed"
	case ResourcesListChanged:
		return "resources_list_changed"
	case ElicitationComplete:
		return "elicitation_complete"
	case kindRebuild:
		return "rebuild"
	}
	return fmt.Sprintf("NotificationKind(%d)", uint8(k))
}

// Notification is delivered to Config.OnNotify on the node holding the target
// session, once per target session.
type Notification struct {
	Kind    NotificationKind
	Tenant  string
	Session string
	// URI is set for ResourceUpdated.
	URI string
	// ElicitationID is set for ElicitationComplete.
	ElicitationID string
	// Seq is the message's sequence number on this node's inbox.
	Seq uint64
}

// GapReason says why notifications may have been missed.
type GapReason uint8

// Gap reasons.
const (
	// GapSequence: a message arrived with a sequence number past the next one.
	GapSequence GapReason = iota + 1
	// GapMissed: Redis's sequence stayed ahead of what arrived for a whole
	// heartbeat (the last messages were lost).
	GapMissed
	// GapReconnect: the subscription reconnected and messages were published
	// meanwhile.
	GapReconnect
	// GapDataLoss: Redis lost data; the node re-asserted its state and
	// sequence numbers restart.
	GapDataLoss
)

// String returns the reason's name.
func (r GapReason) String() string {
	switch r {
	case GapSequence:
		return "sequence"
	case GapMissed:
		return "missed"
	case GapReconnect:
		return "reconnect"
	case GapDataLoss:
		return "data_loss"
	}
	return fmt.Sprintf("GapReason(%d)", uint8(r))
}

// Gap tells Config.OnGap that notifications may have been lost: the receiver
// resyncs (re-reads lists and resources) instead of trusting its deltas.
type Gap struct {
	Reason GapReason
	// Expected and Got are inbox sequence numbers, when known.
	Expected, Got uint64
}

// wireMsg is the JSON after "<seq>|" in an inbox message.
type wireMsg struct {
	K NotificationKind `json:"k"`
	T string           `json:"t,omitempty"`
	S []string         `json:"s,omitempty"`
	U string           `json:"u,omitempty"`
	E string           `json:"e,omitempty"`
}

// publish numbers and publishes m on node's inbox.
func (t *Tracker) publish(ctx context.Context, node string, m wireMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("tracker: encode notification: %w", err)
	}
	err = publishScript.Run(ctx, t.rdb, []string{t.k.nodeSeq(node)}, t.k.inbox(node), string(b)).Err()
	return mapErr("publish", err)
}

// NotifyResourceUpdated tells every live listener of uri in the tenant, on
// whichever node, that the resource changed. It returns how many listeners
// were addressed.
func (t *Tracker) NotifyResourceUpdated(ctx context.Context, tenant, uri string) (n int, err error) {
	ctx, span := startSpan(ctx, "tracker.NotifyResourceUpdated")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return 0, err
	}
	uh, err := uriHash(uri)
	if err != nil {
		return 0, err
	}
	all, err := t.rdb.HGetAll(ctx, t.k.rsub(et, uh)).Result()
	if err != nil {
		return 0, mapErr("notify resource updated", err)
	}
	byNode := map[string][]string{}
	for _, v := range all {
		node, session, ok := strings.Cut(v, "|")
		if ok && node != "" {
			byNode[node] = append(byNode[node], session)
		}
	}
	return t.fanOut(ctx, byNode, wireMsg{K: ResourceUpdated, T: tenant, U: uri})
}

// NotifyToolsListChanged tells every live session of the tenant that its
// tool list changed. It returns how many sessions were addressed.
func (t *Tracker) NotifyToolsListChanged(ctx context.Context, tenant string) (int, error) {
	return t.notifySessions(ctx, tenant, ToolsListChanged)
}

// NotifyPromptsListChanged tells every live session of the tenant that its
// prompt list changed.
func (t *Tracker) NotifyPromptsListChanged(ctx context.Context, tenant string) (int, error) {
	return t.notifySessions(ctx, tenant, PromptsListChanged)
}

// NotifyResourcesListChanged tells every live session of the tenant that its
// resource list changed.
func (t *Tracker) NotifyResourcesListChanged(ctx context.Context, tenant string) (int, error) {
	return t.notifySessions(ctx, tenant, ResourcesListChanged)
}

func (t *Tracker) notifySessions(ctx context.Context, tenant string, kind NotificationKind) (n int, err error) {
	ctx, span := startSpan(ctx, "tracker.Notify"+kind.String())
	defer func() { endSpan(span, err) }()
	sessions, err := t.ListSessions(ctx, tenant)
	if err != nil {
		return 0, err
	}
	byNode := map[string][]string{}
	for _, s := range sessions {
		byNode[s.NodeID] = append(byNode[s.NodeID], s.Ref.Session)
	}
	return t.fanOut(ctx, byNode, wireMsg{K: kind, T: tenant})
}

// NotifyElicitationComplete tells the node tracking RequestRef(tenant,
// session, elicitationID) that the elicitation finished. ErrNotFound if no
// live node tracks it.
func (t *Tracker) NotifyElicitationComplete(ctx context.Context, tenant, session, elicitationID string) (err error) {
	ctx, span := startSpan(ctx, "tracker.NotifyElicitationComplete")
	defer func() { endSpan(span, err) }()
	e, err := t.Get(ctx, RequestRef(tenant, session, elicitationID))
	if err != nil {
		return err
	}
	return t.publish(ctx, e.NodeID, wireMsg{K: ElicitationComplete, T: tenant, S: []string{session}, E: elicitationID})
}

// fanOut publishes one message per live node, naming that node's sessions.
func (t *Tracker) fanOut(ctx context.Context, byNode map[string][]string, m wireMsg) (int, error) {
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	live, err := t.liveNodes(ctx, nodes)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for node, sessions := range byNode {
		if _, ok := live[node]; !ok {
			continue
		}
		m.S = sessions
		if err := t.publish(ctx, node, m); err != nil {
			errs = append(errs, err)
			continue
		}
		n += len(sessions)
	}
	return n, errors.Join(errs...)
}

// receiveLoop reads this node's inbox until Stop closes the subscription.
func (t *Tracker) receiveLoop(ctx context.Context) {
	subscriptions := 1 // Start consumed the first confirmation
	backoff := 50 * time.Millisecond
	for {
		// A bounded wait, so a cancelled ctx ends the loop even before Stop.
		msg, err := t.ps.ReceiveTimeout(ctx, t.cfg.HeartbeatInterval)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				continue
			}
			t.log.Warn("tracker inbox receive failed; resubscribing", "err", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				subscriptions++
				if subscriptions > 1 {
					t.checkAfterReconnect(ctx)
				}
			}
		case *redis.Message:
			t.handleMessage(ctx, m.Payload)
		}
	}
}

// checkAfterReconnect reports a gap if messages were published while the
// subscription was down. It may report one that was not lost: resyncing is
// always safe, missing a loss is not.
func (t *Tracker) checkAfterReconnect(ctx context.Context) {
	v, err := t.rdb.Get(ctx, t.k.nodeSeq(t.nodeID)).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.gap(ctx, Gap{Reason: GapReconnect})
		return
	}
	last := t.lastSeq.Load()
	if v > last && t.advanceSeq(last, v) {
		t.gap(ctx, Gap{Reason: GapReconnect, Expected: last + 1, Got: v})
	}
}

func (t *Tracker) handleMessage(ctx context.Context, payload string) {
	seqStr, js, ok := strings.Cut(payload, "|")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	var m wireMsg
	if !ok || err != nil || json.Unmarshal([]byte(js), &m) != nil {
		t.log.Warn("tracker: malformed inbox message", "payload", payload)
		return
	}
	for {
		last := t.lastSeq.Load()
		if seq <= last {
			break // late, or the heartbeat already reported it missing
		}
		if t.lastSeq.CompareAndSwap(last, seq) {
			if seq > last+1 {
				t.gap(ctx, Gap{Reason: GapSequence, Expected: last + 1, Got: seq})
			}
			break
		}
	}
	if m.K == kindRebuild {
		select {
		case t.rebuildCh <- struct{}{}:
		default:
		}
		return
	}
	if t.cfg.OnNotify == nil {
		return
	}
	for _, s := range m.S {
		if !t.holdsTarget(m, s) {
			continue
		}
		t.cfg.OnNotify(ctx, Notification{Kind: m.K, Tenant: m.T, Session: s, URI: m.U, ElicitationID: m.E, Seq: seq})
	}
}

// holdsTarget reports whether this node still holds what a message targets,
// so only the subscribed listeners are told, even if Redis was stale.
func (t *Tracker) holdsTarget(m wireMsg, session string) bool {
	var (
		l   loc
		err error
	)
	switch m.K {
	case ResourceUpdated:
		var h *held
		h, err = t.listener(m.T, session, m.U)
		if err == nil {
			l = h.loc
		}
	case ElicitationComplete:
		l, err = t.locate(RequestRef(m.T, session, m.E))
	default:
		l, err = t.locate(SessionRef(m.T, session))
	}
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.entries[l.ref]
	return ok
}
