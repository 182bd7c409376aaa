package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/tracker"
)

// cluster is the whole stack on loopback: PostgreSQL, Redis, api and worker processes, the
// proxy in front of the apis and the MCP target.
type cluster struct {
	cfg     Config
	log     func(format string, args ...any)
	root    string
	dir     string
	pg      *postgres
	redis   *redisServer
	apis    []*proc
	workers []*proc
	target  *Target
	proxy   *proxy
	client  *restClient
	admin   *pgxpool.Pool
	rdb     *redis.Client
	trk     *tracker.Tracker // for LeaseHolder lookups only; never started
}

func (c *cluster) env(name, addr string) []string {
	env := append(baseEnv(),
		"TAPLINE_DATABASE_URL="+c.pg.appURL(),
		"TAPLINE_MIGRATE_DATABASE_URL="+c.pg.adminURL(),
		"TAPLINE_REDIS_URL=redis://"+c.redis.addr()+"/0",
		"TAPLINE_SECRET_KEY="+c.cfg.secretKey,
		"TAPLINE_HTTP_ADDR="+addr,
		"TAPLINE_DEV=true",
		"TAPLINE_NODE_NAME="+name,
		"TAPLINE_LEASE_TTL="+c.cfg.LeaseTTL.String(),
		"TAPLINE_NODE_TTL="+c.cfg.LeaseTTL.String(),
		"TAPLINE_SHUTDOWN_TIMEOUT="+c.cfg.ShutdownTimeout.String(),
		"TAPLINE_COMMAND_TIMEOUT=10s",
		"TAPLINE_RATE_LIMIT_PER_SECOND=0",
		"TAPLINE_IDLE_SESSION_CLOSE=0",
		"TAPLINE_LOG_LEVEL=info",
	)
	return env
}

// up starts everything; down (always called) stops it.
func (c *cluster) up(ctx context.Context) error {
	var err error
	if c.root, err = RepoRoot(); err != nil {
		return err
	}
	if c.dir = c.cfg.WorkDir; c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "tapline-chaos-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	// PostgreSQL runs as the postgres user when we are root: it must reach its directory.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(c.dir, "bin")
	c.log("building cmd/api and cmd/worker into %s", bin)
	if err := buildBinaries(ctx, c.root, bin, c.cfg.Race); err != nil {
		return err
	}
	pgPort, err := freePort()
	if err != nil {
		return err
	}
	c.pg = &postgres{root: c.root, dir: filepath.Join(c.dir, "pg"), port: pgPort}
	c.log("starting PostgreSQL on 127.0.0.1:%d", pgPort)
	if err := c.pg.start(ctx); err != nil {
		return err
	}
	if err := c.pg.setup(ctx); err != nil {
		return err
	}
	redisPort, err := freePort()
	if err != nil {
		return err
	}
	c.redis = &redisServer{dir: filepath.Join(c.dir, "redis"), port: redisPort}
	c.log("starting redis-server on 127.0.0.1:%d", redisPort)
	if err := c.redis.start(ctx); err != nil {
		return err
	}
	c.cfg.secretKey = randomKey()

	// Migrate and bootstrap a tenant with the api binary itself.
	apiBin := filepath.Join(bin, "api")
	tool := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, apiBin, args...)
		cmd.Env = c.env("chaos-tool", "127.0.0.1:0")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("api %s: %w\n%s", args[0], err, stderr.String())
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := tool("migrate"); err != nil {
		return err
	}
	key, err := tool("bootstrap", "--tenant", "chaos", "--email", "chaos@example.test")
	if err != nil {
		return err
	}

	if c.admin, err = pgxpool.New(ctx, c.pg.adminURL()); err != nil {
		return err
	}
	c.rdb = redis.NewClient(&redis.Options{Addr: c.redis.addr(), MaxRetries: 1, DialTimeout: time.Second})
	if c.trk, err = tracker.New(c.rdb, &tracker.Config{NodeName: "chaos-observer"}); err != nil {
		return err
	}
	if c.target, err = NewTarget(); err != nil {
		return err
	}

	logs := filepath.Join(c.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	for i := range 2 {
		port, err := freePort()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("api-%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c.apis = append(c.apis, &proc{name: name, bin: apiBin, addr: addr, env: c.env(name, addr), log: filepath.Join(logs, name+".log")})
	}
	for i := range 2 {
		port, err := freePort()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("worker-%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c.workers = append(c.workers, &proc{name: name, bin: filepath.Join(bin, "worker"), addr: addr, env: c.env(name, addr), log: filepath.Join(logs, name+".log")})
	}
	for _, p := range append(append([]*proc{}, c.apis...), c.workers...) {
		if err := p.start(); err != nil {
			return err
		}
	}
	for _, p := range c.apis {
		if err := p.waitHealthy(ctx, "/readyz", 30*time.Second); err != nil {
			return err
		}
	}
	for _, p := range c.workers {
		if err := p.waitHealthy(ctx, "/readyz", 30*time.Second); err != nil {
			return err
		}
	}
	backends := make([]string, len(c.apis))
	for i, p := range c.apis {
		backends[i] = p.addr
	}
	if c.proxy, err = newProxy(backends); err != nil {
		return err
	}
	c.client = newRESTClient(c.proxy.URL, key)
	c.log("stack up: 2 api behind %s, 2 workers, target %s, lease TTL %v, logs in %s", c.proxy.URL, c.target.Stateful, c.cfg.LeaseTTL, logs)
	return nil
}

func (c *cluster) down(failed bool) {
	if c.proxy != nil {
		c.proxy.close()
	}
	for _, p := range append(append([]*proc{}, c.workers...), c.apis...) {
		if p.cmd != nil {
			_, _ = p.terminate(15 * time.Second)
		}
	}
	if c.target != nil {
		c.target.Close()
	}
	if c.admin != nil {
		c.admin.Close()
	}
	if c.rdb != nil {
		_ = c.rdb.Close()
	}
	if c.redis != nil {
		c.redis.kill()
	}
	if c.pg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_ = c.pg.stop(ctx)
		cancel()
	}
	if failed || c.cfg.Keep {
		c.log("logs kept in %s", c.dir)
		if failed && c.cfg.Out != nil {
			for _, p := range append(append([]*proc{}, c.workers...), c.apis...) {
				fmt.Fprintf(c.cfg.Out, "---- last lines of %s\n%s\n", p.log, tail(p.log, 40))
			}
		}
		return
	}
	if c.cfg.WorkDir == "" && c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// worker returns the worker process whose tracker node id is node.
func (c *cluster) workerOf(node string) *proc {
	for _, w := range c.workers {
		if strings.HasPrefix(node, w.name+"-") {
			return w
		}
	}
	return nil
}

// ownedSessions returns the live sessions whose owner (per PostgreSQL) is node, with their epoch.
func (c *cluster) ownedSessions(ctx context.Context, node string) (map[string]int64, error) {
	rows, err := c.admin.Query(ctx, `select id::text, epoch from sessions where owner_node = $1 and status in ('connecting', 'ready')`, node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var e int64
		if err := rows.Scan(&id, &e); err != nil {
			return nil, err
		}
		out[id] = e
	}
	return out, rows.Err()
}

func (c *cluster) ownerOf(ctx context.Context, session string) (string, int64, error) {
	var node string
	var epoch int64
	err := c.admin.QueryRow(ctx, `select owner_node, epoch from sessions where id = $1`, session).Scan(&node, &epoch)
	return node, epoch, err
}

// waitMoved waits until every session in old has a session_moved event with a newer epoch and
// returns, per session, the time since start at which it was first seen and its seq.
func (c *cluster) waitMoved(ctx context.Context, old map[string]int64, start time.Time, within time.Duration) (map[string]time.Duration, map[string]int64, error) {
	ids := make([]string, 0, len(old))
	for id := range old {
		ids = append(ids, id)
	}
	took := map[string]time.Duration{}
	seqs := map[string]int64{}
	deadline := time.Now().Add(within)
	for len(took) < len(old) {
		rows, err := c.admin.Query(ctx, `select session_id::text, seq, (data->>'epoch')::bigint from session_events
			where type = 'session_moved' and session_id = any($1::uuid[]) order by seq`, ids)
		if err == nil {
			for rows.Next() {
				var id string
				var seq, epoch int64
				if rows.Scan(&id, &seq, &epoch) == nil && epoch > old[id] {
					if _, ok := took[id]; !ok {
						took[id] = time.Since(start)
						seqs[id] = seq
					}
				}
			}
			rows.Close()
		}
		if len(took) == len(old) {
			break
		}
		if time.Now().After(deadline) {
			return took, seqs, fmt.Errorf("%d of %d sessions were not taken over within %v", len(old)-len(took), len(old), within)
		}
		select {
		case <-ctx.Done():
			return took, seqs, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return took, seqs, nil
}

// waitLeased waits until every live session is held, per Redis, by the node PostgreSQL names
// as its owner, and is ready.
func (c *cluster) waitLeased(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		last = c.checkLeased(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return last
}

func (c *cluster) checkLeased(ctx context.Context) error {
	rows, err := c.admin.Query(ctx, `select tenant_id::text, id::text, owner_node, status from sessions where status in ('connecting', 'ready')`)
	if err != nil {
		return err
	}
	type row struct{ tenant, id, owner, status string }
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.tenant, &r.id, &r.owner, &r.status); err != nil {
			rows.Close()
			return err
		}
		all = append(all, r)
	}
	rows.Close()
	for _, r := range all {
		if r.status != "ready" {
			return fmt.Errorf("session %s is %s", r.id, r.status)
		}
		node, _, err := c.trk.LeaseHolder(ctx, r.tenant, r.id)
		if err != nil {
			return fmt.Errorf("session %s lease: %w", r.id, err)
		}
		if node != r.owner {
			return fmt.Errorf("session %s: Redis says %s holds it, PostgreSQL says %s", r.id, node, r.owner)
		}
	}
	return nil
}

var errTimeout = errors.New("timed out")

var _ = io.Discard
