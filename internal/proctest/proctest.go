// Package proctest holds what the tests of Tapline's commands (cmd/api, cmd/worker) share to
// run a process's main function against real Redis and PostgreSQL: a log buffer, free
// loopback addresses, a redis-server started late on an address the process already uses,
// and a fresh secret key.
package proctest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// LockedBuffer collects a process's log while it runs.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddr is a loopback address nothing listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// StartRedisAt starts a redis-server on addr, which a process under test already points at,
// with extra arguments (a password, say); it is killed in Cleanup.
func StartRedisAt(t testing.TB, addr string, extra ...string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	cmd := exec.Command("redis-server", append([]string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}, extra...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

// SecretKey is a fresh TAPLINE_SECRET_KEY: 32 random bytes in base64.
func SecretKey(t testing.TB) string {
	t.Helper()
	var k [32]byte
	_, _ = rand.Read(k[:])
	return base64.StdEncoding.EncodeToString(k[:])
}

// Stopped waits up to within for a process's run, started on done, to return, and fails the
// test unless it returned nil; what names the process, logs is its log.
func Stopped(t testing.TB, done <-chan error, within time.Duration, what string, logs fmt.Stringer) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: run after SIGTERM = %v, want nil\n%s", what, err, logs)
		}
	case <-time.After(within):
		t.Fatalf("%s did not stop within %s\n%s", what, within, logs)
	}
}
