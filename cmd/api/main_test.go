package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/proctest"
	"github.com/tapline/tapline/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	os.Exit(code)
}

type answer struct {
	status      int
	contentType string
	body        string
}

func get(url string) answer {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return answer{}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("Content-Type"), string(body)}
}

// An api started while Redis is away waits for it: /healthz answers, /readyz and the REST
// API answer 503 until Redis is up, then it serves. Before, it exited at once with status 1.
func TestAPIWaitsForRedisAtStart(t *testing.T) {
	redisAddr := proctest.FreeAddr(t)
	httpAddr := proctest.FreeAddr(t)
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    "redis://" + redisAddr + "/0",
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    httpAddr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &proctest.LockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return vars[k] }, io.Discard, logs) }()

	base := "http://" + httpAddr
	redistest.Eventually(t, 10*time.Second, "/healthz answers while Redis is away", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the api exited while Redis was away: %v\n%s", err, logs)
		default:
		}
		return get(base+"/healthz").status == http.StatusOK
	})
	redistest.Eventually(t, 10*time.Second, "a retry is logged", func() bool {
		return strings.Count(logs.String(), "waiting for redis") >= 2
	})
	if a := get(base + "/readyz"); a.status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while Redis is away = %d %s, want 503", a.status, a.body)
	}
	if a := get(base + "/v1/sessions"); a.status != http.StatusServiceUnavailable || a.contentType != "application/problem+json" {
		t.Fatalf("GET /v1/sessions while Redis is away = %d %q %s, want a 503 problem", a.status, a.contentType, a.body)
	}

	proctest.StartRedisAt(t, redisAddr)
	redistest.Eventually(t, 20*time.Second, "the api becomes ready once Redis is up", func() bool {
		return get(base+"/readyz").status == http.StatusOK
	})
	if a := get(base + "/v1/sessions"); a.status != http.StatusUnauthorized {
		t.Fatalf("GET /v1/sessions without a key once serving = %d %s, want 401", a.status, a.body)
	}

	cancel()
	proctest.Stopped(t, done, 30*time.Second, "the api", logs)
}

// A malformed TAPLINE_JWT_KEYS stops the api at once, named, even while the datastores are
// away; before, it surfaced only once Redis answered, without the variable's name.
func TestAPIRefusesBadJWTKeysBeforeConnecting(t *testing.T) {
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": "postgres://tapline_app@" + proctest.FreeAddr(t) + "/tapline",
		"TAPLINE_REDIS_URL":    "redis://" + proctest.FreeAddr(t) + "/0",
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    proctest.FreeAddr(t),
		"TAPLINE_JWT_KEYS":     "k1:dG9vLXNob3J0",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, nil, func(k string) string { return vars[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "TAPLINE_JWT_KEYS") {
		t.Fatalf("run = %v, want an error naming TAPLINE_JWT_KEYS", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the api waited for the datastores before refusing its JWT keys")
	}
}

// The CLI refuses arguments it does not understand instead of ignoring them, and never
// prints the bootstrap key anywhere but stdout.
func TestCLIArguments(t *testing.T) {
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    os.Getenv("TEST_REDIS_URL"),
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    proctest.FreeAddr(t),
	}
	getenv := func(k string) string { return vars[k] }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := func(args ...string) (stdout, stderr string, err error) {
		var out, errOut bytes.Buffer
		err = run(ctx, args, getenv, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	tenantIDs := map[string]string{}
	for _, name := range []string{"cli-a", "cli-b"} {
		name += "-" + proctest.SecretKey(t)[:8]
		stdout, stderr, err := cli("bootstrap", "--tenant", name, "--email", "owner@"+strings.ToLower(name[:5])+".example")
		if err != nil {
			t.Fatalf("bootstrap: %v\n%s", err, stderr)
		}
		key := strings.TrimSpace(stdout)
		if key == "" || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("bootstrap stdout = %q, want the key alone on one line", stdout)
		}
		if strings.Contains(stderr, key) {
			t.Fatalf("bootstrap printed the key on stderr: %s", stderr)
		}
		var id string
		if err := dbtest.OwnerPool(t).QueryRow(ctx, "select id::text from tenants where name = $1", name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		tenantIDs[name[:5]] = id
	}
	a, b := tenantIDs["cli-a"], tenantIDs["cli-b"]

	if out, _, err := cli("quota", "--tenant", a, "--max-live-sessions", "7"); err != nil || !strings.Contains(out, "max_live_sessions=7") {
		t.Fatalf("quota set: %q %v", out, err)
	}
	refused := []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "now"}, "takes no arguments"},
		{[]string{"serve", "--port", "9"}, "takes no arguments"},
		{[]string{"bootstrap", "--tenant", "x", "--email", "x@x.example", "extra"}, "unexpected arguments"},
		{[]string{"quota", "--tenant", a, "stray"}, "unexpected arguments"},
		{[]string{"quota", "--tenant", a, "--max-live-sessions", "-5"}, "max_live_sessions"},
		{[]string{"quota", "--tenant", a, "--event-retention-days", "-1"}, "event_retention_days"},
		{[]string{"quota", "--tenant", "no-such-tenant"}, "no-such-tenant"},
		{[]string{"quota", "--tenant", a, "--max-live-sessions", "many"}, "invalid value"},
	}
	for _, r := range refused {
		_, stderr, err := cli(r.args...)
		if err == nil {
			t.Errorf("api %v succeeded, want an error", r.args)
			continue
		}
		if !strings.Contains(err.Error()+stderr, r.want) {
			t.Errorf("api %v: %v %s, want it to say %q", r.args, err, stderr, r.want)
		}
	}

	// The refused values left tenant a at 7; tenant b keeps the install's default.
	if out, _, err := cli("quota", "--tenant", a); err != nil || !strings.Contains(out, "max_live_sessions=7") {
		t.Fatalf("quota a: %q %v", out, err)
	}
	if out, _, err := cli("quota", "--tenant", b); err != nil || !strings.Contains(out, "max_live_sessions=50") {
		t.Fatalf("quota b: %q %v", out, err)
	}
}

// `api --help` prints the commands and succeeds without any configuration; before, it
// failed on the configuration or as an unknown command.
func TestHelpNeedsNoConfiguration(t *testing.T) {
	for _, arg := range []string{"help", "-h", "--help"} {
		var out bytes.Buffer
		err := run(context.Background(), []string{arg}, func(string) string { return "" }, &out, io.Discard)
		if err != nil || !strings.Contains(out.String(), "api bootstrap --tenant NAME") {
			t.Errorf("api %s = %v, %q; want the usage", arg, err, out.String())
		}
	}
}

// Redis refusing the configured password stops the api instead of making it wait forever.
func TestAPIStopsOnRedisAuthError(t *testing.T) {
	redisAddr := proctest.FreeAddr(t)
	proctest.StartRedisAt(t, redisAddr, "--requirepass", "right-password")
	redistest.Eventually(t, 10*time.Second, "redis-server listens", func() bool {
		c, err := net.Dial("tcp", redisAddr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": dbtest.SharedURL(t),
		"TAPLINE_REDIS_URL":    "redis://:wrong-password@" + redisAddr + "/0",
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    proctest.FreeAddr(t),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, nil, func(k string) string { return vars[k] }, io.Discard, io.Discard)
	if ctx.Err() != nil {
		t.Fatalf("the api kept waiting for a Redis that refuses its password (run = %v)", err)
	}
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("run = %v, want Redis's refusal", err)
	}
}

// An api started against a database `api migrate` has not brought to this release stops at
// once, saying so, instead of serving errors from missing tables and columns.
func TestAPIRefusesAnUnmigratedDatabase(t *testing.T) {
	d := dbtest.New(t)
	// A database from before this release's migrations: 0021 (tapline_schema_versions) is
	// not there.
	if _, err := d.Pool.Exec(context.Background(), `drop function tapline_schema_versions()`); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"TAPLINE_DATABASE_URL": d.AppURL,
		"TAPLINE_REDIS_URL":    "redis://" + proctest.FreeAddr(t) + "/0",
		"TAPLINE_SECRET_KEY":   proctest.SecretKey(t),
		"TAPLINE_HTTP_ADDR":    proctest.FreeAddr(t),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, nil, func(k string) string { return vars[k] }, io.Discard, io.Discard)
	if ctx.Err() != nil {
		t.Fatalf("the api kept running on an unmigrated database (run = %v)", err)
	}
	if !errors.Is(err, db.ErrSchemaBehind) || !strings.Contains(err.Error(), "api migrate") {
		t.Fatalf("run = %v, want db.ErrSchemaBehind telling to run api migrate", err)
	}
}
