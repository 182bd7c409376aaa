package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kind is the kind of a presence entry.
type Kind uint8

// Presence entry kinds.
const (
	// KindSession is an inspector session, tracked by the node that owns it.
	KindSession Kind = iota + 1
	// KindRequest is a request in a session: a call in flight, a pending
	// sampling or elicitation request (ID = the elicitation id).
	KindRequest
	// KindStream is a live stream of a session, e.g. a browser's SSE watcher.
	KindStream
	kindListener // a resource listener; see SubscribeResource
)

// String returns "session", "request", "stream" or "listener".
func (k Kind) String() string {
	switch k {
	case KindSession:
		return "session"
	case KindRequest:
		return "request"
	case KindStream:
		return "stream"
	case kindListener:
		return "listener"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Ref names one presence entry. Every entry belongs to a tenant and a session;
// ID is the request or stream id and is empty for a session.
type Ref struct {
	Kind    Kind
	Tenant  string
	Session string
	ID      string
}

// SessionRef names a session entry.
func SessionRef(tenant, session string) Ref {
	return Ref{Kind: KindSession, Tenant: tenant, Session: session}
}

// RequestRef names a request entry of a session.
func RequestRef(tenant, session, requestID string) Ref {
	return Ref{Kind: KindRequest, Tenant: tenant, Session: session, ID: requestID}
}

// StreamRef names a stream entry of a session.
func StreamRef(tenant, session, streamID string) Ref {
	return Ref{Kind: KindStream, Tenant: tenant, Session: session, ID: streamID}
}

// Meta is an entry's metadata.
type Meta map[string]string

// Entry is a presence entry as read from Redis.
type Entry struct {
	Ref Ref
	// NodeID is the node that tracks the entry; Addr its internal address.
	NodeID string
	Addr   string
	Meta   Meta
	// Since is when the entry was tracked (the tracking node's clock).
	Since time.Time
}

// Owner is the node holding an entry and how to reach it.
type Owner struct {
	NodeID string
	Addr   string
}

// Listener is a session subscribed to a resource.
type Listener struct {
	Tenant  string
	Session string
	URI     string
	NodeID  string
	Addr    string
	Since   time.Time
}

// loc is where an entry lives in Redis.
type loc struct {
	key   string // hash holding the entry
	field string
	ref   string // member of the node's entry index
	key2  string // listener only: the per-resource hash
}

// locate validates and escapes a Ref.
func (t *Tracker) locate(r Ref) (loc, error) {
	et, err := escapeID("tenant id", r.Tenant)
	if err != nil {
		return loc{}, err
	}
	es, err := escapeID("session id", r.Session)
	if err != nil {
		return loc{}, err
	}
	var ei string
	switch r.Kind {
	case KindSession:
		if r.ID != "" {
			return loc{}, fmt.Errorf("%w: a session ref has no ID", ErrInvalidID)
		}
	case KindRequest, KindStream:
		if ei, err = escapeID(r.Kind.String()+" id", r.ID); err != nil {
			return loc{}, err
		}
	default:
		return loc{}, fmt.Errorf("%w: unknown kind %v", ErrInvalidID, r.Kind)
	}
	return t.k.locEscaped(r.Kind, et, es, ei), nil
}

// locEscaped builds the location from escaped parts (also used by the reaper,
// which reads them back from a node's entry index). For a listener, id is the
// URI hash.
func (k keys) locEscaped(kind Kind, et, es, ei string) loc {
	switch kind {
	case KindSession:
		return loc{key: k.sessions(et), field: es, ref: "s:" + et + ":" + es}
	case KindRequest:
		return loc{key: k.requests(et), field: es + ":" + ei, ref: "r:" + et + ":" + es + ":" + ei}
	case KindStream:
		return loc{key: k.streams(et, es), field: ei, ref: "x:" + et + ":" + es + ":" + ei}
	default:
		return loc{key: k.rsubs(et), field: es + ":" + ei, ref: "u:" + et + ":" + es + ":" + ei, key2: k.rsub(et, ei)}
	}
}

// parseRef is the inverse of the ref part of locEscaped.
func (k keys) parseRef(ref string) (Kind, loc, bool) {
	parts := strings.Split(ref, ":")
	var kind Kind
	switch {
	case len(parts) == 3 && parts[0] == "s":
		kind = KindSession
	case len(parts) == 4 && parts[0] == "r":
		kind = KindRequest
	case len(parts) == 4 && parts[0] == "x":
		kind = KindStream
	case len(parts) == 4 && parts[0] == "u":
		kind = kindListener
	default:
		return 0, loc{}, false
	}
	for _, p := range parts[1:] {
		if p == "" {
			return 0, loc{}, false
		}
	}
	id := ""
	if len(parts) == 4 {
		id = parts[3]
	}
	return kind, k.locEscaped(kind, parts[1], parts[2], id), true
}

// wireEntry is the JSON after "<node>|" in a hash value.
type wireEntry struct {
	S string `json:"s"`
	I string `json:"i,omitempty"`
	U string `json:"u,omitempty"`
	M Meta   `json:"m,omitempty"`
	T int64  `json:"t"`
}

// held is an entry this node holds, in the in-process registry: the source of
// truth that rebuild re-asserts.
type held struct {
	loc
	kind   Kind
	tenant string
	wire   wireEntry
	value  string // "<node>|<json>"
	value2 string // listener: "<node>|<raw session>" in the per-resource hash
	field2 string // listener: escaped session, field in the per-resource hash
}

func (t *Tracker) encode(h *held) error {
	b, err := json.Marshal(h.wire)
	if err != nil {
		return fmt.Errorf("tracker: encode entry: %w", err)
	}
	h.value = t.prefix + string(b)
	return nil
}

// write queues the commands that put h in Redis. With nx (rebuild) it only
// fills a missing entry, so a newer owner's entry is never replaced.
func (h *held) write(ctx context.Context, t *Tracker, p redis.Pipeliner, nx bool) {
	switch {
	case h.kind == kindListener:
		flag := "0"
		if nx {
			flag = "1"
		}
		subscribeScript.Eval(ctx, p, []string{h.key, h.key2}, h.field, h.value, h.field2, h.value2, flag)
	case nx:
		p.HSetNX(ctx, h.key, h.field, h.value)
	default:
		p.HSet(ctx, h.key, h.field, h.value)
	}
	p.SAdd(ctx, t.k.nodeEntries(t.nodeID), h.ref)
}

// unwrite queues the commands that remove node's entry at l.
func (k keys) unwrite(ctx context.Context, p redis.Pipeliner, kind Kind, l loc, node, field2 string) {
	if kind == kindListener {
		unsubscribeScript.Eval(ctx, p, []string{l.key, l.key2}, l.field, node+"|", field2)
	} else {
		cdelField.Eval(ctx, p, []string{l.key}, l.field, node+"|")
	}
	p.SRem(ctx, k.nodeEntries(node), l.ref)
}

// Track records that this node holds the entry r, with metadata. Tracking an
// entry again replaces its metadata; tracking an entry another node holds
// takes it over (the newest tracker owns it). Presence is not a lock: use a
// lease for exclusive ownership.
func (t *Tracker) Track(ctx context.Context, r Ref, meta Meta) (err error) {
	ctx, span := startSpan(ctx, "tracker.Track")
	defer func() { endSpan(span, err) }()
	l, err := t.locate(r)
	if err != nil {
		return err
	}
	h := &held{loc: l, kind: r.Kind, tenant: r.Tenant,
		wire: wireEntry{S: r.Session, I: r.ID, M: maps.Clone(meta), T: time.Now().UnixMilli()}}
	if err := t.encode(h); err != nil {
		return err
	}
	return t.hold(ctx, h, "track")
}

// hold puts h in the registry, then in Redis.
func (t *Tracker) hold(ctx context.Context, h *held, op string) error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return ErrStopped
	}
	prev := t.entries[h.ref]
	t.entries[h.ref] = h
	t.mu.Unlock()
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		h.write(ctx, t, p, false)
		return nil
	})
	if err != nil {
		t.mu.Lock()
		if t.entries[h.ref] == h {
			if prev != nil {
				t.entries[h.ref] = prev
			} else {
				delete(t.entries, h.ref)
			}
		}
		t.mu.Unlock()
		return mapErr(op, err)
	}
	return nil
}

// Untrack removes an entry this node holds. It returns ErrNotHeld when the
// node does not hold r; another node's entry is never removed (ask that node).
func (t *Tracker) Untrack(ctx context.Context, r Ref) (err error) {
	ctx, span := startSpan(ctx, "tracker.Untrack")
	defer func() { endSpan(span, err) }()
	l, err := t.locate(r)
	if err != nil {
		return err
	}
	return t.release(ctx, l.ref, "untrack")
}

// release drops a held entry from the registry and from Redis.
func (t *Tracker) release(ctx context.Context, ref, op string) error {
	t.rebuildMu.RLock()
	defer t.rebuildMu.RUnlock()
	t.mu.Lock()
	h, ok := t.entries[ref]
	delete(t.entries, ref)
	t.mu.Unlock()
	if !ok {
		return ErrNotHeld
	}
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		t.k.unwrite(ctx, p, h.kind, h.loc, t.nodeID, h.field2)
		return nil
	})
	return mapErr(op, err)
}

// UntrackNode removes every entry of a node and returns how many it removed.
// For this node it empties the local registry too (leases and claims are not
// touched). Another node's entries are removed only once that node is dead
// (its key expired); ErrNodeAlive otherwise.
func (t *Tracker) UntrackNode(ctx context.Context, nodeID string) (n int, err error) {
	ctx, span := startSpan(ctx, "tracker.UntrackNode")
	defer func() { endSpan(span, err) }()
	if nodeID == t.nodeID {
		return t.untrackAllLocal(ctx)
	}
	if !validNodeID(nodeID) {
		return 0, fmt.Errorf("%w: node id %q", ErrInvalidID, nodeID)
	}
	alive, err := t.rdb.Exists(ctx, t.k.node(nodeID)).Result()
	if err != nil {
		return 0, mapErr("untrack node", err)
	}
	if alive == 1 {
		return 0, ErrNodeAlive
	}
	return t.purgeNode(ctx, nodeID)
}

func (t *Tracker) untrackAllLocal(ctx context.Context) (int, error) {
	t.rebuildMu.RLock()
	defer t.rebuildMu.RUnlock()
	t.mu.Lock()
	all := t.entries
	t.entries = make(map[string]*held)
	t.mu.Unlock()
	hs := make([]*held, 0, len(all))
	for _, h := range all {
		hs = append(hs, h)
	}
	const batch = 1000
	for i := 0; i < len(hs); i += batch {
		part := hs[i:min(i+batch, len(hs))]
		_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range part {
				t.k.unwrite(ctx, p, h.kind, h.loc, t.nodeID, h.field2)
			}
			return nil
		})
		if err != nil {
			return i, mapErr("untrack node", err)
		}
	}
	return len(hs), nil
}

// purgeNode removes a dead node's entries using its entry index, then forgets
// the node. Deletes compare the node id, so an entry taken over by a live node
// survives.
func (t *Tracker) purgeNode(ctx context.Context, node string) (int, error) {
	refs, err := t.rdb.SMembers(ctx, t.k.nodeEntries(node)).Result()
	if err != nil {
		return 0, mapErr("purge node", err)
	}
	const batch = 500
	for i := 0; i < len(refs); i += batch {
		part := refs[i:min(i+batch, len(refs))]
		_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, ref := range part {
				kind, l, ok := t.k.parseRef(ref)
				if !ok {
					continue
				}
				field2 := ""
				if kind == kindListener {
					field2 = strings.Split(ref, ":")[2]
				}
				t.k.unwrite(ctx, p, kind, l, node, field2)
			}
			return nil
		})
		if err != nil {
			return i, mapErr("purge node", err)
		}
	}
	_, err = t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, t.k.nodeEntries(node))
		p.Del(ctx, t.k.nodeSeq(node))
		p.ZRem(ctx, t.k.nodes(), node)
		return nil
	})
	return len(refs), mapErr("purge node", err)
}

// Get returns the entry r if it exists and its node is alive.
func (t *Tracker) Get(ctx context.Context, r Ref) (e Entry, err error) {
	ctx, span := startSpan(ctx, "tracker.Get")
	defer func() { endSpan(span, err) }()
	l, err := t.locate(r)
	if err != nil {
		return Entry{}, err
	}
	v, err := t.rdb.HGet(ctx, l.key, l.field).Result()
	if err != nil {
		return Entry{}, mapErr("get", err)
	}
	node, w, ok := decodeValue(v)
	if !ok {
		return Entry{}, ErrNotFound
	}
	live, err := t.liveNodes(ctx, []string{node})
	if err != nil {
		return Entry{}, err
	}
	addr, alive := live[node]
	if !alive {
		return Entry{}, ErrNotFound
	}
	return Entry{Ref: r, NodeID: node, Addr: addr, Meta: w.M, Since: time.UnixMilli(w.T)}, nil
}

// Owner returns the node holding r and its address; ErrNotFound when nobody
// alive holds it.
func (t *Tracker) Owner(ctx context.Context, r Ref) (Owner, error) {
	e, err := t.Get(ctx, r)
	if err != nil {
		return Owner{}, err
	}
	return Owner{NodeID: e.NodeID, Addr: e.Addr}, nil
}

// UpdateMeta merges meta into the metadata of an entry this node holds and
// returns the result. Only the holder updates an entry (ErrNotHeld
// otherwise), so its registry, which rebuild re-asserts, stays the truth.
func (t *Tracker) UpdateMeta(ctx context.Context, r Ref, meta Meta) (out Meta, err error) {
	ctx, span := startSpan(ctx, "tracker.UpdateMeta")
	defer func() { endSpan(span, err) }()
	l, err := t.locate(r)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	old, ok := t.entries[l.ref]
	if !ok {
		t.mu.Unlock()
		return nil, ErrNotHeld
	}
	h := *old
	h.wire.M = maps.Clone(old.wire.M)
	if h.wire.M == nil {
		h.wire.M = Meta{}
	}
	maps.Copy(h.wire.M, meta)
	if err := t.encode(&h); err != nil {
		t.mu.Unlock()
		return nil, err
	}
	t.entries[l.ref] = &h
	t.mu.Unlock()
	n, err := casField.Run(ctx, t.rdb, []string{l.key}, l.field, t.prefix, h.value).Int()
	if err != nil {
		return nil, mapErr("update meta", err)
	}
	if n == 0 {
		t.mu.Lock()
		if t.entries[l.ref] == &h {
			delete(t.entries, l.ref)
		}
		t.mu.Unlock()
		return nil, ErrNotHeld
	}
	return maps.Clone(h.wire.M), nil
}

// ListSessions lists the live sessions of a tenant.
func (t *Tracker) ListSessions(ctx context.Context, tenant string) (es []Entry, err error) {
	ctx, span := startSpan(ctx, "tracker.ListSessions")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return nil, err
	}
	return t.list(ctx, KindSession, tenant, t.k.sessions(et))
}

// ListRequests lists the live requests of every session of a tenant.
func (t *Tracker) ListRequests(ctx context.Context, tenant string) (es []Entry, err error) {
	ctx, span := startSpan(ctx, "tracker.ListRequests")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return nil, err
	}
	return t.list(ctx, KindRequest, tenant, t.k.requests(et))
}

// StreamsOf lists the live streams of one session, on every node.
func (t *Tracker) StreamsOf(ctx context.Context, tenant, session string) (es []Entry, err error) {
	ctx, span := startSpan(ctx, "tracker.StreamsOf")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return nil, err
	}
	es2, err := escapeID("session id", session)
	if err != nil {
		return nil, err
	}
	return t.list(ctx, KindStream, tenant, t.k.streams(et, es2))
}

// list reads one presence hash and keeps the entries of live nodes.
func (t *Tracker) list(ctx context.Context, kind Kind, tenant, key string) ([]Entry, error) {
	all, err := t.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, mapErr("list "+kind.String()+"s", err)
	}
	type raw struct {
		node string
		w    wireEntry
	}
	rows := make([]raw, 0, len(all))
	nodes := make([]string, 0, 4)
	for _, v := range all {
		node, w, ok := decodeValue(v)
		if !ok {
			continue
		}
		rows = append(rows, raw{node, w})
		nodes = append(nodes, node)
	}
	live, err := t.liveNodes(ctx, nodes)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(rows))
	for _, r := range rows {
		addr, ok := live[r.node]
		if !ok {
			continue
		}
		out = append(out, Entry{
			Ref:    Ref{Kind: kind, Tenant: tenant, Session: r.w.S, ID: r.w.I},
			NodeID: r.node, Addr: addr, Meta: r.w.M, Since: time.UnixMilli(r.w.T),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref.Session != out[j].Ref.Session {
			return out[i].Ref.Session < out[j].Ref.Session
		}
		return out[i].Ref.ID < out[j].Ref.ID
	})
	return out, nil
}

// liveNodes returns the address of every live node among nodes: one
// pipelined HGET per distinct node.
func (t *Tracker) liveNodes(ctx context.Context, nodes []string) (map[string]string, error) {
	uniq := make(map[string]*redis.StringCmd, len(nodes))
	for _, n := range nodes {
		uniq[n] = nil
	}
	if len(uniq) == 0 {
		return map[string]string{}, nil
	}
	_, err := t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for n := range uniq {
			uniq[n] = p.HGet(ctx, t.k.node(n), "addr")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, mapErr("node liveness", err)
	}
	live := make(map[string]string, len(uniq))
	for n, c := range uniq {
		if c.Err() == nil {
			live[n] = c.Val()
		} else if !errors.Is(c.Err(), redis.Nil) {
			return nil, mapErr("node liveness", c.Err())
		}
	}
	return live, nil
}

// decodeValue splits "<node>|<json>".
func decodeValue(v string) (string, wireEntry, bool) {
	node, js, ok := strings.Cut(v, "|")
	if !ok || node == "" {
		return "", wireEntry{}, false
	}
	var w wireEntry
	if err := json.Unmarshal([]byte(js), &w); err != nil {
		return "", wireEntry{}, false
	}
	return node, w, true
}

// SubscribeResource records that session listens to updates of the resource
// uri, through this node: NotifyResourceUpdated on any node reaches it here.
func (t *Tracker) SubscribeResource(ctx context.Context, tenant, session, uri string) (err error) {
	ctx, span := startSpan(ctx, "tracker.SubscribeResource")
	defer func() { endSpan(span, err) }()
	h, err := t.listener(tenant, session, uri)
	if err != nil {
		return err
	}
	h.wire.T = time.Now().UnixMilli()
	if err := t.encode(h); err != nil {
		return err
	}
	h.value2 = t.prefix + session
	return t.hold(ctx, h, "subscribe resource")
}

// UnsubscribeResource removes a listener added by SubscribeResource on this
// node; ErrNotHeld if there is none.
func (t *Tracker) UnsubscribeResource(ctx context.Context, tenant, session, uri string) (err error) {
	ctx, span := startSpan(ctx, "tracker.UnsubscribeResource")
	defer func() { endSpan(span, err) }()
	h, err := t.listener(tenant, session, uri)
	if err != nil {
		return err
	}
	return t.release(ctx, h.ref, "unsubscribe resource")
}

func (t *Tracker) listener(tenant, session, uri string) (*held, error) {
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return nil, err
	}
	es, err := escapeID("session id", session)
	if err != nil {
		return nil, err
	}
	uh, err := uriHash(uri)
	if err != nil {
		return nil, err
	}
	return &held{loc: t.k.locEscaped(kindListener, et, es, uh), kind: kindListener, tenant: tenant,
		field2: es, wire: wireEntry{S: session, U: uri}}, nil
}

// ListResourceListeners lists the live resource listeners of a tenant.
func (t *Tracker) ListResourceListeners(ctx context.Context, tenant string) (ls []Listener, err error) {
	ctx, span := startSpan(ctx, "tracker.ListResourceListeners")
	defer func() { endSpan(span, err) }()
	et, err := escapeID("tenant id", tenant)
	if err != nil {
		return nil, err
	}
	all, err := t.rdb.HGetAll(ctx, t.k.rsubs(et)).Result()
	if err != nil {
		return nil, mapErr("list resource listeners", err)
	}
	var nodes []string
	type raw struct {
		node string
		w    wireEntry
	}
	rows := make([]raw, 0, len(all))
	for _, v := range all {
		if node, w, ok := decodeValue(v); ok {
			rows = append(rows, raw{node, w})
			nodes = append(nodes, node)
		}
	}
	live, err := t.liveNodes(ctx, nodes)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if addr, ok := live[r.node]; ok {
			ls = append(ls, Listener{Tenant: tenant, Session: r.w.S, URI: r.w.U, NodeID: r.node, Addr: addr,
				Since: time.UnixMilli(r.w.T)})
		}
	}
	sort.Slice(ls, func(i, j int) bool {
		if ls[i].Session != ls[j].Session {
			return ls[i].Session < ls[j].Session
		}
		return ls[i].URI < ls[j].URI
	})
	return ls, nil
}
