// Package chaos runs Tapline's failure model (DESIGN.md §6) against real processes on
// loopback and checks it by accounting, not by eye.
//
// A run builds cmd/api and cmd/worker, starts PostgreSQL (through deploy/local/lib.sh) and a
// redis-server on free ports with data in a temporary directory, two api processes behind a
// round-robin reverse proxy, two worker processes, and an in-process MCP target (a go-sdk
// server speaking 2025-11-25 and 2026-07-28) whose Ledger records every tool run by a unique
// key. Tool calls go through the proxy with their key as Idempotency-Key, SSE readers follow
// every session through the proxy and resume with Last-Event-ID, and the runner injects, each
// a bounded number of times:
//
//   - SIGKILL of the worker holding a call in flight (takeover after the lease lapses);
//   - SIGTERM of a busy worker (drain: hand-over at once, bounded exit);
//   - SIGSTOP of a busy worker past its lease, then SIGCONT (the zombie must write nothing);
//   - Redis killed and restarted empty (503 meanwhile, never 500; leases re-asserted);
//   - SIGKILL of an api process with SSE readers attached, then a restart;
//   - a storm of identical POSTs with one Idempotency-Key on both api processes;
//   - PostgreSQL stopped and started (503 with Retry-After; nothing lost or duplicated).
//
// At the end it compares what the target ran, what PostgreSQL holds and what the readers saw
// (see run.account) and reports lost events, duplicate seqs and duplicate dispatches.
// cmd/chaos is the command line (make chaos, make chaos-short); TestChaosShort runs the short
// form in make test.
package chaos
