package tracker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Config configures a Tracker. The zero value is usable: New fills in
// defaults, then validates.
type Config struct {
	// Prefix starts every key and channel. Default "tapline:trk". Tests give
	// each run its own prefix. It must not contain '{', '}' or spaces.
	Prefix string
	// NodeName names this process (e.g. the pod name); the node id is NodeName
	// plus a random per-boot incarnation. Default: the host name.
	NodeName string
	// Addr is the internal address other nodes use to reach this one (e.g.
	// "http://10.0.0.7:8081"); Owner returns it. Optional.
	Addr string

	// NodeTTL is how long the node key lives without a heartbeat: a node that
	// stops beating disappears from every listing within NodeTTL. Default 15s.
	NodeTTL time.Duration
	// HeartbeatInterval is how often the node key is refreshed and Redis data
	// loss is checked for. Default NodeTTL/3.
	HeartbeatInterval time.Duration
	// LeaseTTL is the default lease time to live. Leases held by this node are
	// renewed every LeaseTTL/3. Default 15s.
	LeaseTTL time.Duration
	// ClaimTTL is the in-flight claim time to live. Claims held by this node
	// are renewed every ClaimTTL/3 until completed or released. Default 30s.
	ClaimTTL time.Duration
	// ResultTTL is how long a completed claim's result is kept for
	// duplicates. Default 10m.
	ResultTTL time.Duration
	// EpochTTL is how long a lease's epoch counter outlives the lease's last
	// grant or renewal, so counters of finished sessions do not pile up in
	// Redis. After it, epochs restart from the caller's minEpoch. Default 7 days.
	EpochTTL time.Duration
	// ReapInterval is how often the elected reaper looks for dead nodes.
	// Default NodeTTL.
	ReapInterval time.Duration

	// OnNotify receives notifications addressed to this node's listeners, one
	// call per target session, on the subscriber goroutine: keep it short.
	OnNotify func(context.Context, Notification)
	// OnGap is called when this node may have missed notifications (a gap in
	// the sequence, a pub/sub reconnect, or Redis data loss). The receiver
	// should resync whatever the notifications keep fresh.
	OnGap func(context.Context, Gap)
	// OnLeaseLost is called when the renew loop finds a lease taken over or
	// expired. The lease's Done channel is closed before the call.
	OnLeaseLost func(*Lease)

	// Logger receives warnings and rebuild notes. nil discards.
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Prefix == "" {
		out.Prefix = "tapline:trk"
	}
	if out.NodeName == "" {
		h, _ := os.Hostname()
		out.NodeName = sanitizeName(h)
	}
	if out.NodeTTL == 0 {
		out.NodeTTL = 15 * time.Second
	}
	if out.HeartbeatInterval == 0 {
		out.HeartbeatInterval = out.NodeTTL / 3
	}
	if out.LeaseTTL == 0 {
		out.LeaseTTL = 15 * time.Second
	}
	if out.ClaimTTL == 0 {
		out.ClaimTTL = 30 * time.Second
	}
	if out.ResultTTL == 0 {
		out.ResultTTL = 10 * time.Minute
	}
	if out.EpochTTL == 0 {
		out.EpochTTL = 7 * 24 * time.Hour
	}
	if out.ReapInterval == 0 {
		out.ReapInterval = out.NodeTTL
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return out
}

func (c *Config) validate() error {
	if len(c.Prefix) > 64 || strings.ContainsAny(c.Prefix, "{} \t\r\n") {
		return fmt.Errorf("tracker: config: Prefix %q must be at most 64 bytes without braces or spaces", c.Prefix)
	}
	if c.NodeName == "" || len(c.NodeName) > 64 || sanitizeName(c.NodeName) != c.NodeName {
		return fmt.Errorf("tracker: config: NodeName %q must be 1-64 bytes of [A-Za-z0-9._-]", c.NodeName)
	}
	ms := time.Millisecond
	switch {
	case c.NodeTTL < 100*ms || c.LeaseTTL < 100*ms || c.ClaimTTL < 100*ms || c.ResultTTL < 100*ms:
		return fmt.Errorf("tracker: config: TTLs must be at least 100ms")
	case c.EpochTTL < c.LeaseTTL:
		return fmt.Errorf("tracker: config: EpochTTL %v must be at least LeaseTTL %v", c.EpochTTL, c.LeaseTTL)
	case c.HeartbeatInterval <= 0 || c.HeartbeatInterval > c.NodeTTL/2:
		return fmt.Errorf("tracker: config: HeartbeatInterval %v must be in (0, NodeTTL/2]", c.HeartbeatInterval)
	case c.ReapInterval < 10*ms:
		return fmt.Errorf("tracker: config: ReapInterval must be at least 10ms")
	}
	return nil
}

// validNodeID reports whether s can be a node id: what New builds from a
// valid NodeName, read back from Redis by the reaper.
func validNodeID(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// sanitizeName keeps [A-Za-z0-9._-] and replaces anything else with '-'.
func sanitizeName(s string) string {
	if s == "" {
		return "node"
	}
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
