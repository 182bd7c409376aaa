// Package redistest connects tests to the real Redis servers that
// deploy/local/test-services.sh starts: a single redis-server (TEST_REDIS_URL)
// and a 3-master Redis Cluster (TEST_REDIS_CLUSTER_ADDRS).
//
// Tests never mock Redis and never skip: a missing variable or an unreachable
// server fails the test. Servers are shared by every package running in
// parallel, so each test isolates itself by a unique key prefix (Prefix) and
// must not run FLUSHDB/FLUSHALL on them. A test that needs to lose all data
// starts its own server with StartServer.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backend is one kind of Redis deployment a test runs against.
type Backend struct {
	// Name is "Single" or "Cluster"; it names the subtest.
	Name string
	// Cluster is true for the Redis Cluster backend.
	Cluster bool
	// New returns a fresh client, closed when the test ends.
	New func(t testing.TB) redis.UniversalClient
	// NewNamed is New with CLIENT SETNAME name on every connection, so a test
	// can find and kill its own connections (see KillClients).
	NewNamed func(t testing.TB, name string) redis.UniversalClient
}

// Backends returns the single-node and the cluster backend. It fails the test
// when either environment variable is missing.
func Backends(t testing.TB) []Backend {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	addrs := os.Getenv("TEST_REDIS_CLUSTER_ADDRS")
	if url == "" || addrs == "" {
		t.Fatalf("TEST_REDIS_URL and TEST_REDIS_CLUSTER_ADDRS must be set; run through deploy/local/test-services.sh")
	}
	seeds := strings.Split(addrs, ",")
	return []Backend{
		{
			Name:     "Single",
			New:      func(t testing.TB) redis.UniversalClient { return Single(t, url) },
			NewNamed: func(t testing.TB, name string) redis.UniversalClient { return singleNamed(t, url, name) },
		},
		{
			Name: "Cluster", Cluster: true,
			New:      func(t testing.TB) redis.UniversalClient { return Cluster(t, seeds) },
			NewNamed: func(t testing.TB, name string) redis.UniversalClient { return clusterNamed(t, seeds, name) },
		},
	}
}

// Run runs fn once per backend as the subtests "Single" and "Cluster".
func Run(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) { fn(t, b) })
	}
}

// Single connects to a single-node Redis by URL, pings it (failing the test
// when it is unreachable) and closes the client in Cleanup.
func Single(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	return singleNamed(t, url, "")
}

func singleNamed(t testing.TB, url, name string) redis.UniversalClient {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse redis url %q: %v", url, err)
	}
	opt.ClientName = name
	c := redis.NewClient(opt)
	ping(t, c)
	return c
}

// Cluster connects to a Redis Cluster through the given seeds, pings every
// master and closes the client in Cleanup.
func Cluster(t testing.TB, seeds []string) redis.UniversalClient {
	t.Helper()
	return clusterNamed(t, seeds, "")
}

func clusterNamed(t testing.TB, seeds []string, name string) redis.UniversalClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, ClientName: name})
	ping(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.Ping(ctx).Err()
	}); err != nil {
		t.Fatalf("redis cluster %v: %v", seeds, err)
	}
	return c
}

func ping(t testing.TB, c redis.UniversalClient) {
	t.Helper()
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis unreachable: %v", err)
	}
}

// Prefix returns a key prefix unique to this test run, safe to use as a
// tracker prefix (no braces, no spaces).
func Prefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "test:" + hex.EncodeToString(b[:])
}

// DeletePrefix deletes every key starting with prefix on every master (SCAN +
// UNLINK). It is how a test on the shared cluster simulates data loss without
// touching other tests' keys.
func DeletePrefix(ctx context.Context, c redis.UniversalClient, prefix string) error {
	del := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				if err := unlink(ctx, c, batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return unlink(ctx, c, batch)
	}
	switch c := c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, del)
	case *redis.Client:
		return del(ctx, c)
	default:
		return fmt.Errorf("redistest: DeletePrefix: unsupported client %T", c)
	}
}

// unlink deletes keys one by one in a pipeline, so keys of different slots on
// one cluster master never form a cross-slot command.
func unlink(ctx context.Context, c *redis.Client, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := c.Pipeline()
	for _, k := range keys {
		pipe.Unlink(ctx, k)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// KillClients kills, on every master, the connections named name whose
// CLIENT LIST line contains every one of the filters (e.g. "sub=1"), and
// returns how many it killed. It breaks only the calling test's connections.
func KillClients(ctx context.Context, c redis.UniversalClient, name string, filters ...string) (int, error) {
	var mu sync.Mutex
	killed := 0
	kill := func(ctx context.Context, c *redis.Client) error {
		list, err := c.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, " name="+name+" ") {
				continue
			}
			match := true
			for _, f := range filters {
				match = match && strings.Contains(" "+line+" ", " "+f+" ")
			}
			id := ""
			for _, field := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(field, "id="); ok {
					id = v
				}
			}
			if !match || id == "" {
				continue
			}
			if err := c.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				return err
			}
			mu.Lock()
			killed++
			mu.Unlock()
		}
		return nil
	}
	var err error
	switch c := c.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, kill)
	case *redis.Client:
		err = kill(ctx, c)
	default:
		err = fmt.Errorf("redistest: KillClients: unsupported client %T", c)
	}
	return killed, err
}

// Server is a dedicated redis-server started by a test.
type Server struct {
	// Addr is host:port on loopback.
	Addr string
	// URL is redis://Addr/0.
	URL string
}

// StartServer starts a private redis-server on a free loopback port, without
// persistence, and kills it in Cleanup. Use it for tests that FLUSHALL or
// restart Redis, so other packages sharing TEST_REDIS_URL are unaffected.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: %v", err)
	}
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server exited early: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not start: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Server{Addr: addr, URL: "redis://" + addr + "/0"}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually polls cond every few milliseconds until it returns true or the
// timeout passes, then fails the test with msg. It is the only way tests here
// wait for something asynchronous; a bare sleep is never an assertion.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, msg)
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}
