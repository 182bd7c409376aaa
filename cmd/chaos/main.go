// Command chaos runs Tapline's failure scenarios against real processes on loopback: two api
// processes behind a round-robin proxy, two workers, Redis, PostgreSQL and an MCP target, with
// tool calls and SSE readers flowing while it kills, pauses and restarts them. It prints, last,
//
//	takeover_ms_p50=A takeover_ms_max=B lost_events=C duplicate_seqs=D duplicate_dispatches=E
//
// and exits 1 when a goal was missed. `make chaos` runs it; `make chaos-short` runs -short.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tapline/tapline/internal/chaos"
)

func main() {
	short := flag.Bool("short", false, "the CI form: every fault once, small traffic")
	cfg := chaos.Config{}
	flag.IntVar(&cfg.WorkerKills, "kills", 0, "SIGKILL rounds of a busy worker (default 5; 2 with -short)")
	flag.IntVar(&cfg.Zombies, "zombies", 0, "SIGSTOP rounds past the lease (default 2; 1 with -short)")
	flag.IntVar(&cfg.Sessions, "sessions", 0, "2025-11-25 sessions (default 4); one 2026-07-28 session is added")
	flag.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "TAPLINE_LEASE_TTL of every process (default 3s)")
	flag.StringVar(&cfg.WorkDir, "dir", "", "keep binaries, data and logs here (default: a temporary directory)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the work directory after a successful run")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	if *short {
		s := chaos.Short()
		s.WorkerKills = max(cfg.WorkerKills, s.WorkerKills*boolInt(cfg.WorkerKills == 0))
		s.Zombies = max(cfg.Zombies, s.Zombies*boolInt(cfg.Zombies == 0))
		if cfg.Sessions > 0 {
			s.Sessions = cfg.Sessions
		}
		s.LeaseTTL, s.WorkDir, s.Keep = cfg.LeaseTTL, cfg.WorkDir, cfg.Keep
		cfg = s
	}
	cfg.Out = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		if rep == nil {
			os.Exit(1)
		}
	}
	fmt.Print(rep.Summary())
	fmt.Println(rep.Line())
	if err != nil || !rep.OK() {
		os.Exit(1)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
