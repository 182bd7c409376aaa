// Package redisconn builds the go-redis client for a configured Redis deployment (single
// node, Sentinel or Cluster) and maps its errors once.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tapline/tapline/internal/config"
)

// ErrUnavailable means Redis could not be reached; callers answer 503 and retry later.
var ErrUnavailable = errors.New("redis unavailable")

// Options tunes Open; nil means defaults.
type Options struct {
	// PoolSize per node. Defaults to go-redis's default (10 per core).
	PoolSize int
	// ClientName is sent with CLIENT SETNAME, visible in CLIENT LIST.
	ClientName string
}

// Open returns a UniversalClient for rc: a *redis.Client, *redis.ClusterClient or failover
// client. It does not wait for the server: readiness checks and callers see ErrUnavailable.
func Open(rc config.RedisConfig, opts *Options) (redis.UniversalClient, error) {
	if len(rc.Addrs) == 0 {
		return nil, errors.New("open redis: no address")
	}
	uo := &redis.UniversalOptions{
		Addrs:         rc.Addrs,
		MasterName:    rc.MasterName,
		IsClusterMode: rc.Cluster,
		Username:      rc.Username,
		Password:      rc.Password,
		DB:            rc.DB,
		DialTimeout:   2 * time.Second,
		ReadTimeout:   3 * time.Second,
		WriteTimeout:  3 * time.Second,
		// Fail fast when Redis is away instead of queueing callers behind the pool.
		PoolTimeout:     4 * time.Second,
		MaxRetries:      2,
		DisableIdentity: true,
	}
	if rc.MasterName != "" {
		uo.SentinelUsername = rc.Username
		uo.SentinelPassword = rc.Password
	}
	if opts != nil {
		uo.PoolSize = opts.PoolSize
		uo.ClientName = opts.ClientName
	}
	if rc.TLS {
		uo.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	client := redis.NewUniversalClient(uo)
	if err := instrument(client); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("instrument redis: %w", err)
	}
	return client, nil
}

// Ping checks that Redis answers within ctx.
func Ping(ctx context.Context, c redis.UniversalClient) error {
	if err := c.Ping(ctx).Err(); err != nil {
		return InterpretError(err)
	}
	return nil
}

// InterpretError marks connection-level failures with ErrUnavailable and leaves the rest,
// including redis.Nil, untouched.
func InterpretError(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) || isLoading(err) {
		return errors.Join(ErrUnavailable, err)
	}
	return err
}

func isLoading(err error) bool {
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		return strings.HasPrefix(msg, "LOADING") || strings.HasPrefix(msg, "CLUSTERDOWN") || strings.HasPrefix(msg, "MASTERDOWN")
	}
	return false
}

// IsConfigError reports whether err is Redis refusing the configured credentials or
// database (WRONGPASS, NOAUTH, NOPERM, a DB index out of range): waiting will not fix it,
// so a process starting up stops instead of retrying.
func IsConfigError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, p := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR DB index is out of range"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// LogTo sends go-redis's own log lines (a failed dial, a pool or cluster note) to logger, as
// warnings with the message and the component "go-redis", instead of the plain text it
// writes to stderr by default among the process's JSON logs. go-redis has one logger per
// process.
func LogTo(logger *slog.Logger) {
	redis.SetLogger(redisLogger{logger.With(slog.String("component", "go-redis"))})
}

type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	r.l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}
