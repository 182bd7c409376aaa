package retention_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/retention"
	"github.com/tapline/tapline/internal/tenant"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func newTenant(t *testing.T, store *tenant.Store, name string) string {
	t.Helper()
	res, err := store.Bootstrap(context.Background(), tenant.BootstrapParams{
		TenantName: fmt.Sprintf("%s-%s-%d", name, t.Name(), time.Now().UnixNano()), Email: name + "@retention.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Tenant.ID
}

// seedEvents gives tenantID a session with one event per age (days ago), as the owner.
func seedEvents(t *testing.T, tenantID string, ages ...float64) {
	t.Helper()
	ctx := context.Background()
	owner := dbtest.OwnerPool(t)
	sid := uuid.NewString()
	if _, err := owner.Exec(ctx, `insert into sessions (id, tenant_id, transport, url, status) values ($1, $2, 'streamable_http', 'https://mcp.example/', 'closed')`, sid, tenantID); err != nil {
		t.Fatal(err)
	}
	for i, age := range ages {
		at := time.Now().Add(-time.Duration(age * 24 * float64(time.Hour)))
		if _, err := owner.Exec(ctx, `insert into session_events (tenant_id, session_id, seq, type, data, at) values ($1, $2, $3, 'frame', '{}', $4)`,
			tenantID, sid, i+1, at); err != nil {
			t.Fatal(err)
		}
	}
}

func countEvents(t *testing.T, tenantID string) int {
	t.Helper()
	var n int
	if err := dbtest.OwnerPool(t).QueryRow(context.Background(), "select count(*) from session_events where tenant_id = $1", tenantID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRunOncePurgesPerTenantRetention covers the whole job in one database: tests in this
// package must not run purges concurrently, since a purge visits every tenant.
func TestRunOncePurgesPerTenantRetention(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.Pool(t)
	store := tenant.NewStore(pool)
	short, long, forever := newTenant(t, store, "short"), newTenant(t, store, "long"), newTenant(t, store, "forever")
	one, zero := 1, 0
	if err := store.SetQuotas(ctx, short, tenant.QuotaOverrides{EventRetentionDays: &one}); err != nil {
		t.Fatal(err)
	}
	if err := store.SetQuotas(ctx, forever, tenant.QuotaOverrides{EventRetentionDays: &zero}); err != nil {
		t.Fatal(err)
	}
	ages := []float64{60, 45, 40, 20, 10, 3, 2, 1.5, 0.5, 0.1, 0}
	for _, id := range []string{short, long, forever} {
		seedEvents(t, id, ages...)
	}
	rec := audit.NewRecorder(pool, nil)
	svc := retention.New(pool, &retention.Config{DefaultDays: 30, BatchSize: 2, Audit: rec})

	t.Run("OnlyOnePurgeAtATime", func(t *testing.T) {
		conn, err := dbtest.OwnerPool(t).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, "select pg_advisory_lock(7346118232)"); err != nil {
			t.Fatal(err)
		}
		res, err := svc.RunOnce(ctx)
		_, _ = conn.Exec(ctx, "select pg_advisory_unlock(7346118232)")
		if err != nil || res.Ran {
			t.Fatalf("purge while another holds the lock = %+v, %v", res, err)
		}
		if countEvents(t, short) != len(ages) {
			t.Fatal("a skipped purge deleted events")
		}
	})
	t.Run("DeletesInBatchesByEachTenantsRetention", func(t *testing.T) {
		res, err := svc.RunOnce(ctx)
		if err != nil || !res.Ran {
			t.Fatalf("purge = %+v, %v", res, err)
		}
		// short keeps the last day (0.5, 0.1, 0), long the last 30 days, forever everything.
		for id, want := range map[string]int{short: 3, long: 8, forever: len(ages)} {
			if got := countEvents(t, id); got != want {
				t.Errorf("tenant %s keeps %d events, want %d", id, got, want)
			}
		}
		if res.Deleted != 8+3 || res.Tenants != 2 {
			t.Fatalf("result = %+v, want 11 deleted in 2 tenants", res)
		}
		// One entry per batch of 2: short's 8 events in 4, one purge.
		purges := purgeEntries(t, rec, short)
		if len(purges) != 4 {
			t.Fatalf("purge audit of short = %+v, want 4 batches", purges)
		}
		for i, p := range purges {
			if p.Deleted != 2 || p.Batch != i+1 || p.PurgeID != purges[0].PurgeID || p.PurgeID == "" || p.actor != "system:retention" {
				t.Fatalf("purge audit entry %d = %+v", i, p)
			}
		}
		requireChainOK(t, rec, short)
		if again, _ := svc.RunOnce(ctx); again.Deleted != 0 {
			t.Fatalf("second purge deleted %d", again.Deleted)
		}
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		// A purge audits in the purged tenant only.
		for _, id := range []string{forever} {
			page, _ := rec.List(ctx, id, audit.Filter{Action: retention.ActionPurge}, audit.PageParams{})
			if len(page.Items) != 0 {
				t.Fatalf("tenant %s got a purge event it did not have", id)
			}
		}
	})
	t.Run("StartStop", func(t *testing.T) {
		seedEvents(t, long, 90)
		s := retention.New(pool, &retention.Config{DefaultDays: 30, Interval: 20 * time.Millisecond})
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err == nil {
			t.Error("started twice")
		}
		deadline := time.Now().Add(5 * time.Second)
		for countEvents(t, long) != 8 {
			if time.Now().After(deadline) {
				t.Fatal("the running service did not purge")
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.Stop()
		s.Stop()
	})
}

// cancelAtSecondDelete cancels a context as the second batch's delete of one tenant's events
// is about to be sent:
// a purge stopped between two batches, as Stop does on every deploy. (Cancelling inside a
// statement's end would race pgx's own watch of the context on that connection.)
type cancelAtSecondDelete struct {
	tenantID string
	cancel   context.CancelFunc
	deletes  atomic.Int32
}

func (c *cancelAtSecondDelete) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "delete from session_events") && len(d.Args) > 0 && d.Args[0] == c.tenantID && c.deletes.Add(1) == 2 {
		c.cancel()
	}
	return ctx
}

func (c *cancelAtSecondDelete) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A purge cut short between batches still records what it deleted: the committed batches
// are gone, and the audit log must say so. Only the batches committed are counted.
func TestInterruptedPurgeIsAudited(t *testing.T) {
	ctx := context.Background()
	store := tenant.NewStore(dbtest.Pool(t))
	id := newTenant(t, store, "cut")
	seedEvents(t, id, 90, 80, 70, 60, 50)

	cfg, err := pgxpool.ParseConfig(dbtest.SharedURL(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg.ConnConfig.Tracer = &cancelAtSecondDelete{tenantID: id, cancel: cancel}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rec := audit.NewRecorder(dbtest.Pool(t), nil)
	res, err := retention.New(pool, &retention.Config{DefaultDays: 30, BatchSize: 2, Audit: rec}).RunOnce(runCtx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("purge = %+v, %v; want it cut short", res, err)
	}
	deleted := 5 - countEvents(t, id)
	if deleted != 2 {
		t.Fatalf("%d of 5 events deleted; the test meant to stop the purge after its first batch of 2", deleted)
	}
	purges := purgeEntries(t, rec, id)
	if len(purges) != 1 || purges[0].Deleted != deleted || res.Deleted != int64(deleted) {
		t.Fatalf("audit says %+v, result %d deleted, database %d", purges, res.Deleted, deleted)
	}
	requireChainOK(t, rec, id)
	// The next purge finishes the job, and leaves no old events to the package's other tests.
	if _, err := retention.New(dbtest.Pool(t), &retention.Config{DefaultDays: 30, Audit: rec}).RunOnce(ctx); err != nil || countEvents(t, id) != 0 {
		t.Fatalf("the next purge: %v, %d events left", err, countEvents(t, id))
	}
}

// purgeEntry is what a retention.purge audit entry says.
type purgeEntry struct {
	Deleted int    `json:"deleted"`
	Before  string `json:"before"`
	PurgeID string `json:"purge_id"`
	Batch   int    `json:"batch"`
	actor   string
}

// purgeEntries returns a tenant's retention.purge entries, oldest first.
func purgeEntries(t *testing.T, rec *audit.Recorder, tenantID string) []purgeEntry {
	t.Helper()
	page, err := rec.List(context.Background(), tenantID, audit.Filter{Action: retention.ActionPurge}, audit.PageParams{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]purgeEntry, len(page.Items))
	for i, ev := range page.Items {
		if err := json.Unmarshal(ev.Details, &out[i]); err != nil {
			t.Fatalf("purge entry %s: %v", ev.Details, err)
		}
		out[i].actor = ev.Actor.ID
	}
	return out
}

func requireChainOK(t *testing.T, rec *audit.Recorder, tenantID string) {
	t.Helper()
	v, err := rec.Verify(context.Background(), tenantID, nil, nil)
	if err != nil || !v.OK {
		t.Fatalf("audit chain of %s: %+v, %v", tenantID, v, err)
	}
}

// crashEnv names the database and tenant a child process purges until it crashes
// (TestPurgeCrashAfterCommitKeepsItsAudit).
const (
	crashURLEnv    = "TAPLINE_RETENTION_CRASH_URL"
	crashTenantEnv = "TAPLINE_RETENTION_CRASH_TENANT"
)

// exitAtSecondDelete ends the process, with no deferred function run and no further
// statement sent, as the second batch's delete of one tenant's events is about to be sent:
// a worker killed right after a batch committed.
type exitAtSecondDelete struct {
	tenantID string
	deletes  atomic.Int32
}

func (c *exitAtSecondDelete) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "delete from session_events") && len(d.Args) > 0 && d.Args[0] == c.tenantID && c.deletes.Add(1) == 2 {
		os.Exit(3)
	}
	return ctx
}

func (c *exitAtSecondDelete) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A worker that dies right after a batch committed leaves that batch's audit entry: the
// deletion and its record commit together, and the chain stays valid. The purge runs in a
// child process (this test binary again), which exits in the middle of it.
func TestPurgeCrashAfterCommitKeepsItsAudit(t *testing.T) {
	if url := os.Getenv(crashURLEnv); url != "" {
		crashingPurge(t, url, os.Getenv(crashTenantEnv))
		return
	}
	ctx := context.Background()
	store := tenant.NewStore(dbtest.Pool(t))
	id, other := newTenant(t, store, "crash"), newTenant(t, store, "bystander")
	seedEvents(t, id, 90, 80, 70, 60, 50)
	rec := audit.NewRecorder(dbtest.Pool(t), nil)
	// The other tenant's chain has entries of its own, which the purge must not touch.
	if _, err := rec.Record(ctx, nil, audit.Entry{TenantID: other, Action: "test.before"}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPurgeCrashAfterCommitKeepsItsAudit$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashURLEnv+"="+dbtest.SharedURL(t), crashTenantEnv+"="+id)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("the purging process was meant to die at its second batch; it ended with %v:\n%s", err, out)
	}

	deleted := 5 - countEvents(t, id)
	if deleted != 2 {
		t.Fatalf("%d of 5 events deleted; the test meant to kill the purge after its first batch of 2", deleted)
	}
	purges := purgeEntries(t, rec, id)
	if len(purges) != 1 || purges[0].Deleted != deleted || purges[0].Batch != 1 {
		t.Fatalf("%d events deleted before the crash, purge audit = %+v", deleted, purges)
	}
	requireChainOK(t, rec, id)
	if got := purgeEntries(t, rec, other); len(got) != 0 {
		t.Fatalf("the bystander tenant got purge entries %+v", got)
	}
	requireChainOK(t, rec, other)

	// The next purge finishes the job, continues the chain, and leaves no old events to the
	// package's other tests.
	if _, err := retention.New(dbtest.Pool(t), &retention.Config{DefaultDays: 30, BatchSize: 2, Audit: rec}).RunOnce(ctx); err != nil || countEvents(t, id) != 0 {
		t.Fatalf("the next purge: %v, %d events left", err, countEvents(t, id))
	}
	purges = purgeEntries(t, rec, id)
	sum := 0
	for _, p := range purges {
		sum += p.Deleted
	}
	if len(purges) != 3 || sum != 5 || purges[1].PurgeID == purges[0].PurgeID || purges[2].PurgeID != purges[1].PurgeID {
		t.Fatalf("after the second purge the audit says %+v, want 1 + 2 batches deleting 5", purges)
	}
	requireChainOK(t, rec, id)
}

// crashingPurge is the child process of TestPurgeCrashAfterCommitKeepsItsAudit: it purges
// with an audit recorder until exitAtSecondDelete ends the process.
func crashingPurge(t *testing.T, url, tenantID string) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = &exitAtSecondDelete{tenantID: tenantID}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	res, err := retention.New(pool, &retention.Config{DefaultDays: 30, BatchSize: 2, Audit: audit.NewRecorder(pool, nil)}).RunOnce(ctx)
	t.Fatalf("the purge ended without the crash: %+v, %v", res, err)
}
