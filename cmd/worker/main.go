// Command worker holds Tapline's outbound MCP client connections. It registers a tracker node
// with a heartbeat, owns inspector sessions through fenced leases, and on SIGTERM hands its
// leases over before it exits. It serves /healthz, /readyz and /metrics on TAPLINE_HTTP_ADDR,
// /metrics behind TAPLINE_METRICS_TOKEN when that is set.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/retention"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/telemetry"
	"github.com/tapline/tapline/internal/tracker"
	"github.com/tapline/tapline/migrations"
)

// version is stamped at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := telemetry.NewLogger(stderr, cfg.LogLevel).With(slog.String("service", "worker"), slog.String("node", cfg.NodeName))
	gcs := config.TuneRuntime(getenv)
	logger.LogAttrs(ctx, slog.LevelInfo, "go runtime", gcs.LogAttrs()...)
	providers, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "tapline-worker", NodeName: cfg.NodeName, OTLPEndpoint: cfg.OTLPEndpoint})
	if err != nil {
		return err
	}
	defer func() { _ = providers.Flush(telemetry.FlushTimeout) }()

	pool, err := db.NewPool(ctx, cfg.DatabaseURL, &db.PoolOptions{Logger: logger})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := db.CheckAtStart(ctx, pool, migrations.FS, logger); err != nil {
		return err
	}
	redisconn.LogTo(logger)
	rdb, err := redisconn.Open(cfg.Redis, &redisconn.Options{ClientName: "tapline-worker-" + cfg.NodeName})
	if err != nil {
		return err
	}
	defer rdb.Close()

	keys, err := secretbox.ParseKeyring(cfg.SecretKey)
	if err != nil {
		return fmt.Errorf("TAPLINE_SECRET_KEY: %w", err)
	}
	guard, err := netguard.New(&netguard.Config{
		AllowLoopback: cfg.DevMode,
		AllowPrivate:  cfg.AllowPrivateTargets,
		Allow:         cfg.AllowedTargetCIDRs,
	})
	if err != nil {
		return err
	}
	// The health endpoints answer from the start, /readyz with 503 until the node is
	// registered, so a worker waiting for Redis shows as alive and not ready.
	var started atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if !started.Load() {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":"starting"}`)
			return
		}
		if pool.Ping(rctx) != nil || redisconn.Ping(rctx, rdb) != nil {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":"unavailable"}`)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ready"}`)
	})
	mux.Handle("GET /metrics", telemetry.MetricsAuth(cfg.MetricsToken, providers.MetricsHandler()))
	srv := &http.Server{Addr: cfg.HTTPAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
		close(serveErr)
	}()
	stopHTTP := func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		return errors.Join(err, <-serveErr)
	}

	// The tracker calls OnLeaseLost from its own goroutines; the runtime exists only once the
	// tracker has started.
	var rt atomic.Pointer[inspector.Runtime]
	// The tracker runs past SIGTERM: the drain below needs its heartbeat and lease renewals
	// until it has handed the leases over, and trk.Stop ends it.
	trk, err := tracker.StartRetrying(ctx, context.WithoutCancel(ctx), func() (*tracker.Tracker, error) {
		return tracker.New(rdb, &tracker.Config{
			NodeName: cfg.NodeName,
			Addr:     cfg.InternalAddr,
			NodeTTL:  cfg.NodeTTL,
			LeaseTTL: cfg.LeaseTTL,
			Logger:   logger,
			OnLeaseLost: func(l *tracker.Lease) {
				if r := rt.Load(); r != nil {
					r.LeaseLost(l)
				}
			},
		})
	}, logger)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while waiting for Redis: nothing to drain, and not a failure.
			logger.InfoContext(ctx, "worker stopped before its node registered", slog.Any("error", err))
			return stopHTTP(context.Background())
		}
		return errors.Join(err, stopHTTP(context.Background()))
	}
	logger.InfoContext(ctx, "worker node registered", slog.String("node_id", trk.NodeID()))
	runtime, err := inspector.NewRuntime(&inspector.RuntimeConfig{
		Pool:           pool,
		Redis:          rdb,
		Tracker:        trk,
		Guard:          guard,
		Keys:           keys,
		Version:        version,
		PendingTimeout: cfg.Limits.PendingTimeout,
		IdleClose:      cfg.Limits.IdleSessionClose,
		Logger:         logger,
	})
	if err != nil {
		trk.Stop()
		return errors.Join(err, stopHTTP(context.Background()))
	}
	rt.Store(runtime)
	if err := runtime.Start(ctx); err != nil {
		trk.Stop()
		return errors.Join(err, stopHTTP(context.Background()))
	}
	// Every worker runs the retention job; an advisory lock lets one purge at a time.
	purger := retention.New(pool, &retention.Config{
		DefaultDays: cfg.Limits.EventRetentionDays, Audit: audit.NewRecorder(pool, nil), Logger: logger,
	})
	if err := purger.Start(context.WithoutCancel(ctx)); err != nil {
		runtime.Stop(context.Background())
		trk.Stop()
		return errors.Join(err, stopHTTP(context.Background()))
	}
	defer purger.Stop()
	started.Store(true)

	var shutdownErr error
	select {
	case err := <-serveErr:
		shutdownErr = err
		logger.ErrorContext(ctx, "health server failed; draining", slog.Any("error", err))
	case <-ctx.Done():
		logger.InfoContext(ctx, "worker draining")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	// Drain: close the connections, commit what is queued and hand the leases over at
	// once, so other workers take the sessions without waiting for the leases to expire.
	purger.Stop()
	runtime.Stop(sctx)
	trk.Stop()
	return errors.Join(shutdownErr, stopHTTP(sctx))
}
