// Package config turns the process environment into typed, validated configuration for
// cmd/api and cmd/worker.
//
// It is the only package that reads environment variables, and it reads them only through the
// getenv function its caller injects, so tests never touch the real environment. Load applies
// defaults first, then validates; every problem is reported at once, each naming its variable.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tapline/tapline/internal/secretbox"
)

// Defaults for optional settings.
const (
	DefaultHTTPAddr         = ":8080"
	DefaultLogLevel         = "info"
	DefaultShutdownTimeout  = 20 * time.Second
	DefaultNodeTTL          = 10 * time.Second
	DefaultLeaseTTL         = 10 * time.Second
	DefaultJWTIssuer        = "tapline"
	DefaultJWTAudience      = "tapline-api"
	DefaultJWTTTL           = 15 * time.Minute
	DefaultIdleSessionClose = 30 * time.Minute
	DefaultPendingTimeout   = 10 * time.Minute
	DefaultMaxLiveSessions  = 50
	DefaultRateLimitPerSec  = 50
	DefaultRateLimitBurst   = 100
	DefaultCommandTimeout   = 15 * time.Second
	DefaultEventRetention   = 30
	DefaultTokenRatePerMin  = 20
	DefaultAuthFailPerMin   = 60
	DefaultAuthFailBurst    = 20
)

// minMetricsToken is the shortest TAPLINE_METRICS_TOKEN accepted: it guards /metrics from
// anyone who can reach the port, so it must not be guessable.
const minMetricsToken = 16

// maxNodeName is the longest TAPLINE_NODE_NAME: the tracker's 64 bytes less the api's "api-".
const maxNodeName = 60

// Config is the configuration shared by every Tapline process.
type Config struct {
	// HTTPAddr is where the api listens (TAPLINE_HTTP_ADDR). Defaults to ":8080".
	HTTPAddr string
	// PublicURL is the externally visible base URL of the api (TAPLINE_PUBLIC_URL), used in
	// printed links. Defaults to "http://" + HTTPAddr with an empty host read as 127.0.0.1.
	PublicURL string
	// DatabaseURL is the PostgreSQL connection string the application uses
	// (TAPLINE_DATABASE_URL). Required.
	DatabaseURL string
	// MigrateDatabaseURL is the connection string migrations run with, normally the owner of
	// the tables (TAPLINE_MIGRATE_DATABASE_URL). Defaults to DatabaseURL.
	MigrateDatabaseURL string
	// Redis describes how to reach Redis (TAPLINE_REDIS_URL): a single node, Sentinel or
	// Cluster. Required.
	Redis RedisConfig
	// SecretKey is the keyring that encrypts stored target secrets (TAPLINE_SECRET_KEY): a
	// base64 32-byte key, or a comma-separated list "kid:base64key,…" whose first entry
	// encrypts. Required. Parsed by package secretbox.
	SecretKey string
	// AllowPrivateTargets lets sessions connect to private addresses (RFC 1918, fc00::/7,
	// 100.64.0.0/10, local-use NAT64) (TAPLINE_ALLOW_PRIVATE_TARGETS). Defaults to false.
	// Link-local and cloud metadata addresses stay refused unless listed in
	// AllowedTargetCIDRs.
	AllowPrivateTargets bool
	// AllowedTargetCIDRs are address ranges sessions may reach even though the SSRF guard would
	// refuse them (TAPLINE_ALLOWED_TARGET_CIDRS, comma-separated).
	AllowedTargetCIDRs []netip.Prefix
	// DevMode relaxes settings for a developer's machine (TAPLINE_DEV): loopback MCP targets
	// are allowed. Defaults to false.
	DevMode bool
	// LogLevel is debug, info, warn or error (TAPLINE_LOG_LEVEL). Defaults to "info".
	LogLevel string
	// NodeName names this process in the tracker (TAPLINE_NODE_NAME). Defaults to the host
	// name.
	NodeName string
	// InternalAddr is the address other nodes may use to reach this one
	// (TAPLINE_INTERNAL_ADDR). Defaults to HTTPAddr.
	InternalAddr string
	// ShutdownTimeout bounds graceful shutdown (TAPLINE_SHUTDOWN_TIMEOUT). Defaults to 20s.
	ShutdownTimeout time.Duration
	// NodeTTL is how long a node counts as alive after its last heartbeat
	// (TAPLINE_NODE_TTL). Defaults to 10s; heartbeats run every third of it.
	NodeTTL time.Duration
	// LeaseTTL is how long a worker owns a session without renewing (TAPLINE_LEASE_TTL).
	// Defaults to 10s. Takeover after a worker dies happens within about this time.
	LeaseTTL time.Duration
	// OTLPEndpoint enables OTLP trace export when set (OTEL_EXPORTER_OTLP_ENDPOINT).
	OTLPEndpoint string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For header names the client
	// (TAPLINE_TRUSTED_PROXIES, comma-separated CIDRs). Empty: the peer address is the
	// client, which is right when nothing sits in front or the proxy keeps the peer address.
	TrustedProxies []netip.Prefix
	// MetricsToken, when set, is the bearer token GET /metrics requires on the api and the
	// worker (TAPLINE_METRICS_TOKEN); at least 16 characters, no spaces. Empty: /metrics is
	// open, and should be denied at the edge.
	MetricsToken string
	// JWT configures the short-lived browser tokens issued by POST /v1/auth/token.
	JWT JWTConfig
	// Limits holds per-tenant limits and session timeouts.
	Limits LimitsConfig
}

// JWTConfig configures the JWTs Tapline issues and verifies.
type JWTConfig struct {
	// Issuer is the iss claim (TAPLINE_JWT_ISSUER). Defaults to "tapline".
	Issuer string
	// Audience is the aud claim (TAPLINE_JWT_AUDIENCE). Defaults to "tapline-api".
	Audience string
	// SigningKeys is the Ed25519 keyring for tokens (TAPLINE_JWT_KEYS): "kid:base64seed,…",
	// first one signs. Defaults to a key derived from SecretKey, so a single secret is enough
	// for small installs.
	SigningKeys string
	// TTL is how long an issued token lives (TAPLINE_JWT_TTL). Defaults to 15m.
	TTL time.Duration
	// OIDCIssuer, OIDCAudience and OIDCJWKSURL enable external OIDC tokens
	// (TAPLINE_OIDC_ISSUER, TAPLINE_OIDC_AUDIENCE, TAPLINE_OIDC_JWKS_URL). All or none.
	OIDCIssuer   string
	OIDCAudience string
	OIDCJWKSURL  string
	// OIDCTenantClaim names the claim holding the tenant id (TAPLINE_OIDC_TENANT_CLAIM).
	// Defaults to "tapline_tenant".
	OIDCTenantClaim string
	// OIDCEmailVerifiedOptional names the issuer, which must be OIDCIssuer, whose tokens may
	// identify their user by an email that comes without an email_verified claim
	// (TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL), for issuers that verify every address and never
	// send the claim. Empty, the default: only an email_verified of true lets an email
	// identify anyone. Naming the issuer, rather than switching the check off, keeps the
	// trust from passing to another issuer configured later.
	OIDCEmailVerifiedOptional string
}

// LimitsConfig holds per-tenant limits and timeouts.
type LimitsConfig struct {
	// MaxLiveSessions caps live sessions per tenant (TAPLINE_MAX_LIVE_SESSIONS). Defaults to 50.
	MaxLiveSessions int
	// IdleSessionClose closes a session nobody used for this long
	// (TAPLINE_IDLE_SESSION_CLOSE). Defaults to 30m; 0 disables.
	IdleSessionClose time.Duration
	// PendingTimeout expires a parked sampling or elicitation request nobody answered
	// (TAPLINE_PENDING_TIMEOUT). Defaults to 10m.
	PendingTimeout time.Duration
	// CommandTimeout bounds synchronous api → worker commands (TAPLINE_COMMAND_TIMEOUT).
	// Defaults to 15s; past it the api answers 504.
	CommandTimeout time.Duration
	// RateLimitPerSecond and RateLimitBurst shape the per-tenant API rate limit
	// (TAPLINE_RATE_LIMIT_PER_SECOND, TAPLINE_RATE_LIMIT_BURST). Defaults to 50 and 100;
	// a rate of 0 disables limiting.
	RateLimitPerSecond int
	RateLimitBurst     int
	// TokenRatePerMinute limits POST /v1/auth/token per client address
	// (TAPLINE_TOKEN_RATE_LIMIT_PER_MINUTE). Defaults to 20; 0 disables.
	TokenRatePerMinute int
	// AuthFailurePerMinute and AuthFailureBurst limit failed authentications (a bearer
	// token that is no valid API key or JWT) per client address
	// (TAPLINE_AUTH_FAILURE_RATE_LIMIT_PER_MINUTE, TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST).
	// Defaults to 60 and 20; a rate of 0 disables.
	AuthFailurePerMinute int
	AuthFailureBurst     int
	// EventRetentionDays is how long session history is kept unless a tenant has its own
	// setting (TAPLINE_EVENT_RETENTION_DAYS). Defaults to 30; 0 keeps it forever.
	EventRetentionDays int
}

// RedisConfig describes a Redis deployment. Exactly one of the shapes applies: Addrs with one
// address and no MasterName is a single node, MasterName selects Sentinel (Addrs are the
// sentinels), Cluster selects Redis Cluster (Addrs are seeds).
type RedisConfig struct {
	Addrs      []string
	MasterName string
	Cluster    bool
	Username   string
	Password   string
	DB         int
	TLS        bool
}

// ValidationError lists every configuration problem found.
type ValidationError struct {
	Problems []FieldError
}

// FieldError is one configuration problem, named by its environment variable.
type FieldError struct {
	Var    string
	Reason string
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Var + ": " + p.Reason
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

// Load reads the configuration through getenv (os.Getenv in main), applies defaults and
// validates. The error, if any, is a *ValidationError naming every bad variable.
func Load(getenv func(string) string) (*Config, error) {
	l := loader{getenv: getenv}
	c := &Config{
		HTTPAddr:            cmp.Or(l.str("TAPLINE_HTTP_ADDR"), DefaultHTTPAddr),
		PublicURL:           l.str("TAPLINE_PUBLIC_URL"),
		DatabaseURL:         l.str("TAPLINE_DATABASE_URL"),
		MigrateDatabaseURL:  l.str("TAPLINE_MIGRATE_DATABASE_URL"),
		SecretKey:           l.str("TAPLINE_SECRET_KEY"),
		AllowPrivateTargets: l.boolean("TAPLINE_ALLOW_PRIVATE_TARGETS"),
		AllowedTargetCIDRs:  l.prefixes("TAPLINE_ALLOWED_TARGET_CIDRS"),
		DevMode:             l.boolean("TAPLINE_DEV"),
		LogLevel:            strings.ToLower(cmp.Or(l.str("TAPLINE_LOG_LEVEL"), DefaultLogLevel)),
		NodeName:            l.str("TAPLINE_NODE_NAME"),
		InternalAddr:        l.str("TAPLINE_INTERNAL_ADDR"),
		ShutdownTimeout:     l.duration("TAPLINE_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout),
		NodeTTL:             l.duration("TAPLINE_NODE_TTL", DefaultNodeTTL),
		LeaseTTL:            l.duration("TAPLINE_LEASE_TTL", DefaultLeaseTTL),
		OTLPEndpoint:        l.str("OTEL_EXPORTER_OTLP_ENDPOINT"),
		TrustedProxies:      l.prefixes("TAPLINE_TRUSTED_PROXIES"),
		MetricsToken:        l.str("TAPLINE_METRICS_TOKEN"),
		JWT: JWTConfig{
			Issuer:                    cmp.Or(l.str("TAPLINE_JWT_ISSUER"), DefaultJWTIssuer),
			Audience:                  cmp.Or(l.str("TAPLINE_JWT_AUDIENCE"), DefaultJWTAudience),
			SigningKeys:               l.str("TAPLINE_JWT_KEYS"),
			TTL:                       l.duration("TAPLINE_JWT_TTL", DefaultJWTTTL),
			OIDCIssuer:                l.str("TAPLINE_OIDC_ISSUER"),
			OIDCAudience:              l.str("TAPLINE_OIDC_AUDIENCE"),
			OIDCJWKSURL:               l.str("TAPLINE_OIDC_JWKS_URL"),
			OIDCTenantClaim:           cmp.Or(l.str("TAPLINE_OIDC_TENANT_CLAIM"), "tapline_tenant"),
			OIDCEmailVerifiedOptional: l.str("TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL"),
		},
		Limits: LimitsConfig{
			MaxLiveSessions:      l.integer("TAPLINE_MAX_LIVE_SESSIONS", DefaultMaxLiveSessions),
			IdleSessionClose:     l.duration("TAPLINE_IDLE_SESSION_CLOSE", DefaultIdleSessionClose),
			PendingTimeout:       l.duration("TAPLINE_PENDING_TIMEOUT", DefaultPendingTimeout),
			CommandTimeout:       l.duration("TAPLINE_COMMAND_TIMEOUT", DefaultCommandTimeout),
			RateLimitPerSecond:   l.integer("TAPLINE_RATE_LIMIT_PER_SECOND", DefaultRateLimitPerSec),
			RateLimitBurst:       l.integer("TAPLINE_RATE_LIMIT_BURST", DefaultRateLimitBurst),
			TokenRatePerMinute:   l.integer("TAPLINE_TOKEN_RATE_LIMIT_PER_MINUTE", DefaultTokenRatePerMin),
			AuthFailurePerMinute: l.integer("TAPLINE_AUTH_FAILURE_RATE_LIMIT_PER_MINUTE", DefaultAuthFailPerMin),
			AuthFailureBurst:     l.integer("TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST", DefaultAuthFailBurst),
			EventRetentionDays:   l.integer("TAPLINE_EVENT_RETENTION_DAYS", DefaultEventRetention),
		},
	}
	if raw := l.str("TAPLINE_REDIS_URL"); raw == "" {
		l.fail("TAPLINE_REDIS_URL", "required")
	} else {
		rc, err := ParseRedisURL(raw)
		if err != nil {
			l.fail("TAPLINE_REDIS_URL", err.Error())
		}
		c.Redis = rc
	}
	c.MigrateDatabaseURL = cmp.Or(c.MigrateDatabaseURL, c.DatabaseURL)
	if c.NodeName == "" {
		host, _ := os.Hostname()
		c.NodeName = cmp.Or(host, "tapline")
		if !validNodeName(c.NodeName) {
			l.fail("TAPLINE_NODE_NAME", fmt.Sprintf("not set, and the host name %q is not %d characters or fewer from [A-Za-z0-9._-]: set it", c.NodeName, maxNodeName))
		}
	} else if !validNodeName(c.NodeName) {
		l.fail("TAPLINE_NODE_NAME", fmt.Sprintf("want 1 to %d characters from [A-Za-z0-9._-]", maxNodeName))
	}
	c.InternalAddr = cmp.Or(c.InternalAddr, c.HTTPAddr)
	if c.PublicURL == "" {
		host, port, err := net.SplitHostPort(c.HTTPAddr)
		if err == nil && validListenAddr(c.HTTPAddr) {
			c.PublicURL = "http://" + net.JoinHostPort(cmp.Or(host, "127.0.0.1"), port)
		}
	}
	c.validate(&l)
	if len(l.problems) > 0 {
		return nil, &ValidationError{Problems: l.problems}
	}
	return c, nil
}

func (c *Config) validate(l *loader) {
	if c.DatabaseURL == "" {
		l.fail("TAPLINE_DATABASE_URL", "required")
	} else if err := checkPostgresURL(c.DatabaseURL); err != nil {
		l.fail("TAPLINE_DATABASE_URL", err.Error())
	}
	if c.MigrateDatabaseURL != c.DatabaseURL {
		if err := checkPostgresURL(c.MigrateDatabaseURL); err != nil {
			l.fail("TAPLINE_MIGRATE_DATABASE_URL", err.Error())
		}
	}
	if c.SecretKey == "" {
		l.fail("TAPLINE_SECRET_KEY", "required")
	} else if _, err := secretbox.ParseKeyring(c.SecretKey); err != nil {
		// The keyring's errors name entries by position, never by content.
		l.fail("TAPLINE_SECRET_KEY", err.Error())
	}
	if !validListenAddr(c.HTTPAddr) {
		l.fail("TAPLINE_HTTP_ADDR", "want host:port with a port from 0 to 65535, e.g. :8080 or 127.0.0.1:8080")
	}
	if c.InternalAddr != c.HTTPAddr && !validListenAddr(c.InternalAddr) {
		l.fail("TAPLINE_INTERNAL_ADDR", "want host:port, e.g. 10.0.0.7:8080")
	}
	if c.OTLPEndpoint != "" {
		if u, err := url.Parse(c.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.fail("OTEL_EXPORTER_OTLP_ENDPOINT", "want an absolute http(s) URL, e.g. http://otel-collector:4318")
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		l.fail("TAPLINE_LOG_LEVEL", "want debug, info, warn or error")
	}
	if c.MetricsToken != "" && (len(c.MetricsToken) < minMetricsToken || strings.ContainsFunc(c.MetricsToken, unicode.IsSpace)) {
		l.fail("TAPLINE_METRICS_TOKEN", fmt.Sprintf("want at least %d characters and no spaces", minMetricsToken))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.fail("TAPLINE_PUBLIC_URL", "want an absolute http(s) URL")
		}
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"TAPLINE_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"TAPLINE_NODE_TTL", c.NodeTTL},
		{"TAPLINE_LEASE_TTL", c.LeaseTTL},
		{"TAPLINE_JWT_TTL", c.JWT.TTL},
		{"TAPLINE_PENDING_TIMEOUT", c.Limits.PendingTimeout},
		{"TAPLINE_COMMAND_TIMEOUT", c.Limits.CommandTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			l.fail(p.name, "must be positive")
		}
	}
	if c.NodeTTL > 0 && c.NodeTTL < time.Second {
		l.fail("TAPLINE_NODE_TTL", "must be at least 1s")
	}
	if c.LeaseTTL > 0 && c.LeaseTTL < time.Second {
		l.fail("TAPLINE_LEASE_TTL", "must be at least 1s")
	}
	if c.Limits.IdleSessionClose < 0 {
		l.fail("TAPLINE_IDLE_SESSION_CLOSE", "must not be negative")
	}
	if c.Limits.MaxLiveSessions < 1 {
		l.fail("TAPLINE_MAX_LIVE_SESSIONS", "must be at least 1")
	}
	if c.Limits.RateLimitPerSecond < 0 {
		l.fail("TAPLINE_RATE_LIMIT_PER_SECOND", "must not be negative")
	}
	if c.Limits.RateLimitBurst < 1 {
		l.fail("TAPLINE_RATE_LIMIT_BURST", "must be at least 1")
	}
	if c.Limits.TokenRatePerMinute < 0 {
		l.fail("TAPLINE_TOKEN_RATE_LIMIT_PER_MINUTE", "must not be negative")
	}
	if c.Limits.AuthFailurePerMinute < 0 {
		l.fail("TAPLINE_AUTH_FAILURE_RATE_LIMIT_PER_MINUTE", "must not be negative")
	}
	if c.Limits.AuthFailureBurst < 1 {
		l.fail("TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST", "must be at least 1")
	}
	if c.Limits.EventRetentionDays < 0 || c.Limits.EventRetentionDays > 36500 {
		l.fail("TAPLINE_EVENT_RETENTION_DAYS", "must be 0 (keep forever) to 36500")
	}
	oidc := []string{c.JWT.OIDCIssuer, c.JWT.OIDCAudience, c.JWT.OIDCJWKSURL}
	set := 0
	for _, v := range oidc {
		if v != "" {
			set++
		}
	}
	if set != 0 && set != len(oidc) {
		l.fail("TAPLINE_OIDC_ISSUER", "TAPLINE_OIDC_ISSUER, TAPLINE_OIDC_AUDIENCE and TAPLINE_OIDC_JWKS_URL go together")
	}
	if c.JWT.OIDCJWKSURL != "" {
		if u, err := url.Parse(c.JWT.OIDCJWKSURL); err != nil || u.Scheme != "https" && !(c.DevMode && u.Scheme == "http") {
			l.fail("TAPLINE_OIDC_JWKS_URL", "want an https URL")
		}
	}
	if c.JWT.OIDCEmailVerifiedOptional != "" && c.JWT.OIDCEmailVerifiedOptional != c.JWT.OIDCIssuer {
		l.fail("TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL", "want the issuer TAPLINE_OIDC_ISSUER names, exactly as it is written there")
	}
}

func checkPostgresURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("want a postgres:// URL")
	}
	// The pool's own parser checks the parameters (sslmode, pool_max_conns, ...) now rather
	// than at the first connection. Its errors show the URL with the password redacted.
	if _, err := pgxpool.ParseConfig(raw); err != nil {
		return err
	}
	return nil
}

// validNodeName reports whether name can name a tracker node: the tracker takes 64 bytes of
// [A-Za-z0-9._-], and the api puts "api-" in front.
func validNodeName(name string) bool {
	if name == "" || len(name) > maxNodeName {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// validListenAddr reports whether addr is host:port with a numeric port (0 picks one).
func validListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && validPort(port, true)
}

func validPort(port string, zeroOK bool) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n <= 65535 && (n > 0 || zeroOK && n == 0) && port[0] != '+' && port[0] != '-'
}

// ParseRedisURL understands four shapes:
//
//	redis://[user:pass@]host:port[/db]            a single node (rediss:// for TLS)
//	redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db]
//	redis+cluster://[user:pass@]h1:p1,h2:p2       (rediss+cluster:// for TLS)
//
// Hosts without a port get 6379 (26379 for sentinels).
func ParseRedisURL(raw string) (RedisConfig, error) {
	var rc RedisConfig
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return rc, errors.New("want redis://, rediss://, redis+sentinel:// or redis+cluster://")
	}
	defaultPort := "6379"
	switch scheme {
	case "redis":
	case "rediss":
		rc.TLS = true
	case "redis+sentinel", "rediss+sentinel":
		rc.TLS = scheme == "rediss+sentinel"
		defaultPort = "26379"
	case "redis+cluster", "rediss+cluster":
		rc.TLS = scheme == "rediss+cluster"
		rc.Cluster = true
	default:
		return rc, fmt.Errorf("unknown scheme %q", scheme)
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	hostPart, path, _ := strings.Cut(rest, "/")
	if at := strings.LastIndex(hostPart, "@"); at >= 0 {
		userinfo := hostPart[:at]
		hostPart = hostPart[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if rc.Username, err = url.PathUnescape(user); err != nil {
			return rc, errors.New("bad user name escape")
		}
		if hasPass {
			if rc.Password, err = url.PathUnescape(pass); err != nil {
				return rc, errors.New("bad password escape")
			}
		}
	}
	for h := range strings.SplitSeq(hostPart, ",") {
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = strings.Trim(h, "[]"), defaultPort
		}
		if host == "" || strings.ContainsAny(host, "[]") {
			return rc, fmt.Errorf("host %d: want host or host:port", len(rc.Addrs)+1)
		}
		if !validPort(port, false) {
			return rc, fmt.Errorf("host %d: port must be a number from 1 to 65535", len(rc.Addrs)+1)
		}
		rc.Addrs = append(rc.Addrs, net.JoinHostPort(host, port))
	}
	if len(rc.Addrs) == 0 {
		return rc, errors.New("no host")
	}
	segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	if strings.Contains(scheme, "sentinel") {
		if len(segs) == 0 {
			return rc, errors.New("sentinel URL needs the master name as its path")
		}
		rc.MasterName, segs = segs[0], segs[1:]
	}
	if len(segs) > 0 {
		if rc.Cluster {
			return rc, errors.New("Redis Cluster has no database index")
		}
		db, err := strconv.Atoi(segs[0])
		if err != nil || db < 0 || len(segs) > 1 {
			return rc, errors.New("database index must be a non-negative integer")
		}
		rc.DB = db
	}
	if !rc.Cluster && rc.MasterName == "" && len(rc.Addrs) > 1 {
		return rc, errors.New("several hosts need redis+cluster:// or redis+sentinel://")
	}
	return rc, nil
}

type loader struct {
	getenv   func(string) string
	problems []FieldError
}

func (l *loader) fail(name, reason string) {
	l.problems = append(l.problems, FieldError{Var: name, Reason: reason})
}

func (l *loader) str(name string) string { return strings.TrimSpace(l.getenv(name)) }

func (l *loader) boolean(name string) bool {
	v := l.str(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.fail(name, "want true or false")
	}
	return b
}

func (l *loader) integer(name string, def int) int {
	v := l.str(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		l.fail(name, "want an integer")
		return def
	}
	return n
}

func (l *loader) duration(name string, def time.Duration) time.Duration {
	v := l.str(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.fail(name, "want a duration such as 10s or 5m")
		return def
	}
	return d
}

func (l *loader) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for f := range strings.SplitSeq(l.str(name), ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			addr, aerr := netip.ParseAddr(f)
			if aerr != nil {
				l.fail(name, fmt.Sprintf("%q is not a CIDR prefix or address", f))
				continue
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}
