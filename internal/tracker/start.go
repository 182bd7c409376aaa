package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tapline/tapline/internal/redisconn"
)

// StartRetrying builds a tracker with newTracker and starts it, retrying with a growing
// delay (200 ms up to 5 s) while Redis is unreachable, so a process started before Redis is
// up waits for it instead of crash-looping. A tracker starts once, so every attempt builds a
// new one. An error other than Redis being away, or Redis refusing the configured credentials
// (redisconn.IsConfigError), ends the wait at once.
//
// ctx ends the wait. The tracker runs under runCtx, which must outlive the process's stop
// signal: its heartbeat and lease renewals have to go on while the process drains, or its
// leases lapse and other nodes take its sessions before it has handed them over. The
// tracker stops with Stop.
func StartRetrying(ctx, runCtx context.Context, newTracker func() (*Tracker, error), logger *slog.Logger) (*Tracker, error) {
	delay := 200 * time.Millisecond
	for {
		trk, err := newTracker()
		if err != nil {
			return nil, err
		}
		err = trk.Start(runCtx)
		if err == nil {
			return trk, nil
		}
		trk.Stop()
		if !errors.Is(err, ErrUnavailable) || redisconn.IsConfigError(err) {
			return nil, err
		}
		logger.WarnContext(ctx, "waiting for redis: tracker start failed; retrying", slog.Any("error", err), slog.Duration("in", delay))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped while waiting for redis: %w", err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
