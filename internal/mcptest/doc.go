// Package mcptest runs real MCP servers for tests: in-process go-sdk servers
// served over loopback HTTP, a hostile server that misbehaves on purpose, and
// a private instance of the reference server-everything (Node).
//
// It is a test helper. Only _test.go files import it. Every server binds to
// 127.0.0.1, is stopped by Close or by the test's Cleanup, and leaves no
// goroutine behind.
//
//   - [StatefulServer] speaks the 2025 era (initialize, Mcp-Session-Id,
//     server→client requests, resumable SSE) over Streamable HTTP and the
//     legacy HTTP+SSE transport, and exposes every feature an inspector drives.
//   - [StatelessServer] speaks 2026-07-28: no session, server/discover,
//     multi round-trip requests (input_required) instead of server→client
//     requests, cancellation by closing the request stream.
//   - [HostileServer] answers just enough of Streamable HTTP to be connected
//     to, then sends oversized, malformed, endless or truncated responses.
//   - [Everything] starts @modelcontextprotocol/server-everything through
//     deploy/local/everything.sh.
//
// The [Ledger] embedded in the go-sdk servers records what the server
// received (every JSON-RPC request that arrived over HTTP) and what it ran
// (every tool handler invocation), so chaos tests can compare "what the
// target received" with what Tapline persisted.
package mcptest
