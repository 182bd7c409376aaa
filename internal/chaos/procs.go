package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// freePort returns a port on 127.0.0.1 nothing listens on now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot finds the module root from the working directory.
func RepoRoot() (string, error) {
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the tapline module")
	}
	return filepath.Dir(mod), nil
}

func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// countInFile counts the lines of path that contain s.
func countInFile(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(s))
}

// buildBinaries builds cmd/api and cmd/worker into dir.
func buildBinaries(ctx context.Context, root, dir string, race bool) error {
	for _, name := range []string{"api", "worker"} {
		args := []string{"build", "-o", filepath.Join(dir, name)}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, goTool(), append(args, "./cmd/"+name)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// postgres is a throw-away PostgreSQL cluster started through deploy/local/lib.sh.
type postgres struct {
	root, dir string
	port      int
}

func (p *postgres) lib(ctx context.Context, script string, args ...string) error {
	full := `set -euo pipefail; . "$TL_ROOT/deploy/local/lib.sh"; ` + script
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", full, "chaos"}, args...)...)
	cmd.Env = append(os.Environ(), "TL_ROOT="+p.root,
		"TL_PG_OPTS=-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Fields(script)[0], err, out)
	}
	return nil
}

func (p *postgres) start(ctx context.Context) error {
	return p.lib(ctx, `tl_pg_start "$1" "$2"`, p.dir, strconv.Itoa(p.port))
}

func (p *postgres) setup(ctx context.Context) error {
	return p.lib(ctx, `tl_pg_createdb "$1" tapline && tl_pg_app_role "$1"`, strconv.Itoa(p.port))
}

func (p *postgres) stop(ctx context.Context) error {
	return p.lib(ctx, `tl_pg_stop "$1"`, p.dir)
}

func (p *postgres) appURL() string {
	return fmt.Sprintf("postgres://tapline_app@127.0.0.1:%d/tapline?sslmode=disable", p.port)
}

func (p *postgres) adminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/tapline?sslmode=disable", p.port)
}

// redisServer is a redis-server child process without persistence: a restart comes back empty.
type redisServer struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func (r *redisServer) start(ctx context.Context) error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(r.dir, "redis.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--dir", r.dir,
		"--save", "", "--appendonly", "no")
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); logf.Close(); close(r.done) }()
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.Ping(ctx).Err() == nil {
			return nil
		}
		select {
		case <-r.done:
			return errors.New("redis-server exited at start; see redis.log")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("redis-server did not answer within 10s")
}

// kill ends redis-server at once, losing everything it held.
func (r *redisServer) kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// proc is one api or worker process.
type proc struct {
	name string
	bin  string
	addr string // its HTTP address
	env  []string
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	paused  bool
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "---- start %s at %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.paused = cmd, done, false
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// waitHealthy waits until path answers 200.
func (p *proc) waitHealthy(ctx context.Context, path string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %s in %v (see %s)", p.name, path, within, p.log)
		case <-p.exited():
			return fmt.Errorf("%s exited at start (see %s)", p.name, p.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return errors.New("not started")
	}
	if sig == syscall.SIGSTOP {
		p.paused = true
	}
	if sig == syscall.SIGCONT {
		p.paused = false
	}
	return p.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	_ = p.signal(syscall.SIGKILL)
	<-p.exited()
}

// terminate sends SIGTERM and waits up to within for the exit; it reports how long it took
// and kills the process if it did not exit in time.
func (p *proc) terminate(within time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = p.signal(syscall.SIGCONT)
	if err := p.signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	select {
	case <-p.exited():
		return time.Since(start), nil
	case <-time.After(within):
		p.kill()
		return time.Since(start), fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, within)
	}
}

// nodeID reads the tracker node id the process logged at start ("node_id").
func (p *proc) nodeIDs() []string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, `"node_id":"`); i >= 0 {
			rest := line[i+len(`"node_id":"`):]
			if j := strings.IndexByte(rest, '"'); j > 0 {
				out = append(out, rest[:j])
			}
		}
	}
	return out
}

// tail returns the last n warnings, errors and non-JSON lines (panics) of the process log.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.HasPrefix(l, "{") || strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// baseEnv is the process environment without any TAPLINE_ variable of the caller's.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TAPLINE_") && !strings.HasPrefix(kv, "OTEL_") {
			out = append(out, kv)
		}
	}
	return out
}
