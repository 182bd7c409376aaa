// Package tracker is Tapline's cluster-wide presence, claim and lease
// registry on Redis: Phantom.Tracker's job (phantom_mcp), made strict.
//
// Every api and worker process runs one Tracker, a node. A node registers
// itself with a TTL heartbeat (id = name + per-boot incarnation) and keeps what
// it holds in an in-process registry that it mirrors to Redis:
//
//   - presence entries with metadata, scoped by tenant: sessions, requests
//     and streams (Track, Untrack, UntrackNode, Get, UpdateMeta, Owner,
//     ListSessions, ListRequests, StreamsOf);
//   - resource listeners (SubscribeResource, ListResourceListeners);
//   - in-flight claims, so a request retried onto two nodes runs once, with
//     its result kept for duplicates (ClaimInFlight, CompleteInFlight,
//     AwaitResult); they also back REST Idempotency-Key handling;
//   - leases with strictly increasing fencing epochs (ClaimLease,
//     RenewLease, ReleaseLease, HandOverLeases).
//
// Liveness is per node, not per entry: an entry counts only while its node's
// key lives, so a heartbeat costs one round trip whatever the node holds, and
// a dead node's entries vanish from every listing when its key expires. A
// reaper, elected by a lease, later deletes them.
//
// Notifications (resource updated, list changed, elicitation complete) go over
// pub/sub to the inbox of each node holding a target, numbered per inbox, so a
// node that missed messages learns it (Config.OnGap) and resyncs.
//
// Redis is rebuildable: when a node's heartbeat finds its key or a generation
// marker gone (restart, failover, FLUSHALL), it re-asserts its registry within
// that heartbeat. Every Lua script touches a single hash tag, so the tracker
// runs unchanged on a single node, Sentinel or Redis Cluster; ids are
// validated and escaped before they become keys (see keys.go for the layout).
//
// Redis claims and leases are efficiency locks. Correctness across a paused
// holder comes from the fencing epoch, checked by Postgres.
package tracker
