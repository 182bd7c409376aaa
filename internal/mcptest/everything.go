package mcptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EverythingURLEnv names an environment variable that, when set, is the URL
// of an already running server-everything; [Everything] then starts nothing.
const EverythingURLEnv = "TEST_EVERYTHING_URL"

// everythingStartTimeout covers a first npm install on a cold cache.
const everythingStartTimeout = 5 * time.Minute

var everything struct {
	once     sync.Once
	mu       sync.Mutex
	url      string
	script   string
	stateDir string
	err      error
}

// Everything returns the Streamable HTTP URL of a server-everything instance
// private to this test binary, starting it on first use with
// deploy/local/everything.sh (found by walking up from the working directory
// to the module root). The first start may install the pinned npm package,
// which takes a while on a cold cache.
//
// The instance lives until [StopEverything] (call it from TestMain) or until
// the test binary exits, whichever comes first. Everything fails the test,
// never skips it, when the server cannot start.
func Everything(t testing.TB) string {
	t.Helper()
	everything.once.Do(startEverything)
	if everything.err != nil {
		t.Fatalf("mcptest: server-everything: %v", everything.err)
	}
	return everything.url
}

// StopEverything stops the instance started by [Everything], if any. It is
// safe to call more than once and when nothing was started.
func StopEverything() {
	everything.mu.Lock()
	defer everything.mu.Unlock()
	if everything.stateDir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, everything.script, "stop")
	cmd.Env = append(os.Environ(), "TL_EVERYTHING_STATE="+everything.stateDir)
	_ = cmd.Run()
	_ = os.RemoveAll(everything.stateDir)
	everything.stateDir = ""
}

func startEverything() {
	if url := os.Getenv(EverythingURLEnv); url != "" {
		everything.url = url
		return
	}
	script, err := findEverythingScript()
	if err != nil {
		everything.err = err
		return
	}
	stateDir, err := os.MkdirTemp("", "mcptest-everything-")
	if err != nil {
		everything.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), everythingStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "start")
	cmd.Env = append(os.Environ(),
		"TL_EVERYTHING_STATE="+stateDir,
		"TL_EVERYTHING_OWNER_PID="+strconv.Itoa(os.Getpid()),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()

	everything.mu.Lock()
	defer everything.mu.Unlock()
	everything.script, everything.stateDir = script, stateDir
	if err != nil {
		everything.err = fmt.Errorf("%s start: %w\n%s", script, err, stderr.String())
		return
	}
	url := strings.TrimSpace(string(out))
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		everything.err = fmt.Errorf("%s start printed %q, want a loopback URL\n%s", script, url, stderr.String())
		return
	}
	everything.url = url
}

// findEverythingScript walks up from the working directory (a test runs in
// its package directory) to the directory holding deploy/local/everything.sh.
func findEverythingScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "deploy", "local", "everything.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("deploy/local/everything.sh not found above the working directory")
		}
		dir = parent
	}
}
