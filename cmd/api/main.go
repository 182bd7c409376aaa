// Command api serves Tapline's REST API, SSE streams and web inspector.
//
//	api                 serve (the default)
//	api migrate         apply database migrations and exit
//	api bootstrap --tenant NAME --email EMAIL
//	                    create a tenant, its owner and an owner API key; print the key
//	api quota --tenant ID [--max-live-sessions N] [--event-retention-days D] [--reset]
//	                    show or set a tenant's quotas (no API role can change them)
package main

import (
	"context"
	"errors"
	"flag"
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

	"golang.org/x/sync/errgroup"

	"github.com/tapline/tapline"
	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/config"
	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/httpapi"
	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/netguard"
	"github.com/tapline/tapline/internal/ratelimit"
	"github.com/tapline/tapline/internal/redisconn"
	"github.com/tapline/tapline/internal/secretbox"
	"github.com/tapline/tapline/internal/telemetry"
	"github.com/tapline/tapline/internal/tenant"
	"github.com/tapline/tapline/internal/tracker"
	"github.com/tapline/tapline/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

// usage is what `api help` prints.
const usage = `usage:
  api                 serve (the default)
  api migrate         apply database migrations and exit
  api bootstrap --tenant NAME --email EMAIL
                      create a tenant, its owner and an owner API key; print the key
  api quota --tenant ID [--max-live-sessions N] [--event-retention-days D] [--reset]
                      show or set a tenant's quotas
Configuration comes from TAPLINE_* environment variables (README, "Configuration").
`

// run is main without the process globals, so tests can drive it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help", "-h", "-help", "--help":
		// Before the configuration is loaded: help needs none.
		_, err := io.WriteString(stdout, usage)
		return err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger := telemetry.NewLogger(stderr, cfg.LogLevel).With(slog.String("service", "api"), slog.String("node", cfg.NodeName))
	switch cmd {
	case "serve", "migrate":
		if len(args) > 0 {
			return fmt.Errorf("%s takes no arguments, got %q", cmd, args)
		}
	}
	switch cmd {
	case "serve":
		rt := config.TuneRuntime(getenv)
		logger.LogAttrs(ctx, slog.LevelInfo, "go runtime", rt.LogAttrs()...)
		return serve(ctx, cfg, logger)
	case "migrate":
		return migrate(ctx, cfg, logger)
	case "bootstrap":
		return bootstrap(ctx, cfg, args, stdout, stderr)
	case "quota":
		return quota(ctx, cfg, args, stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q: want serve, migrate, bootstrap or quota", cmd)
	}
}

func migrate(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	pool, err := db.NewPool(ctx, cfg.MigrateDatabaseURL, &db.PoolOptions{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := db.Migrate(ctx, pool, migrations.FS, logger)
	if err != nil {
		return err
	}
	logger.InfoContext(ctx, "database migrated", slog.Int("applied", len(applied)))
	return nil
}

func bootstrap(ctx context.Context, cfg *config.Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("tenant", "", "tenant (team) name")
	email := fs.String("email", "", "email of the tenant's owner")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *email == "" {
		return errors.New("bootstrap needs --tenant NAME and --email EMAIL")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bootstrap: unexpected arguments %q", fs.Args())
	}
	pool, err := db.NewPool(ctx, cfg.DatabaseURL, &db.PoolOptions{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := tenant.NewStore(pool).Bootstrap(ctx, tenant.BootstrapParams{TenantName: *name, Email: *email})
	if err != nil {
		return err
	}
	// The key, and nothing else, goes to stdout so scripts can capture it.
	_, err = fmt.Fprintln(stdout, res.Secret)
	return err
}

func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	// The JWT keyring is checked before anything connects, so a bad one stops the pod at once
	// rather than once PostgreSQL and Redis answer.
	if cfg.JWT.SigningKeys != "" {
		if _, err := auth.ParseJWTKeys(cfg.JWT.SigningKeys); err != nil {
			return fmt.Errorf("TAPLINE_JWT_KEYS: %w", err)
		}
	}
	providers, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "tapline-api", NodeName: cfg.NodeName, OTLPEndpoint: cfg.OTLPEndpoint})
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
	rdb, err := redisconn.Open(cfg.Redis, &redisconn.Options{ClientName: "tapline-api-" + cfg.NodeName})
	if err != nil {
		return err
	}
	defer rdb.Close()

	// The listener opens before the tracker starts: while Redis is away at boot the api
	// waits for it, /healthz answers and everything else, /readyz included, answers 503.
	// draining closes when Shutdown starts, ending SSE streams that Shutdown would
	// otherwise wait for until its deadline.
	draining := make(chan struct{})
	var app atomic.Pointer[http.Handler]
	srv := &http.Server{
		Addr: cfg.HTTPAddr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := app.Load(); h != nil {
				(*h).ServeHTTP(w, r)
				return
			}
			serveStarting(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(draining) })
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	logger.InfoContext(ctx, "api listening", slog.String("addr", ln.Addr().String()))

	ctx, failed := context.WithCancel(ctx)
	defer failed()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.InfoContext(ctx, "api shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	// stopServing ends the server when startup fails.
	stopServing := func(err error) error {
		failed()
		return errors.Join(err, g.Wait())
	}

	// The tracker node and the inspector service outlive the signal: they stop after the
	// HTTP server has drained, in the deferred calls below.
	bg := context.WithoutCancel(ctx)
	trk, err := tracker.StartRetrying(gctx, bg, func() (*tracker.Tracker, error) {
		return tracker.New(rdb, &tracker.Config{
			NodeName: "api-" + cfg.NodeName, Addr: cfg.InternalAddr, NodeTTL: cfg.NodeTTL, LeaseTTL: cfg.LeaseTTL, Logger: logger,
		})
	}, logger)
	if err != nil {
		if gctx.Err() != nil {
			// Stopped while waiting for Redis: not a failure.
			logger.InfoContext(ctx, "api stopped before its node registered", slog.Any("error", err))
			return g.Wait()
		}
		return stopServing(err)
	}
	defer trk.Stop()
	guard, err := netguard.New(&netguard.Config{
		AllowLoopback: cfg.DevMode, AllowPrivate: cfg.AllowPrivateTargets, Allow: cfg.AllowedTargetCIDRs,
	})
	if err != nil {
		return stopServing(err)
	}
	auditLog := audit.NewRecorder(pool, nil)
	keys, err := secretbox.ParseKeyring(cfg.SecretKey)
	if err != nil {
		return stopServing(fmt.Errorf("TAPLINE_SECRET_KEY: %w", err))
	}
	sessions, err := inspector.NewService(&inspector.ServiceConfig{
		Pool: pool, Redis: rdb, Tracker: trk, Guard: guard, Keys: keys,
		MaxLiveSessions: cfg.Limits.MaxLiveSessions, CommandTimeout: cfg.Limits.CommandTimeout, Logger: logger,
		Audit: auditLog,
	})
	if err != nil {
		return stopServing(err)
	}
	if err := sessions.Start(bg); err != nil {
		return stopServing(err)
	}
	defer sessions.Stop()

	tenants := tenant.NewStore(pool)
	// Verified API keys are reused while their tenant's auth stamp in Redis stands still;
	// the store raises it after every revocation (see package auth, WithKeyCache).
	stamps := auth.NewRedisStamps(rdb, "tapline", logger)
	tenants.OnAuthChange(stamps.Publish)
	tokens, err := newTokenService(cfg, tenants)
	if err != nil {
		return stopServing(err)
	}
	e, err := httpapi.New(&httpapi.Config{
		Logger:          logger,
		Pool:            pool,
		Redis:           rdb,
		Tenants:         tenants,
		Auth:            auth.NewAuthenticator(tenants, tokens, auth.WithKeyCache(tenants, stamps)),
		Tokens:          tokens,
		Audit:           auditLog,
		TrustedProxies:  cfg.TrustedProxies,
		RateLimiter:     ratelimit.New(rdb, "tapline"),
		TenantRate:      ratelimit.PerSecond(cfg.Limits.RateLimitPerSecond, cfg.Limits.RateLimitBurst),
		TokenRate:       ratelimit.PerMinute(cfg.Limits.TokenRatePerMinute, max(cfg.Limits.TokenRatePerMinute/2, 1)),
		AuthFailureRate: ratelimit.PerMinute(cfg.Limits.AuthFailurePerMinute, cfg.Limits.AuthFailureBurst),
		Metrics:         providers.MetricsHandler(),
		MetricsToken:    cfg.MetricsToken,
		Spec:            tapline.OpenAPISpec,
		Inspector:       sessions,
		Tracker:         trk,
		Keys:            keys,
		Draining:        draining,
	})
	if err != nil {
		return stopServing(err)
	}
	var h http.Handler = e
	app.Store(&h)
	logger.InfoContext(ctx, "api serving", slog.String("node_id", trk.NodeID()))
	return g.Wait()
}

// serveStarting answers while the api waits for Redis at boot: the process is alive, not
// ready, and every other request gets a 503 problem to retry.
func serveStarting(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	case "/readyz":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"status":"unavailable","checks":{"redis":"unreachable"}}`)
	default:
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"urn:tapline:problem:unavailable","title":"Service unavailable","status":503,"detail":"the api is starting: waiting for Redis"}`)
	}
}

// newTokenService builds the browser-token issuer and verifier: TAPLINE_JWT_KEYS, or keys
// derived from TAPLINE_SECRET_KEY, and the external OIDC issuer when one is configured.
func newTokenService(cfg *config.Config, dir auth.Directory) (*auth.TokenService, error) {
	var keys *auth.JWTKeys
	var err error
	if cfg.JWT.SigningKeys != "" {
		keys, err = auth.ParseJWTKeys(cfg.JWT.SigningKeys)
	} else {
		keys, err = auth.DeriveJWTKeys(cfg.SecretKey)
	}
	if err != nil {
		return nil, err
	}
	var oidc *auth.OIDC
	if cfg.JWT.OIDCIssuer != "" {
		oidc, err = auth.NewOIDC(&auth.OIDCConfig{
			Issuer: cfg.JWT.OIDCIssuer, Audience: cfg.JWT.OIDCAudience, JWKSURL: cfg.JWT.OIDCJWKSURL,
			TenantClaim: cfg.JWT.OIDCTenantClaim,
			// An email without email_verified counts only for the issuer the operator named.
			TrustEmailWithoutVerifiedClaim: cfg.JWT.OIDCEmailVerifiedOptional == cfg.JWT.OIDCIssuer,
		})
		if err != nil {
			return nil, err
		}
	}
	return auth.NewTokenService(dir, &auth.TokenConfig{
		Keys: keys, Issuer: cfg.JWT.Issuer, Audience: cfg.JWT.Audience, TTL: cfg.JWT.TTL, OIDC: oidc,
	})
}

// quota shows a tenant's effective quotas, after applying any flags given.
func quota(ctx context.Context, cfg *config.Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quota", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenantID := fs.String("tenant", "", "tenant id")
	live := fs.Int("max-live-sessions", 0, "live sessions at once, at least 1 (default: TAPLINE_MAX_LIVE_SESSIONS)")
	days := fs.Int("event-retention-days", 0, "days of session history to keep, 0 forever (default: TAPLINE_EVENT_RETENTION_DAYS)")
	reset := fs.Bool("reset", false, "go back to the install's defaults before applying the other flags")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenantID == "" {
		return errors.New("quota needs --tenant ID")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("quota: unexpected arguments %q", fs.Args())
	}
	// A flag counts when given, whatever its value: the store refuses values out of range
	// rather than the command ignoring them.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	pool, err := db.NewPool(ctx, cfg.DatabaseURL, &db.PoolOptions{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	store := tenant.NewStore(pool)
	o := tenant.QuotaOverrides{Reset: *reset}
	if given["max-live-sessions"] {
		o.MaxLiveSessions = live
	}
	if given["event-retention-days"] {
		o.EventRetentionDays = days
	}
	if o.Reset || o.MaxLiveSessions != nil || o.EventRetentionDays != nil {
		if err := store.SetQuotas(ctx, *tenantID, o); err != nil {
			return fmt.Errorf("quota --tenant %s: %w", *tenantID, err)
		}
	}
	q, err := store.Quotas(ctx, *tenantID, tenant.Quotas{
		MaxLiveSessions: cfg.Limits.MaxLiveSessions, EventRetentionDays: cfg.Limits.EventRetentionDays,
	})
	if err != nil {
		return fmt.Errorf("quota --tenant %s: %w", *tenantID, err)
	}
	_, err = fmt.Fprintf(stdout, "max_live_sessions=%d event_retention_days=%d\n", q.MaxLiveSessions, q.EventRetentionDays)
	return err
}
