package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config bounds a chaos run. Zero fields take the defaults of `make chaos`.
type Config struct {
	// WorkerKills is how many times a worker holding a call in flight is killed with SIGKILL.
	WorkerKills int
	// Drains is how many times a busy worker gets SIGTERM (drain and hand-over).
	Drains int
	// Zombies is how many times a busy worker is paused (SIGSTOP) past its lease, then resumed.
	Zombies int
	// RedisRestarts is how many times Redis is killed and restarted empty.
	RedisRestarts int
	// APIKills is how many times an api process is killed while SSE readers are attached.
	APIKills int
	// PGOutages is how many times PostgreSQL is stopped for PGOutage and started again.
	PGOutages int
	PGOutage  time.Duration
	// StormSize is how many duplicate POSTs with one Idempotency-Key go to both api processes.
	StormSize int
	// Sessions is the number of 2025-11-25 (stateful) sessions; one 2026-07-28 session is added.
	Sessions          int
	CallersPerSession int
	ReadersPerSession int
	// LeaseTTL is TAPLINE_LEASE_TTL (and TAPLINE_NODE_TTL) of every process. Default 3s.
	LeaseTTL        time.Duration
	ShutdownTimeout time.Duration
	// Settle is how long traffic flows between faults.
	Settle time.Duration
	// Out receives progress lines; nil discards.
	Out io.Writer
	// WorkDir holds binaries, data and logs; empty means a temporary directory, removed after a
	// successful run.
	WorkDir string
	// Keep keeps WorkDir after a successful run.
	Keep bool
	// Race builds the api and worker with the race detector; a race they report is a problem.
	Race bool
	// TakeoverGoal is the longest acceptable takeover; past it the run fails. Default
	// LeaseTTL + 2s; negative disables the check.
	TakeoverGoal time.Duration

	secretKey string
}

// Short is the CI form: every fault once, small traffic.
func Short() Config {
	return Config{WorkerKills: 2, Drains: 1, Zombies: 1, RedisRestarts: 1, APIKills: 1, PGOutages: 1, StormSize: 10,
		Sessions: 2, CallersPerSession: 2, ReadersPerSession: 2, Settle: time.Second}
}

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.WorkerKills, 5)
	def(&c.Drains, 1)
	def(&c.Zombies, 2)
	def(&c.RedisRestarts, 1)
	def(&c.APIKills, 2)
	def(&c.PGOutages, 1)
	def(&c.StormSize, 20)
	def(&c.Sessions, 4)
	def(&c.CallersPerSession, 2)
	def(&c.ReadersPerSession, 2)
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 3 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.PGOutage == 0 {
		c.PGOutage = 3 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 2 * time.Second
	}
	if c.TakeoverGoal == 0 {
		c.TakeoverGoal = c.LeaseTTL + 2*time.Second
	}
}

// Report is what a run measured.
type Report struct {
	LeaseTTL     time.Duration
	TakeoverGoal time.Duration
	// TakeoverMS: from the fault (SIGKILL, SIGSTOP) to the new owner's session_moved event,
	// per session taken over after its lease lapsed.
	TakeoverMS []int64
	// HandoverMS: the same after SIGTERM (drain); ExitMS: SIGTERM to process exit.
	HandoverMS []int64
	ExitMS     []int64
	// RecoveryMS: Redis restarted empty → every live session leased again by its owner.
	RecoveryMS []int64

	LostEvents          int
	DuplicateSeqs       int
	DuplicateDispatches int

	HTTP500           int
	NoRetryAfter503   int // 503 answers without Retry-After
	ZombieWrites      int
	ZombieKept        int // sessions a zombie did not drop
	Unrestored        int // MCP connections that got calls without subscription/logging level restored
	StuckCalls        int
	FailedSessions    int
	StormDistinct     int
	CallsByStatus     map[string]int
	Unacknowledged    int
	Problems          []string
	SSEReconnects     int
	Faults            []string
	HTTPStatuses      map[int]int
	Events            int64
	TargetInvocations int
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// OK reports whether the run met every goal.
func (r *Report) OK() bool {
	return len(r.Problems) == 0 && r.LostEvents == 0 && r.DuplicateSeqs == 0 && r.DuplicateDispatches == 0 &&
		r.HTTP500 == 0 && r.ZombieWrites == 0 && r.StuckCalls == 0
}

func percentile(v []int64, p float64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// Line is the final line `make chaos` prints.
func (r *Report) Line() string {
	return fmt.Sprintf("takeover_ms_p50=%d takeover_ms_max=%d lost_events=%d duplicate_seqs=%d duplicate_dispatches=%d",
		percentile(r.TakeoverMS, 0.5), percentile(r.TakeoverMS, 1), r.LostEvents, r.DuplicateSeqs, r.DuplicateDispatches)
}

// Summary is the detail printed before Line.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lease_ttl=%v (TAPLINE_LEASE_TTL; the default is 10s) takeover_goal_ms=%d\n", r.LeaseTTL, r.TakeoverGoal.Milliseconds())
	fmt.Fprintf(&b, "faults: %s\n", strings.Join(r.Faults, ", "))
	fmt.Fprintf(&b, "takeovers=%d handover_ms_max=%d drain_exit_ms_max=%d redis_recovery_ms_max=%d\n",
		len(r.TakeoverMS), percentile(r.HandoverMS, 1), percentile(r.ExitMS, 1), percentile(r.RecoveryMS, 1))
	statuses := make([]string, 0, len(r.CallsByStatus))
	for k, v := range r.CallsByStatus {
		statuses = append(statuses, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(statuses)
	fmt.Fprintf(&b, "calls: %s unacknowledged=%d stuck=%d target_invocations=%d events=%d sse_reconnects=%d\n",
		strings.Join(statuses, " "), r.Unacknowledged, r.StuckCalls, r.TargetInvocations, r.Events, r.SSEReconnects)
	codes := make([]int, 0, len(r.HTTPStatuses))
	for c := range r.HTTPStatuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	fmt.Fprintf(&b, "http_statuses:")
	for _, c := range codes {
		fmt.Fprintf(&b, " %d=%d", c, r.HTTPStatuses[c])
	}
	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(&b, "http_500=%d http_503_without_retry_after=%d zombie_writes=%d zombie_kept_sessions=%d unrestored_connections=%d failed_sessions=%d storm_distinct_calls=%d\n",
		r.HTTP500, r.NoRetryAfter503, r.ZombieWrites, r.ZombieKept, r.Unrestored, r.FailedSessions, r.StormDistinct)
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	return b.String()
}

// callRecord is one logical tool call of the traffic.
type callRecord struct {
	key, session, callID string
	acked                bool
	final                string
}

// run is one chaos run's state.
type run struct {
	*cluster
	rep      *Report
	sessions []string
	stateful map[string]bool

	mu      sync.Mutex
	calls   map[string]*callRecord // by key
	readers []*sseReader
	seq     atomic.Int64
	// caughtUp is, per session, the last seq every SSE reader had reached when they stopped.
	caughtUp map[string]int64
}

// Run starts the stack, keeps traffic flowing, injects the faults of cfg and accounts for what
// the target received, what PostgreSQL holds and what the SSE readers saw.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg.defaults()
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(out, "chaos %6.1fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	c := &cluster{cfg: cfg, log: logf}
	defer func() { c.down(err != nil || (rep != nil && !rep.OK())) }()
	if err := c.up(ctx); err != nil {
		return nil, err
	}
	r := &run{cluster: c, rep: &Report{LeaseTTL: cfg.LeaseTTL, TakeoverGoal: cfg.TakeoverGoal, CallsByStatus: map[string]int{}}, calls: map[string]*callRecord{}, stateful: map[string]bool{}}
	if err := r.createSessions(ctx); err != nil {
		return nil, err
	}

	traffic, stopTraffic := context.WithCancel(ctx)
	readers, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	var callers, readerWG sync.WaitGroup
	for _, s := range r.sessions {
		for range cfg.ReadersPerSession {
			rd := newSSEReader(c.client, s)
			r.readers = append(r.readers, rd)
			readerWG.Go(func() { rd.run(readers) })
		}
		for range cfg.CallersPerSession {
			callers.Go(func() { r.caller(traffic, ctx, s) })
		}
	}
	settle := func() {
		select {
		case <-ctx.Done():
		case <-time.After(cfg.Settle):
		}
	}
	settle()
	faults := []struct {
		name string
		n    int
		fn   func(context.Context) error
	}{
		{"worker_sigkill", cfg.WorkerKills, r.killWorker},
		{"worker_sigterm", cfg.Drains, r.drainWorker},
		{"worker_sigstop", cfg.Zombies, r.zombie},
		{"redis_restart_empty", cfg.RedisRestarts, r.restartRedis},
		{"api_sigkill", cfg.APIKills, r.killAPI},
		{"idempotency_storm", 1, r.storm},
		{"postgres_restart", cfg.PGOutages, r.pgOutage},
	}
	for _, f := range faults {
		for i := range f.n {
			logf("fault %s (%d/%d)", f.name, i+1, f.n)
			if err := f.fn(ctx); err != nil {
				r.rep.problem("%s: %v", f.name, err)
				logf("  problem: %v", err)
			}
			settle()
		}
		if f.n > 0 {
			r.rep.Faults = append(r.rep.Faults, fmt.Sprintf("%s=%d", f.name, f.n))
		}
	}
	logf("stopping traffic; waiting for calls to finish")
	stopTraffic()
	callers.Wait()
	r.waitCallsFinished(ctx, 60*time.Second)
	r.waitReaders(ctx, 30*time.Second)
	stopReaders()
	readerWG.Wait()
	if err := r.account(ctx); err != nil {
		return r.rep, err
	}
	return r.rep, nil
}

func (r *run) createSessions(ctx context.Context) error {
	targets := make([]string, 0, r.cfg.Sessions+1)
	for range r.cfg.Sessions {
		targets = append(targets, r.target.Stateful)
	}
	targets = append(targets, r.target.Stateless)
	for i, url := range targets {
		res, err := r.client.do(ctx, http.MethodPost, "/v1/sessions", map[string]any{
			"name": fmt.Sprintf("chaos-%d", i), "target": map[string]any{"transport": "streamable_http", "url": url},
		}, nil)
		if err != nil {
			return err
		}
		if res.status != http.StatusCreated {
			return fmt.Errorf("create session: %d %s", res.status, res.body)
		}
		var s sessionJSON
		if err := json.Unmarshal(res.body, &s); err != nil {
			return err
		}
		r.sessions = append(r.sessions, s.ID)
		r.stateful[s.ID] = url == r.target.Stateful
	}
	for _, id := range r.sessions {
		if err := r.waitReady(ctx, id, 30*time.Second); err != nil {
			return err
		}
		if !r.stateful[id] {
			continue
		}
		for _, op := range []struct {
			path string
			body any
		}{{"/resources/subscribe", map[string]string{"uri": StatusURI}}, {"/logging-level", map[string]string{"level": "debug"}}} {
			res, err := r.client.do(ctx, http.MethodPost, "/v1/sessions/"+id+op.path, op.body, nil)
			if err != nil {
				return err
			}
			if res.status >= 300 {
				return fmt.Errorf("%s: %d %s", op.path, res.status, res.body)
			}
		}
	}
	r.log("%d sessions ready (%d on 2025-11-25, 1 on 2026-07-28)", len(r.sessions), r.cfg.Sessions)
	return nil
}

func (r *run) waitReady(ctx context.Context, id string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		res, err := r.client.do(ctx, http.MethodGet, "/v1/sessions/"+id, nil, nil)
		if err == nil && res.status == http.StatusOK {
			var s sessionJSON
			_ = json.Unmarshal(res.body, &s)
			if s.Status == "ready" {
				return nil
			}
			last = s.Status + " " + s.Error
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("session %s not ready within %v (%s)", id, within, last)
}

// caller runs tool calls on one session, one after another, until traffic ends; each call is
// followed to its end even after that (within finish).
func (r *run) caller(traffic, finish context.Context, session string) {
	for traffic.Err() == nil {
		key := fmt.Sprintf("k%05d-%s", r.seq.Add(1), session[:8])
		rec := &callRecord{key: key, session: session}
		r.mu.Lock()
		r.calls[key] = rec
		r.mu.Unlock()
		steps := 2 + rand.IntN(8)
		args := map[string]any{"key": key, "steps": steps, "interval_ms": 50 + rand.IntN(100)}
		callID, ok := r.startCall(traffic, session, key, args)
		if !ok {
			if traffic.Err() != nil {
				// Traffic stopped mid-POST: not a call anyone was promised.
				r.mu.Lock()
				delete(r.calls, key)
				r.mu.Unlock()
			}
			continue
		}
		r.mu.Lock()
		rec.callID, rec.acked = callID, true
		r.mu.Unlock()
		final := r.followCall(finish, session, callID)
		r.mu.Lock()
		rec.final = final
		r.mu.Unlock()
	}
}

// startCall posts a call with its key as Idempotency-Key, retrying what may be retried with the
// same key; a session that is not ready (taken over) is retried under a fresh key, as nothing
// was created.
func (r *run) startCall(ctx context.Context, session, key string, args map[string]any) (string, bool) {
	deadline := time.Now().Add(60 * time.Second)
	idem := key
	attempt := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		res, err := r.client.do(ctx, http.MethodPost, "/v1/sessions/"+session+"/calls", map[string]any{"name": "work", "arguments": args},
			map[string]string{"Idempotency-Key": idem})
		switch {
		case err == nil && (res.status == http.StatusAccepted || res.status == http.StatusOK):
			var c callJSON
			if json.Unmarshal(res.body, &c) == nil && c.CallID != "" {
				return c.CallID, true
			}
		case err == nil && res.status == http.StatusConflict && res.problemType() == "not-ready":
			attempt++
			idem = key + "#" + strconv.Itoa(attempt)
		case retryable(res, err):
		default:
			r.log("  call %s: unexpected answer %d %s", key, res.status, res.body)
			return "", false
		}
		select {
		case <-ctx.Done():
		case <-time.After(150 * time.Millisecond):
		}
	}
	return "", false
}

// followCall polls a call until it finished, or until ctx ends (then "" is returned).
func (r *run) followCall(ctx context.Context, session, callID string) string {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		res, err := r.client.do(ctx, http.MethodGet, "/v1/sessions/"+session+"/calls/"+callID, nil, nil)
		if err == nil && res.status == http.StatusOK {
			var c callJSON
			if json.Unmarshal(res.body, &c) == nil && finished(c.Status) {
				return c.Status
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return ""
}

// busyWorker waits for a tool call running at the target and returns the live worker that owns
// its session.
func (r *run) busyWorker(ctx context.Context) (*proc, string, error) {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		running := r.target.Ledger.Running()
		rand.Shuffle(len(running), func(i, j int) { running[i], running[j] = running[j], running[i] })
		for _, key := range running {
			r.mu.Lock()
			rec := r.calls[key]
			r.mu.Unlock()
			if rec == nil {
				continue
			}
			node, _, err := r.ownerOf(ctx, rec.session)
			if err != nil {
				continue
			}
			if w := r.workerOf(node); w != nil && !w.paused {
				select {
				case <-w.exited():
					continue
				default:
				}
				return w, node, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil, "", fmt.Errorf("no call in flight on a live worker within 15s")
}

func (r *run) restart(ctx context.Context, p *proc, health string) error {
	if err := p.start(); err != nil {
		return err
	}
	return p.waitHealthy(ctx, health, 30*time.Second)
}

// killWorker kills the owner of a call in flight with SIGKILL and measures the takeover.
func (r *run) killWorker(ctx context.Context) error {
	w, node, err := r.busyWorker(ctx)
	if err != nil {
		return err
	}
	owned, err := r.ownedSessions(ctx, node)
	if err != nil {
		return err
	}
	start := time.Now()
	w.kill()
	took, _, err := r.waitMoved(ctx, owned, start, r.cfg.LeaseTTL+20*time.Second)
	for _, d := range took {
		r.rep.TakeoverMS = append(r.rep.TakeoverMS, d.Milliseconds())
	}
	r.log("  killed %s holding %d sessions; taken over in %v", w.name, len(owned), maxDur(took))
	if rerr := r.restart(ctx, w, "/readyz"); rerr != nil {
		return rerr
	}
	return err
}

// drainWorker sends SIGTERM to a busy worker: it must hand its sessions over at once and exit
// within its shutdown bound.
func (r *run) drainWorker(ctx context.Context) error {
	w, node, err := r.busyWorker(ctx)
	if err != nil {
		return err
	}
	owned, err := r.ownedSessions(ctx, node)
	if err != nil {
		return err
	}
	start := time.Now()
	var exitErr error
	var exitTook time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		exitTook, exitErr = w.terminate(r.cfg.ShutdownTimeout + 5*time.Second)
	}()
	took, _, err := r.waitMoved(ctx, owned, start, r.cfg.LeaseTTL+20*time.Second)
	<-done
	for _, d := range took {
		r.rep.HandoverMS = append(r.rep.HandoverMS, d.Milliseconds())
	}
	r.rep.ExitMS = append(r.rep.ExitMS, exitTook.Milliseconds())
	r.log("  drained %s holding %d sessions: handed over in %v, exited after %v", w.name, len(owned), maxDur(took), exitTook)
	if exitErr != nil {
		r.rep.problem("drain: %v", exitErr)
	}
	if d := maxDur(took); d > r.cfg.LeaseTTL {
		r.rep.problem("drain: hand-over took %v, longer than the lease TTL: the leases were not handed over", d)
	}
	if rerr := r.restart(ctx, w, "/readyz"); rerr != nil {
		return rerr
	}
	return err
}

// zombie pauses a busy worker past its lease, lets another worker take its sessions, resumes it
// and checks that nothing it does after waking reaches PostgreSQL.
func (r *run) zombie(ctx context.Context) error {
	w, node, err := r.busyWorker(ctx)
	if err != nil {
		return err
	}
	owned, err := r.ownedSessions(ctx, node)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(owned))
	for id := range owned {
		ids = append(ids, id)
	}
	start := time.Now()
	if err := w.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// What the zombie had going: its calls in flight, and their MCP connections at the target.
	var running []string
	rows, err := r.admin.Query(ctx, `select id::text, arguments->>'key' from session_calls where session_id = any($1::uuid[]) and status = 'running'`, ids)
	mcpSessions := map[string]bool{}
	if err == nil {
		for rows.Next() {
			var id, key string
			if rows.Scan(&id, &key) == nil {
				running = append(running, id)
				if sid := r.target.Ledger.SessionOf(key); sid != "" {
					mcpSessions[sid] = true
				}
			}
		}
		rows.Close()
	}
	took, movedSeq, err := r.waitMoved(ctx, owned, start, r.cfg.LeaseTTL+20*time.Second)
	for _, d := range took {
		r.rep.TakeoverMS = append(r.rep.TakeoverMS, d.Milliseconds())
	}
	// Stay paused a while longer: the target finishes the zombie's calls meanwhile, so it has
	// results to read and frames to record when it wakes.
	time.Sleep(time.Second)
	woke := time.Now()
	_ = w.signal(syscall.SIGCONT)
	r.log("  paused %s holding %d sessions (%d calls running): taken over in %v; resumed", w.name, len(owned), len(running), maxDur(took))
	if err != nil {
		return err
	}
	// Give it time to wake, read what arrived and try to write it.
	time.Sleep(r.cfg.LeaseTTL + time.Second)

	writes := 0
	for id, seq := range movedSeq {
		for sid := range mcpSessions {
			var n int
			if err := r.admin.QueryRow(ctx, `select count(*) from session_events where session_id = $1 and seq > $2 and type = 'frame' and position($3 in data::text) > 0`,
				id, seq, sid).Scan(&n); err == nil && n > 0 {
				r.rep.problem("zombie: %d frames of the old connection %s were stored after the takeover of %s", n, sid, id)
				writes += n
			}
		}
	}
	for _, callID := range running {
		var status string
		var results int
		if err := r.admin.QueryRow(ctx, `select c.status, (select count(*) from session_events e where e.session_id = c.session_id and e.type = 'call_result' and e.data->>'call_id' = c.id::text)
			from session_calls c where c.id = $1`, callID).Scan(&status, &results); err == nil {
			if status != "interrupted" {
				r.rep.problem("zombie: call %s that ran on the paused worker ended %s, want interrupted", callID, status)
				writes++
			}
			if results != 1 {
				r.rep.problem("zombie: call %s has %d call_result events", callID, results)
			}
		}
	}
	var pending int
	if err := r.admin.QueryRow(ctx, `select count(*) from pending_requests p join sessions s on s.id = p.session_id
		where p.session_id = any($1::uuid[]) and p.epoch < s.epoch and p.created_at >= $2`, ids, woke).Scan(&pending); err == nil && pending > 0 {
		r.rep.problem("zombie: %d pending requests stored by the stale owner", pending)
		writes += pending
	}
	r.rep.ZombieWrites += writes
	// It must have dropped every session it no longer owns, and hold no lease.
	dropped := droppedSessions(w.log, woke)
	for id := range owned {
		if !dropped[id] {
			r.rep.ZombieKept++
			r.rep.problem("zombie: %s did not drop session %s after waking", w.name, id)
		}
	}
	return nil
}

// droppedSessions reads a worker log for sessions it dropped after since.
func droppedSessions(path string, since time.Time) map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "dropping the session") {
			continue
		}
		var rec struct {
			Time      time.Time `json:"time"`
			SessionID string    `json:"session_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && !rec.Time.Before(since.Add(-time.Second)) {
			out[rec.SessionID] = true
		}
	}
	return out
}

// restartRedis kills Redis, checks that the REST API answers 503 (never 500) meanwhile, starts
// it again empty and waits until every live session is leased again by its owner.
func (r *run) restartRedis(ctx context.Context) error {
	r.redis.kill()
	r.probe(ctx, 2*time.Second, true)
	if err := r.redis.start(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := r.waitLeased(ctx, 30*time.Second)
	r.rep.RecoveryMS = append(r.rep.RecoveryMS, time.Since(start).Milliseconds())
	r.log("  redis back empty; every live session leased again after %v", time.Since(start).Round(time.Millisecond))
	return err
}

// probe sends reads and writes through the proxy for d; answers must never be 500, and a 503
// must carry Retry-After.
func (r *run) probe(ctx context.Context, d time.Duration, write bool) {
	end := time.Now().Add(d)
	n := 0
	for time.Now().Before(end) {
		s := r.sessions[n%len(r.sessions)]
		n++
		checks := []func() (*response, error){
			func() (*response, error) { return r.client.do(ctx, http.MethodGet, "/v1/sessions/"+s, nil, nil) },
			func() (*response, error) {
				return r.client.do(ctx, http.MethodGet, "/v1/sessions/"+s+"/events?after_seq=0&limit=5", nil, nil)
			},
			func() (*response, error) {
				return r.client.do(ctx, http.MethodGet, "/v1/sessions/"+s+"/tools", nil, nil)
			},
		}
		if write {
			checks = append(checks, func() (*response, error) {
				return r.client.do(ctx, http.MethodPost, "/v1/sessions/"+s+"/ping", map[string]any{}, nil)
			})
		}
		for _, check := range checks {
			res, err := check()
			if err != nil {
				continue
			}
			if res.status == http.StatusServiceUnavailable && res.header.Get("Retry-After") == "" {
				r.rep.NoRetryAfter503++
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killAPI kills an api process while SSE readers are attached, then starts it again.
func (r *run) killAPI(ctx context.Context) error {
	p := r.apis[rand.IntN(len(r.apis))]
	p.kill()
	time.Sleep(1500 * time.Millisecond)
	r.log("  killed %s; restarting it", p.name)
	return r.restart(ctx, p, "/readyz")
}

// storm sends StormSize identical POSTs with one Idempotency-Key to both api processes at once.
func (r *run) storm(ctx context.Context) error {
	session := r.sessions[0]
	key := fmt.Sprintf("storm-%d", time.Now().UnixNano())
	body := map[string]any{"name": "work", "arguments": map[string]any{"key": key, "steps": 3, "interval_ms": 100}}
	var mu sync.Mutex
	ids := map[string]int{}
	var wg sync.WaitGroup
	for i := range r.cfg.StormSize {
		base := "http://" + r.apis[i%len(r.apis)].addr
		wg.Go(func() {
			deadline := time.Now().Add(45 * time.Second)
			for time.Now().Before(deadline) {
				res, err := r.client.doAt(ctx, base, http.MethodPost, "/v1/sessions/"+session+"/calls", body, map[string]string{"Idempotency-Key": key})
				if err == nil && (res.status == http.StatusAccepted || res.status == http.StatusOK) {
					var c callJSON
					if json.Unmarshal(res.body, &c) == nil {
						mu.Lock()
						ids[c.CallID]++
						mu.Unlock()
					}
					return
				}
				if !retryable(res, err) {
					mu.Lock()
					ids["answer "+strconv.Itoa(res.status)]++
					mu.Unlock()
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	r.rep.StormDistinct = len(ids)
	r.mu.Lock()
	for id := range ids {
		r.calls[key] = &callRecord{key: key, session: session, callID: id, acked: true}
	}
	r.mu.Unlock()
	r.log("  %d POSTs with one Idempotency-Key on both api processes: %d distinct answers", r.cfg.StormSize, len(ids))
	if len(ids) != 1 {
		r.rep.problem("storm: %d distinct answers for one Idempotency-Key: %v", len(ids), ids)
	}
	return nil
}

// pgOutage stops PostgreSQL for PGOutage while traffic flows: the api must answer 503 with
// Retry-After, the workers must hold their events and sessions, and continue afterwards.
func (r *run) pgOutage(ctx context.Context) error {
	if err := r.pg.stop(ctx); err != nil {
		return err
	}
	r.probe(ctx, r.cfg.PGOutage, false)
	if err := r.pg.start(ctx); err != nil {
		return err
	}
	start := time.Now()
	// Every session must still be ready and held by the same owner: an outage is no reason
	// for a takeover.
	err := r.waitLeased(ctx, 30*time.Second)
	r.log("  postgres back after %v; sessions ready and leased after %v", r.cfg.PGOutage, time.Since(start).Round(time.Millisecond))
	return err
}

func (r *run) waitCallsFinished(ctx context.Context, within time.Duration) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var n int
		if err := r.admin.QueryRow(ctx, `select count(*) from session_calls where status in ('queued', 'running')`).Scan(&n); err == nil && n == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *run) lastSeqs(ctx context.Context) (map[string]int64, error) {
	rows, err := r.admin.Query(ctx, `select id::text, last_seq from sessions`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

func (r *run) waitReaders(ctx context.Context, within time.Duration) {
	deadline := time.Now().Add(within)
	for {
		last, err := r.lastSeqs(ctx)
		if err == nil {
			behind := 0
			for _, rd := range r.readers {
				if rd.lastSeq() < last[rd.session] {
					behind++
				}
			}
			if behind == 0 || time.Now().After(deadline) {
				r.caughtUp = last
				return
			}
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func maxDur(m map[string]time.Duration) time.Duration {
	var d time.Duration
	for _, v := range m {
		d = max(d, v)
	}
	return d.Round(time.Millisecond)
}
