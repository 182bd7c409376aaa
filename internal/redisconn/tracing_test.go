package redisconn

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/telemetry/telemetrytest"
)

// testClients opens, through Open, a client of the single test server and one of the test
// cluster.
func testClients(t *testing.T) map[string]redis.UniversalClient {
	t.Helper()
	raw, seeds := os.Getenv("TEST_REDIS_URL"), os.Getenv("TEST_REDIS_CLUSTER_ADDRS")
	if raw == "" || seeds == "" {
		t.Fatal("TEST_REDIS_URL and TEST_REDIS_CLUSTER_ADDRS must be set: run the tests through `make test`")
	}
	single, err := config.ParseRedisURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]redis.UniversalClient{}
	for name, rc := range map[string]config.RedisConfig{"Single": single, "Cluster": {Addrs: strings.Split(seeds, ","), Cluster: true}} {
		c, err := Open(rc, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients[name] = c
	}
	return clients
}

func TestPipelineSpanNamesCommandsNotArguments(t *testing.T) {
	for name, c := range testClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			key := "redisconn-test:" + t.Name()
			const secret = "tenant-secret-payload"
			// Warm up: a cluster client finds its nodes (and adds their hooks) on first use.
			if err := c.Set(ctx, key, "warm", 0).Err(); err != nil {
				t.Fatal(err)
			}
			spans := telemetrytest.Spans(t)
			spans.Reset()
			p := c.Pipeline()
			p.Set(ctx, key, secret, 0)
			p.Get(ctx, key)
			p.Set(ctx, key, secret+"2", 0)
			p.Get(ctx, key)
			if _, err := p.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Get(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
			var pipelines, gets int
			for _, s := range spans.GetSpans() {
				for _, a := range s.Attributes {
					if strings.Contains(a.Value.Emit(), secret) {
						t.Errorf("span %q carries an argument: %s=%s", s.Name, a.Key, a.Value.Emit())
					}
				}
				switch s.Name {
				case "redis.pipeline set get":
					pipelines++
					attrs := map[string]string{}
					for _, a := range s.Attributes {
						attrs[string(a.Key)] = a.Value.Emit()
					}
					if attrs["db.redis.num_cmd"] != "4" || attrs["db.system"] != "redis" || attrs["server.address"] == "" {
						t.Errorf("pipeline span attributes %v", attrs)
					}
				case "get":
					gets++
				default:
					if strings.HasPrefix(s.Name, "redis.pipeline") {
						t.Errorf("unexpected pipeline span %q", s.Name)
					}
				}
			}
			if pipelines != 1 || gets != 1 {
				t.Fatalf("%d pipeline spans and %d get spans, want one of each", pipelines, gets)
			}
		})
	}
}

// Tracing a pipeline must not copy its arguments: a persister pipeline carries every event
// payload of its batch.
func TestPipelineTracingDoesNotCopyPayloads(t *testing.T) {
	ctx := context.Background()
	c := testClients(t)["Single"]
	key := "redisconn-test:" + t.Name()
	payload := strings.Repeat("x", 1<<20)
	publish := func() {
		p := c.Pipeline()
		p.Publish(ctx, key, payload)
		p.Publish(ctx, key, payload)
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	publish() // connection and buffers
	const runs = 10
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		publish()
	}
	runtime.ReadMemStats(&after)
	perPipeline := (after.TotalAlloc - before.TotalAlloc) / runs
	if perPipeline > 256<<10 {
		t.Fatalf("a pipeline of two 1 MiB PUBLISHes allocates %d bytes: is an argument being formatted for a span?", perPipeline)
	}
	t.Logf("a pipeline of two 1 MiB PUBLISHes allocates %d bytes", perPipeline)
}
