package mcptest

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// shutdownTimeout bounds Close. A server that takes longer is a bug in this
// package; the test is failed rather than hung.
const shutdownTimeout = 10 * time.Second

// closeSessions closes every live session of server. It must run after the
// handlers' stop context is cancelled: ServerSession.Close waits for
// in-flight handlers.
func closeSessions(server *mcp.Server) {
	for ss := range server.Sessions() {
		_ = ss.Close()
	}
}

// shutdown runs stop, then drops every client connection of ts (hanging SSE
// streams included) and waits for ts to finish, at most shutdownTimeout.
func shutdown(t testing.TB, name string, ts *httptest.Server, stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop()
		ts.CloseClientConnections()
		ts.Close()
	}()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		t.Errorf("mcptest: %s did not shut down within %v", name, shutdownTimeout)
	}
}
