package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func minimal() map[string]string {
	return map[string]string{
		"TAPLINE_DATABASE_URL": "postgres://app@127.0.0.1:5432/tapline",
		"TAPLINE_REDIS_URL":    "redis://127.0.0.1:6379/0",
		"TAPLINE_SECRET_KEY":   "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk=",
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != DefaultHTTPAddr || c.LogLevel != "info" || c.ShutdownTimeout != DefaultShutdownTimeout {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.MigrateDatabaseURL != c.DatabaseURL {
		t.Errorf("MigrateDatabaseURL = %q, want DatabaseURL", c.MigrateDatabaseURL)
	}
	if c.PublicURL != "http://127.0.0.1:8080" {
		t.Errorf("PublicURL = %q", c.PublicURL)
	}
	if c.NodeName == "" || c.InternalAddr != c.HTTPAddr {
		t.Errorf("node defaults: %q %q", c.NodeName, c.InternalAddr)
	}
	if c.AllowPrivateTargets || c.DevMode {
		t.Error("private targets and dev mode must be off by default")
	}
	if c.JWT.OIDCEmailVerifiedOptional != "" {
		t.Errorf("OIDCEmailVerifiedOptional = %q: emails without email_verified must be refused by default", c.JWT.OIDCEmailVerifiedOptional)
	}
	if len(c.TrustedProxies) != 0 || c.Limits.EventRetentionDays != DefaultEventRetention || c.Limits.TokenRatePerMinute != DefaultTokenRatePerMin {
		t.Errorf("proxy, retention or token rate defaults: %v %d %d", c.TrustedProxies, c.Limits.EventRetentionDays, c.Limits.TokenRatePerMinute)
	}
	if c.Limits.AuthFailurePerMinute != DefaultAuthFailPerMin || c.Limits.AuthFailureBurst != DefaultAuthFailBurst {
		t.Errorf("failed authentication limit defaults: %d a minute, bursts of %d", c.Limits.AuthFailurePerMinute, c.Limits.AuthFailureBurst)
	}
}

func TestLoadOverrides(t *testing.T) {
	t.Parallel()
	kv := minimal()
	kv["TAPLINE_HTTP_ADDR"] = "127.0.0.1:9090"
	kv["TAPLINE_ALLOW_PRIVATE_TARGETS"] = "true"
	kv["TAPLINE_ALLOWED_TARGET_CIDRS"] = "10.1.0.0/16, 192.168.1.7"
	kv["TAPLINE_LEASE_TTL"] = "3s"
	kv["TAPLINE_LOG_LEVEL"] = "DEBUG"
	kv["TAPLINE_TRUSTED_PROXIES"] = "10.0.0.0/8"
	kv["TAPLINE_EVENT_RETENTION_DAYS"] = "0"
	kv["TAPLINE_METRICS_TOKEN"] = " scrape-0123456789abcdef "
	kv["TAPLINE_OIDC_ISSUER"] = "https://id.example"
	kv["TAPLINE_OIDC_AUDIENCE"] = "tapline"
	kv["TAPLINE_OIDC_JWKS_URL"] = "https://id.example/jwks"
	kv["TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL"] = "https://id.example"
	c, err := Load(env(kv))
	if err != nil {
		t.Fatal(err)
	}
	if !c.AllowPrivateTargets || c.LeaseTTL != 3*time.Second || c.LogLevel != "debug" {
		t.Errorf("overrides not applied: %+v", c)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.1.7/32")}
	if !slices.Equal(c.AllowedTargetCIDRs, want) {
		t.Errorf("AllowedTargetCIDRs = %v, want %v", c.AllowedTargetCIDRs, want)
	}
	if c.JWT.OIDCEmailVerifiedOptional != "https://id.example" {
		t.Errorf("OIDCEmailVerifiedOptional = %q", c.JWT.OIDCEmailVerifiedOptional)
	}
	if c.MetricsToken != "scrape-0123456789abcdef" {
		t.Errorf("MetricsToken = %q", c.MetricsToken)
	}
	if c.PublicURL != "http://127.0.0.1:9090" {
		t.Errorf("PublicURL = %q", c.PublicURL)
	}
	if !slices.Equal(c.TrustedProxies, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) || c.Limits.EventRetentionDays != 0 {
		t.Errorf("TrustedProxies = %v, EventRetentionDays = %d", c.TrustedProxies, c.Limits.EventRetentionDays)
	}
}

func TestLoadValidationNamesEveryVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  map[string]string
		drop []string
		want []string
	}{
		{"MissingRequired", nil, []string{"TAPLINE_DATABASE_URL", "TAPLINE_REDIS_URL", "TAPLINE_SECRET_KEY"},
			[]string{"TAPLINE_DATABASE_URL", "TAPLINE_REDIS_URL", "TAPLINE_SECRET_KEY"}},
		{"BadDatabaseScheme", map[string]string{"TAPLINE_DATABASE_URL": "mysql://x"}, nil, []string{"TAPLINE_DATABASE_URL"}},
		{"BadRedisScheme", map[string]string{"TAPLINE_REDIS_URL": "memcache://x"}, nil, []string{"TAPLINE_REDIS_URL"}},
		{"BadBool", map[string]string{"TAPLINE_ALLOW_PRIVATE_TARGETS": "yes please"}, nil, []string{"TAPLINE_ALLOW_PRIVATE_TARGETS"}},
		{"BadDuration", map[string]string{"TAPLINE_LEASE_TTL": "ten"}, nil, []string{"TAPLINE_LEASE_TTL"}},
		{"TooShortLease", map[string]string{"TAPLINE_LEASE_TTL": "10ms"}, nil, []string{"TAPLINE_LEASE_TTL"}},
		{"NegativeTimeout", map[string]string{"TAPLINE_SHUTDOWN_TIMEOUT": "-1s"}, nil, []string{"TAPLINE_SHUTDOWN_TIMEOUT"}},
		{"BadAddr", map[string]string{"TAPLINE_HTTP_ADDR": "8080"}, nil, []string{"TAPLINE_HTTP_ADDR"}},
		{"BadLevel", map[string]string{"TAPLINE_LOG_LEVEL": "loud"}, nil, []string{"TAPLINE_LOG_LEVEL"}},
		{"BadCIDR", map[string]string{"TAPLINE_ALLOWED_TARGET_CIDRS": "10.0.0.0/8,nope"}, nil, []string{"TAPLINE_ALLOWED_TARGET_CIDRS"}},
		{"BadInt", map[string]string{"TAPLINE_MAX_LIVE_SESSIONS": "many"}, nil, []string{"TAPLINE_MAX_LIVE_SESSIONS"}},
		{"HalfOIDC", map[string]string{"TAPLINE_OIDC_ISSUER": "https://id.example"}, nil, []string{"TAPLINE_OIDC_ISSUER"}},
		{"EmailVerifiedOptionalWithoutIssuer", map[string]string{"TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL": "https://id.example"}, nil,
			[]string{"TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL"}},
		{"EmailVerifiedOptionalForAnotherIssuer", map[string]string{
			"TAPLINE_OIDC_ISSUER": "https://id.example", "TAPLINE_OIDC_AUDIENCE": "tapline", "TAPLINE_OIDC_JWKS_URL": "https://id.example/jwks",
			"TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL": "https://other.example",
		}, nil, []string{"TAPLINE_OIDC_EMAIL_VERIFIED_OPTIONAL"}},
		{"BadProxy", map[string]string{"TAPLINE_TRUSTED_PROXIES": "lb"}, nil, []string{"TAPLINE_TRUSTED_PROXIES"}},
		{"NegativeRetention", map[string]string{"TAPLINE_EVENT_RETENTION_DAYS": "-1"}, nil, []string{"TAPLINE_EVENT_RETENTION_DAYS"}},
		{"NegativeTokenRate", map[string]string{"TAPLINE_TOKEN_RATE_LIMIT_PER_MINUTE": "-5"}, nil, []string{"TAPLINE_TOKEN_RATE_LIMIT_PER_MINUTE"}},
		{"NegativeAuthFailureRate", map[string]string{"TAPLINE_AUTH_FAILURE_RATE_LIMIT_PER_MINUTE": "-1"}, nil,
			[]string{"TAPLINE_AUTH_FAILURE_RATE_LIMIT_PER_MINUTE"}},
		{"ZeroAuthFailureBurst", map[string]string{"TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST": "0"}, nil, []string{"TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST"}},
		{"BadAuthFailureBurst", map[string]string{"TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST": "twenty"}, nil, []string{"TAPLINE_AUTH_FAILURE_RATE_LIMIT_BURST"}},
		{"ShortMetricsToken", map[string]string{"TAPLINE_METRICS_TOKEN": "short"}, nil, []string{"TAPLINE_METRICS_TOKEN"}},
		{"MetricsTokenWithSpace", map[string]string{"TAPLINE_METRICS_TOKEN": "0123456789 abcdef"}, nil, []string{"TAPLINE_METRICS_TOKEN"}},
		{"BlankRedisURL", map[string]string{"TAPLINE_REDIS_URL": "  "}, nil, []string{"TAPLINE_REDIS_URL"}},
		{"RedisPortNotANumber", map[string]string{"TAPLINE_REDIS_URL": "redis://cache:637g/0"}, nil, []string{"TAPLINE_REDIS_URL"}},
		{"SecretKeyTooShort", map[string]string{"TAPLINE_SECRET_KEY": "c2hvcnQ="}, nil, []string{"TAPLINE_SECRET_KEY"}},
		{"SecretKeyNotBase64", map[string]string{"TAPLINE_SECRET_KEY": "not base64 at all!"}, nil, []string{"TAPLINE_SECRET_KEY"}},
		{"SecretKeyHex", map[string]string{"TAPLINE_SECRET_KEY": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}, nil, []string{"TAPLINE_SECRET_KEY"}},
		{"AddrPortNotANumber", map[string]string{"TAPLINE_HTTP_ADDR": ":http-alt"}, nil, []string{"TAPLINE_HTTP_ADDR"}},
		{"AddrPortTooLarge", map[string]string{"TAPLINE_HTTP_ADDR": ":99999"}, nil, []string{"TAPLINE_HTTP_ADDR"}},
		{"BadInternalAddr", map[string]string{"TAPLINE_INTERNAL_ADDR": "10.0.0.7"}, nil, []string{"TAPLINE_INTERNAL_ADDR"}},
		{"BadOTLPEndpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector:4318"}, nil, []string{"OTEL_EXPORTER_OTLP_ENDPOINT"}},
		{"BadDatabaseParam", map[string]string{"TAPLINE_DATABASE_URL": "postgres://app@db/tapline?sslmode=requried"}, nil, []string{"TAPLINE_DATABASE_URL"}},
		{"BadMigrateDatabaseParam", map[string]string{"TAPLINE_MIGRATE_DATABASE_URL": "postgres://owner@db/tapline?pool_max_conns=ten"}, nil,
			[]string{"TAPLINE_MIGRATE_DATABASE_URL"}},
		{"NodeNameWithSpace", map[string]string{"TAPLINE_NODE_NAME": "worker one"}, nil, []string{"TAPLINE_NODE_NAME"}},
		{"NodeNameTooLong", map[string]string{"TAPLINE_NODE_NAME": strings.Repeat("n", 61)}, nil, []string{"TAPLINE_NODE_NAME"}},
		{"TwoProblemsAtOnce", map[string]string{"TAPLINE_LEASE_TTL": "x", "TAPLINE_HTTP_ADDR": "y"}, nil,
			[]string{"TAPLINE_HTTP_ADDR", "TAPLINE_LEASE_TTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			kv := minimal()
			for k, v := range tt.set {
				kv[k] = v
			}
			for _, k := range tt.drop {
				delete(kv, k)
			}
			_, err := Load(env(kv))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Load error = %v, want *ValidationError", err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.Var)
			}
			slices.Sort(got)
			got = slices.Compact(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems name %v, want %v (%v)", got, tt.want, err)
			}
		})
	}
}

func TestParseRedisURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    RedisConfig
		wantErr bool
	}{
		{in: "redis://127.0.0.1:6379/2", want: RedisConfig{Addrs: []string{"127.0.0.1:6379"}, DB: 2}},
		{in: "redis://localhost", want: RedisConfig{Addrs: []string{"localhost:6379"}}},
		{in: "rediss://u:p%40ss@cache:6380", want: RedisConfig{Addrs: []string{"cache:6380"}, Username: "u", Password: "p@ss", TLS: true}},
		{in: "redis://:secret@h:1/0", want: RedisConfig{Addrs: []string{"h:1"}, Password: "secret"}},
		{in: "redis+sentinel://s1,s2:26380/mymaster/3", want: RedisConfig{Addrs: []string{"s1:26379", "s2:26380"}, MasterName: "mymaster", DB: 3}},
		{in: "redis+cluster://a:7000,b:7001,c:7002", want: RedisConfig{Addrs: []string{"a:7000", "b:7001", "c:7002"}, Cluster: true}},
		{in: "redis+sentinel://s1", wantErr: true},
		{in: "redis+cluster://a:1/0", wantErr: true},
		{in: "redis://a:1,b:2", wantErr: true},
		{in: "redis://h/x", wantErr: true},
		{in: "redis://", wantErr: true},
		{in: "127.0.0.1:6379", wantErr: true},
		{in: "redis://[::1]:6380/1", want: RedisConfig{Addrs: []string{"[::1]:6380"}, DB: 1}},
		{in: "redis://cache:abc/0", wantErr: true},
		{in: "redis://cache:0", wantErr: true},
		{in: "redis://cache:70000", wantErr: true},
		{in: "redis://:6379/0", wantErr: true},
		{in: "redis+cluster://a:7000,b:7o01", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseRedisURL(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseRedisURL(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && !equalRedis(got, tt.want) {
			t.Errorf("ParseRedisURL(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func equalRedis(a, b RedisConfig) bool {
	return slices.Equal(a.Addrs, b.Addrs) && a.MasterName == b.MasterName && a.Cluster == b.Cluster &&
		a.Username == b.Username && a.Password == b.Password && a.DB == b.DB && a.TLS == b.TLS
}

// Problems with a secret name its variable and position, never its content: the message
// ends up in logs and in a crash-looping pod's status.
func TestLoadValidationKeepsSecretsOut(t *testing.T) {
	t.Parallel()
	kv := minimal()
	kv["TAPLINE_SECRET_KEY"] = "k1:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk=,k2:TOPSECRETVALUE"
	kv["TAPLINE_DATABASE_URL"] = "postgres://app:hunter2pass@db/tapline?sslmode=bogus"
	kv["TAPLINE_REDIS_URL"] = "redis://:redispass99@cache:63a9/0"
	_, err := Load(env(kv))
	if err == nil {
		t.Fatal("Load accepted a bad keyring, database URL and Redis URL")
	}
	for _, secret := range []string{"TOPSECRETVALUE", "hunter2pass", "redispass99"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a secret %q: %v", secret, err)
		}
	}
	for _, name := range []string{"TAPLINE_SECRET_KEY", "TAPLINE_DATABASE_URL", "TAPLINE_REDIS_URL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("the error does not name %s: %v", name, err)
		}
	}
}
