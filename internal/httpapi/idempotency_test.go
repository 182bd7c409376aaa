package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/secretbox"
)

// storedIdempotent returns the Redis key and raw value of the one response stored for a
// tenant's Idempotency-Key requests.
func (c *cluster) storedIdempotent(t *testing.T, tenantID string) (string, string) {
	t.Helper()
	ctx := context.Background()
	keys, err := c.rdb.Keys(ctx, c.trkPrefix+":{"+tenantID+":*}:if:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("tenant %s has %d stored Idempotency-Key entries, want 1: %q", tenantID, len(keys), keys)
	}
	raw, err := c.rdb.Get(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(raw, "r|") {
		t.Fatalf("entry %s holds no stored response: %q", keys[0], raw)
	}
	return keys[0], raw
}

// withKeys gives an api node the keyring TAPLINE_SECRET_KEY=s.
func withKeys(t *testing.T, s string) func(*httpapi.Config) {
	keys := testKeyring(t, s)
	return func(cfg *httpapi.Config) { cfg.Keys = keys }
}

// TestIdempotentResponsesAreSealed: the response kept for replays of POST /v1/api-keys
// carries the new key's secret; Redis holds it sealed, bound to the entry it was stored in.
func TestIdempotentResponsesAreSealed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t)
	pods := []*apiNode{c.node(t), c.node(t)}
	body := map[string]any{"name": "sealed", "role": "member"}
	first := pods[0].call(t, "POST", "/v1/api-keys", c.a.Secret, body, "Idempotency-Key", "seal-1")
	requireStatus(t, first, 201)
	secret, _ := first.body["secret"].(string)
	if secret == "" {
		t.Fatalf("no secret in %s", first.raw)
	}
	keyA, rawA := c.storedIdempotent(t, c.a.Tenant.ID)
	// The secret must be neither in the value nor in a body the value carries encoded.
	var plain struct{ Body []byte }
	_ = json.Unmarshal([]byte(strings.TrimPrefix(rawA, "r|")), &plain)
	if strings.Contains(rawA, secret) || strings.Contains(string(plain.Body), secret) {
		t.Fatalf("Redis holds the new key's secret in the clear: %q", rawA)
	}
	if kid, err := secretbox.KeyIDOf([]byte(strings.TrimPrefix(rawA, "r|"))); err != nil || kid != "test" {
		t.Fatalf("stored response sealed under key %q (%v), want test", kid, err)
	}
	// The same principal's retry, on either node, still gets the secret: that is what the
	// key is for.
	for _, n := range pods {
		again := n.call(t, "POST", "/v1/api-keys", c.a.Secret, body, "Idempotency-Key", "seal-1")
		if again.status != 201 || again.raw != first.raw || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry = %d %s (replayed %q), want the replay of %s", again.status, again.raw,
				again.header.Get("Idempotent-Replayed"), first.raw)
		}
	}

	// Tenant b sends the very same request with the same key: its own entry, its own key.
	mine := pods[1].call(t, "POST", "/v1/api-keys", c.b.Secret, body, "Idempotency-Key", "seal-1")
	requireStatus(t, mine, 201)
	if mine.body["secret"] == secret {
		t.Fatal("tenant b was answered with tenant a's key")
	}
	keyB, _ := c.storedIdempotent(t, c.b.Tenant.ID)
	if keyB == keyA {
		t.Fatalf("both tenants' responses are stored under %s", keyA)
	}
	// A's sealed response copied into b's entry does not open there: b's retry runs again
	// (the copy is as good as expired) and never sees a's secret.
	if err := c.rdb.Set(ctx, keyB, rawA, redis.KeepTTL).Err(); err != nil {
		t.Fatal(err)
	}
	swapped := pods[0].call(t, "POST", "/v1/api-keys", c.b.Secret, body, "Idempotency-Key", "seal-1")
	requireStatus(t, swapped, 201)
	if strings.Contains(swapped.raw, secret) || swapped.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("tenant b's retry replayed the response copied from tenant a: %s", swapped.raw)
	}
	// Tenant a's own entry is untouched and still replays.
	if again := pods[1].call(t, "POST", "/v1/api-keys", c.a.Secret, body, "Idempotency-Key", "seal-1"); again.raw != first.raw {
		t.Fatalf("tenant a's retry = %d %s", again.status, again.raw)
	}
}

// TestIdempotentResponsesAcrossKeyRotation: a response sealed under a key the keyring still
// holds replays after the active key changed; one sealed under a key it no longer holds is
// as good as expired: the retry runs again, never a 500.
func TestIdempotentResponsesAcrossKeyRotation(t *testing.T) {
	t.Parallel()
	const (
		oldKey = "old:" + "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
		newKey = "new:" + "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
	)
	c := newCluster(t)
	before := c.node(t, withKeys(t, oldKey))
	during := c.node(t, withKeys(t, newKey+","+oldKey))
	after := c.node(t, withKeys(t, newKey))
	body := map[string]any{"name": "rotated", "role": "viewer"}
	for _, tc := range []struct {
		secret     string
		tenantID   string
		kid        string
		first      *apiNode
		replays    []*apiNode
		cannotRead *apiNode
	}{
		{c.a.Secret, c.a.Tenant.ID, "old", before, []*apiNode{before, during}, after},
		{c.b.Secret, c.b.Tenant.ID, "new", during, []*apiNode{during, after}, before},
	} {
		first := tc.first.call(t, "POST", "/v1/api-keys", tc.secret, body, "Idempotency-Key", "rotate-1")
		requireStatus(t, first, 201)
		_, raw := c.storedIdempotent(t, tc.tenantID)
		if kid, _ := secretbox.KeyIDOf([]byte(strings.TrimPrefix(raw, "r|"))); kid != tc.kid {
			t.Fatalf("sealed under %q, want %q", kid, tc.kid)
		}
		for _, n := range tc.replays {
			if r := n.call(t, "POST", "/v1/api-keys", tc.secret, body, "Idempotency-Key", "rotate-1"); r.raw != first.raw {
				t.Fatalf("%s-sealed response on a node holding that key: %d %s, want %s", tc.kid, r.status, r.raw, first.raw)
			}
		}
		r := tc.cannotRead.call(t, "POST", "/v1/api-keys", tc.secret, body, "Idempotency-Key", "rotate-1")
		requireStatus(t, r, 201)
		if r.raw == first.raw || r.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("a node without key %q replayed %s", tc.kid, r.raw)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	t.Run("ConcurrentRetriesOnTwoNodesCreateOnce", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		pods := []*apiNode{c.node(t), c.node(t)}
		const retries = 12
		replies := make([]response, retries)
		var wg sync.WaitGroup
		for i := range retries {
			wg.Go(func() {
				replies[i] = pods[i%2].call(t, "POST", "/v1/api-keys", c.a.Secret,
					map[string]any{"name": "ci", "role": "member"}, "Idempotency-Key", "create-ci-key-1")
			})
		}
		wg.Wait()
		replayed := 0
		for i, r := range replies {
			if r.status != 201 || r.raw != replies[0].raw {
				t.Fatalf("reply %d = %d %s, want the first reply %s", i, r.status, r.raw, replies[0].raw)
			}
			if r.header.Get("Idempotent-Replayed") == "true" {
				replayed++
			}
		}
		if replayed != retries-1 {
			t.Fatalf("%d replies were replays, want %d", replayed, retries-1)
		}
		list := pods[0].call(t, "GET", "/v1/api-keys?limit=200", c.a.Secret, nil)
		if n := len(list.body["items"].([]any)); n != 2 {
			t.Fatalf("tenant has %d keys, want the owner's and one new: %s", n, list.raw)
		}
		// A later retry on either node still gets the first answer.
		if r := pods[1].call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"name": "ci", "role": "member"},
			"Idempotency-Key", "create-ci-key-1"); r.raw != replies[0].raw {
			t.Fatalf("late retry = %s", r.raw)
		}
	})
	t.Run("SameKeyOtherBodyIsRefused", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		first := n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": "viewer"}, "Idempotency-Key", "k1")
		requireStatus(t, first, 201)
		requireProblem(t, n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": "admin"}, "Idempotency-Key", "k1"), 422, "Idempotency-Key")
		// Another key, another principal or another path is another request.
		requireStatus(t, n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": "admin"}, "Idempotency-Key", "k2"), 201)
		requireStatus(t, n.call(t, "POST", "/v1/api-keys", c.b.Secret, map[string]any{"role": "admin"}, "Idempotency-Key", "k1"), 201)
		list := n.call(t, "GET", "/v1/api-keys?limit=200", c.a.Secret, nil)
		if got := len(list.body["items"].([]any)); got != 3 {
			t.Fatalf("tenant a has %d keys, want 3", got)
		}
	})
	t.Run("ConflictsAreNotKeptAndNoKeyMeansNoDedup", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		// A session still connecting (nobody holds it here): a call is a 409 not-ready, which
		// acted on nothing. A retry with the same key once the session is ready must act,
		// not get the 409 again for as long as responses are kept.
		id := n.createSession(t, c.a.Secret, "connecting")
		body := map[string]any{"name": "echo", "arguments": map[string]any{"text": "hi"}}
		first := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, body, "Idempotency-Key", "call-1")
		requireProblem(t, first, 409, "")
		again := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, body, "Idempotency-Key", "call-1")
		requireProblem(t, again, 409, "")
		if again.header.Get("Idempotent-Replayed") != "" {
			t.Fatal("a 409 was replayed: it acted on nothing and may clear")
		}
		c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)
		queued := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, body, "Idempotency-Key", "call-1")
		requireStatus(t, queued, 202)
		if queued.header.Get("Idempotent-Replayed") != "" {
			t.Fatal("the first call that acted was marked as a replay")
		}
		replayed := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, body, "Idempotency-Key", "call-1")
		requireStatus(t, replayed, 202)
		if replayed.header.Get("Idempotent-Replayed") != "true" || replayed.raw != queued.raw {
			t.Fatalf("retry after the call was queued = %s %v, want the first 202 replayed", replayed.raw, replayed.header)
		}
		// The other tenant's same key is its own request: its session does not exist there.
		requireProblem(t, n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.b.Secret, body, "Idempotency-Key", "call-1"), 404, "")
		// Without a key, each request acts.
		for i := range 2 {
			requireStatus(t, n.call(t, "POST", "/v1/sessions", c.a.Secret, map[string]any{
				"name": fmt.Sprint("no-key-", i), "target": map[string]any{"url": "https://mcp.example.test/"},
			}), 201)
		}
	})
	t.Run("ServerFaultsAreNotStored", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		c.commandAfter = 300 * time.Millisecond
		n := c.node(t)
		id := n.createSession(t, c.a.Secret, "nobody holds me")
		c.setSessionStatus(t, c.a.Tenant.ID, id, inspector.StatusReady)
		// No worker: 504. The claim is given up, so the retry runs again (and may succeed
		// once a worker is back) instead of replaying the failure.
		for range 2 {
			r := n.call(t, "POST", "/v1/sessions/"+id+"/ping", c.a.Secret, nil, "Idempotency-Key", "ping-1")
			requireProblem(t, r, 504, "")
			if r.header.Get("Idempotent-Replayed") != "" {
				t.Fatal("a 504 was replayed")
			}
		}
	})
	t.Run("SessionCreatedOnceAcrossNodes", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		pods := []*apiNode{c.node(t), c.node(t)}
		body := map[string]any{"name": "once", "target": map[string]any{"url": "https://mcp.example.test/mcp", "bearer_token": secretToken}}
		var wg sync.WaitGroup
		replies := make([]response, 6)
		for i := range replies {
			wg.Go(func() {
				replies[i] = pods[i%2].call(t, "POST", "/v1/sessions", c.a.Secret, body, "Idempotency-Key", "session-once")
			})
		}
		wg.Wait()
		for i, r := range replies {
			if r.status != 201 || r.body["id"] != replies[0].body["id"] {
				t.Fatalf("reply %d = %d %s", i, r.status, r.raw)
			}
		}
		list := pods[0].call(t, "GET", "/v1/sessions", c.a.Secret, nil)
		if n := len(list.body["items"].([]any)); n != 1 {
			t.Fatalf("%d sessions created, want 1", n)
		}
	})
}

// TestRunAgainAfterExpiryIsAudited: once the response kept for an Idempotency-Key is gone
// (aged out after the tracker's ResultTTL, or unreadable), a retry with that key runs again,
// and what it does is in the audit log, even when it repeats exactly what the first run
// did and logged: here a member raised to admin, lowered without a key, then raised again
// by the first request's late retry. Only attempts of one run (a retry after a server
// fault) share their audit entries.
func TestRunAgainAfterExpiryIsAudited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t)
	pods := []*apiNode{c.node(t), c.node(t)}
	for _, tn := range []struct {
		name, secret, tenantID string
	}{{"TenantA", c.a.Secret, c.a.Tenant.ID}, {"TenantB", c.b.Secret, c.b.Tenant.ID}} {
		m := pods[0].call(t, "POST", "/v1/members", tn.secret, map[string]any{"email": "expiry-" + tn.name + "@example.test", "role": "viewer"})
		requireStatus(t, m, 201)
		path := "/v1/members/" + m.body["id"].(string)
		raise := map[string]any{"role": "admin"}
		requireStatus(t, pods[0].call(t, "PATCH", path, tn.secret, raise, "Idempotency-Key", "raise-1"), 200)
		requireStatus(t, pods[1].call(t, "PATCH", path, tn.secret, map[string]any{"role": "viewer"}), 200)
		// The kept response ages out.
		key, _ := c.storedIdempotent(t, tn.tenantID)
		if err := c.rdb.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		again := pods[1].call(t, "PATCH", path, tn.secret, raise, "Idempotency-Key", "raise-1")
		requireStatus(t, again, 200)
		if again.body["role"] != "admin" || again.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("%s: the late retry = %s (replayed %q), want it run", tn.name, again.raw, again.header.Get("Idempotent-Replayed"))
		}
		var roles []string
		err := db.WithTenantTx(ctx, c.pool, tn.tenantID, func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `select details->>'role' from audit_events
				where tenant_id = $1 and action = $2 and target_id = $3 order by seq`, tn.tenantID, audit.ActionMemberUpdate, m.body["id"])
			if err != nil {
				return err
			}
			roles, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(roles, ",") != "admin,viewer,admin" {
			t.Fatalf("%s: the audit log has the member's roles as %q, want admin,viewer,admin: the member is an admin", tn.name, roles)
		}
		if v := pods[0].call(t, "GET", "/v1/audit/verify", tn.secret, nil); v.status != 200 || v.body["ok"] != true {
			t.Fatalf("%s: verify = %d %s", tn.name, v.status, v.raw)
		}
	}
}
