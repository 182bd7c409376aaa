// Package e2e holds Tapline's end-to-end benchmarks, each measured against a baseline taken
// in the same run on the same machine:
//
//   - BenchmarkCallOverhead: a tool call through the REST API (POST …/calls?wait), the Redis
//     command bus, a worker Runtime and PostgreSQL, against a direct go-sdk client calling the
//     same in-process MCP server; batches of both alternate.
//   - BenchmarkLiveSessions: how many live sessions one worker Runtime holds against an MCP
//     server in a separate process, and the worker's heap per session.
//   - BenchmarkSSEFanout: SSE subscribers one api process serves (the api runs in a child
//     process, the clients here), its memory per subscriber, and the publish → receipt
//     latency of broadcast events at every subscriber.
//
// Everything runs on loopback against real PostgreSQL and Redis (TEST_DATABASE_URL,
// TEST_REDIS_URL; deploy/local/test-services.sh starts them). Sizes come from environment
// variables with small defaults, so `go test -bench . -benchtime=1x` is a quick smoke run;
// bench/inspector.sh and bench/run.sh (make bench-inspector, make bench) run them at full
// size. The package has no code outside its tests.
package e2e
