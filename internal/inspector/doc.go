// Package inspector is the inspector session model: a target MCP server, a live go-sdk client
// owned by one worker, and the session's durable event log.
//
// The api side (Service) creates and reads sessions, queues tool calls and answers, and
// forwards fast operations (lists, reads, ping…) to the worker that owns the session through
// the command bus (Redis). The worker side (Runtime) claims sessions through fenced tracker
// leases, connects with the go-sdk client through the SSRF guard, taps every frame, and
// persists events in group commits before publishing them live.
//
// Invariants kept here (DESIGN.md §2): an event is published only after it is committed; seqs
// per session are gapless; every write by an owner carries its lease epoch and PostgreSQL
// refuses a stale one; every query is scoped by tenant.
package inspector
