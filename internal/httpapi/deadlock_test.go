package httpapi_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/dbtest"
)

// TestDeadlockAnswers503: a request whose transaction PostgreSQL rolls back to break a real
// deadlock answers 503 with Retry-After, not 500, and its retry succeeds; another tenant's
// request meanwhile is not involved.
func TestDeadlockAnswers503(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t)
	n := c.node(t)
	created := n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"name": "contested", "role": "viewer"})
	requireStatus(t, created, 201)
	keyA := created.body["id"].(string)
	created = n.call(t, "POST", "/v1/api-keys", c.b.Secret, map[string]any{"name": "bystander", "role": "viewer"})
	requireStatus(t, created, 201)
	keyB := created.body["id"].(string)

	// Another transaction holds tenant a's key row. Revoking the key takes the tenant's row,
	// then waits for the key's; this transaction then asks for the tenant's row: a cycle.
	// It waits 30 s before looking for a deadlock, so the request's transaction (1 s, the
	// default) finds it and is the one rolled back.
	tx, err := dbtest.OwnerPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var pid int
	if err := tx.QueryRow(ctx, `select pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `set local deadlock_timeout = '30s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `select set_config('app.tenant_id', $1, true)`, c.a.Tenant.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `select 1 from api_keys where tenant_id = $1 and id = $2 for update`, c.a.Tenant.ID, keyA); err != nil {
		t.Fatal(err)
	}
	var revoke response
	var wg sync.WaitGroup
	wg.Go(func() { revoke = n.call(t, "DELETE", "/v1/api-keys/"+keyA, c.a.Secret, nil) })
	waitBlockedBy(t, pid)
	// Tenant b's revocation does not wait on tenant a's locks.
	requireStatus(t, n.call(t, "DELETE", "/v1/api-keys/"+keyB, c.b.Secret, nil), 200)
	if _, err := tx.Exec(ctx, `select 1 from tenants where id = $1 for update`, c.a.Tenant.ID); err != nil {
		t.Fatalf("the transaction that waited was rolled back instead of the request's: %v", err)
	}
	wg.Wait()
	requireProblem(t, revoke, 503, "")
	if got := revoke.header.Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After = %q, want 1", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing of the rolled-back request stayed; its retry revokes the key.
	list := n.call(t, "GET", "/v1/api-keys?limit=200", c.a.Secret, nil)
	for _, it := range list.body["items"].([]any) {
		if k := it.(map[string]any); k["id"] == keyA && k["revoked_at"] != nil {
			t.Fatalf("the rolled-back revocation took effect: %v", k)
		}
	}
	retry := n.call(t, "DELETE", "/v1/api-keys/"+keyA, c.a.Secret, nil)
	if retry.status != 200 || retry.body["revoked_at"] == nil {
		t.Fatalf("retry = %d %s", retry.status, retry.raw)
	}
}

// waitBlockedBy waits until some backend waits for a lock the backend pid holds.
func waitBlockedBy(t *testing.T, pid int) {
	t.Helper()
	ctx := context.Background()
	pool := dbtest.OwnerPool(t)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var n int
		if err := pool.QueryRow(ctx, `select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("nothing waited for the transaction's lock")
}
