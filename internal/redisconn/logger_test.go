package redisconn

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// go-redis's own lines (here, a failed dial) reach the process's JSON log, as warnings of
// the component go-redis, instead of plain text on stderr.
func TestLogToSendsGoRedisLinesToTheLogger(t *testing.T) {
	out := &syncBuffer{}
	LogTo(slog.New(slog.NewJSONHandler(out, nil)))
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "go-redis") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["component"] != "go-redis" || rec["level"] != "WARN" || rec["msg"] == "" {
		t.Fatalf("go-redis's line = %q (%v), want a JSON warning of the component go-redis", line, err)
	}
}
