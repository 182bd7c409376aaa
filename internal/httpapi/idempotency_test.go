package httpapi_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/inspector"
)

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
		requireProblem(t, n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": "admin"}, "Idempotency-Key", "k1"), 422, "")
		// Another key, another principal or another path is another request.
		requireStatus(t, n.call(t, "POST", "/v1/api-keys", c.a.Secret, map[string]any{"role": "admin"}, "Idempotency-Key", "k2"), 201)
		requireStatus(t, n.call(t, "POST", "/v1/api-keys", c.b.Secret, map[string]any{"role": "admin"}, "Idempotency-Key", "k1"), 201)
		list := n.call(t, "GET", "/v1/api-keys?limit=200", c.a.Secret, nil)
		if got := len(list.body["items"].([]any)); got != 3 {
			t.Fatalf("tenant a has %d keys, want 3", got)
		}
	})
	t.Run("ErrorsAreReplayedAndNoKeyMeansNoDedup", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t)
		id := n.createSession(t, c.a.Secret, "closed")
		requireStatus(t, n.call(t, "DELETE", "/v1/sessions/"+id, c.a.Secret, nil), 200)
		// A 4xx outcome is the answer to that request: its retry gets the same problem.
		first := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{"name": "x"}, "Idempotency-Key", "call-1")
		requireProblem(t, first, 409, "")
		again := n.call(t, "POST", "/v1/sessions/"+id+"/calls", c.a.Secret, map[string]any{"name": "x"}, "Idempotency-Key", "call-1")
		requireProblem(t, again, 409, "")
		if again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatal("the retry was run again instead of replayed")
		}
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
