package mcptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// callDeadline bounds a call to a hostile endpoint; bulkDeadline bounds one
// that moves tens of MiB. That is not what those modes test, so it is only a
// backstop, well above the 25 s one has taken under the race detector on a
// loaded two-core machine.
const (
	callDeadline = 2 * time.Second
	bulkDeadline = 2 * time.Minute
	// lateLimit is how long past its deadline a call may still be running before the test
	// calls its deadline broken. ModeDrip and ModeHang never end their responses on their
	// own, so a call that ignored its deadline would never return: the limit only has to be
	// finite, and far beyond how late a loaded machine gets round to returning (over 5 s
	// late has been seen in a parallel make test on two cores).
	lateLimit = 30 * time.Second
)

// callHostile connects to mode with transport settings from configure, calls
// the misbehaving tool under callDeadline, and reports the call's result and
// error and whether the session still answers tools/list. It fails the test
// if the call runs lateLimit past its deadline, or if a ModeDrip or ModeHang
// response stays open once the call has returned: a call that gave up on the
// target must also let go of its connection.
func callHostile(t *testing.T, srv *HostileServer, mode HostileMode, configure func(*mcp.StreamableClientTransport)) (res *mcp.CallToolResult, callErr error, survives bool) {
	t.Helper()
	deadline := callDeadline
	switch mode {
	case ModeOversized, ModeOversizedEvent, ModeHugeEvent:
		deadline = bulkDeadline
	}
	ctx := testContext(t)
	transport := &mcp.StreamableClientTransport{Endpoint: srv.URL(mode)}
	if configure != nil {
		configure(transport)
	}
	cs, err := mcp.NewClient(testImpl, nil).Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v", mode, err)
	}

	// The call's parent has no deadline (testContext's would end it after 30 s), so a
	// context.DeadlineExceeded from the call can only be its own deadline's.
	parent, cancelParent := context.WithCancel(t.Context())
	defer cancelParent()
	callCtx, cancel := context.WithTimeout(parent, deadline)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, callErr = cs.CallTool(callCtx, &mcp.CallToolParams{Name: "boom"})
	}()
	select {
	case <-done:
	case <-time.After(deadline + lateLimit):
		t.Errorf("%s: CallTool still running %v past its %v deadline", mode, lateLimit, deadline)
		cancelParent()
		select {
		case <-done:
		case <-time.After(lateLimit):
			// ClientSession.Close would wait for the call: leave the session.
			t.Fatalf("%s: CallTool still running after its context was cancelled", mode)
		}
	}
	defer cs.Close()
	if mode == ModeDrip || mode == ModeHang {
		// These responses never end on their own: once the call gave up, the client must
		// close the request too, or a worker would keep a connection and the goroutine
		// reading it for every call a slow target timed out.
		eventuallyWithin(t, lateLimit, fmt.Sprintf("the %s server to see its tools/call request closed", mode), func() bool {
			return srv.OpenCalls(mode) == 0
		})
	}
	// A session the fault broke answers at once with its error; the generous deadline
	// is for one that survived, on a loaded machine.
	listCtx, cancelList := context.WithTimeout(parent, lateLimit)
	defer cancelList()
	_, err = cs.ListTools(listCtx, nil)
	return res, callErr, err == nil
}

// TestHostileModes pins how go-sdk v1.8.0's Streamable HTTP client reacts to
// each misbehaviour: it always returns (never hangs) under a deadline; some
// faults break the session for good, others are per-call.
func TestHostileModes(t *testing.T) {
	t.Parallel()
	srv := NewHostileServer(t)
	cases := []struct {
		mode     HostileMode
		wantErr  string // "" means the call succeeds
		survives bool
	}{
		// No size limit on a JSON body or an SSE event by default: 5 MiB is read whole.
		{ModeOversized, "", true},
		{ModeOversizedEvent, "", true},
		{ModeGarbage, "failed to decode response", false},
		{ModeNotJSONRPC, "failed to decode response", false},
		{ModeGarbageEvent, "failed to decode event", false},
		{ModeMalformedSSE, "malformed line in SSE stream", false},
		{ModeDrip, context.DeadlineExceeded.Error(), true},
		{ModeHang, context.DeadlineExceeded.Error(), true},
		{ModeStatus500, "Internal Server Error", true},
		{ModeWrongContentType, "unsupported content type", false},
		{ModeCutJSON, "unexpected EOF", false},
		{ModeCutSSE, "request terminated without response", true},
		{ModeHugeEvent, "failed to decode event", false},
		{ModeSessionGone, mcp.ErrSessionMissing.Error(), false},
	}
	for _, c := range cases {
		t.Run(string(c.mode), func(t *testing.T) {
			t.Parallel()
			res, err, survives := callHostile(t, srv, c.mode, nil)
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("CallTool: %v, want success", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("CallTool: %v (result %v), want an error containing %q", err, res != nil, c.wantErr)
			case c.wantErr == context.DeadlineExceeded.Error() && !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("CallTool: %v, want its deadline's context.DeadlineExceeded", err)
			}
			if survives != c.survives {
				t.Errorf("session usable afterwards = %v, want %v (call error %v)", survives, c.survives, err)
			}
			if c.wantErr == "" && err == nil && len(textOf(t, res)) != OversizedBytes {
				t.Errorf("result text is %d bytes, want %d", len(textOf(t, res)), OversizedBytes)
			}
		})
	}
}

// TestHostileHugeEventDefaultIsUnbounded shows that MaxEventSize 0 on
// StreamableClientTransport disables the cap in v1.8.0 (its doc promises
// DefaultMaxEventSize): the client reads all 48 MiB of one event. Setting it
// explicitly stops the read at the cap.
func TestHostileHugeEventDefaultIsUnbounded(t *testing.T) {
	t.Parallel()
	srv := NewHostileServer(t)
	if _, err, _ := callHostile(t, srv, ModeHugeEvent, nil); err == nil {
		t.Fatal("huge event accepted")
	}
	if got := srv.BytesWritten(ModeHugeEvent); got < HugeEventBytes {
		t.Errorf("client stopped reading after %d bytes: v1.8.0 seems to cap events by default now", got)
	}

	capped := NewHostileServer(t)
	_, err, _ := callHostile(t, capped, ModeHugeEvent, func(tr *mcp.StreamableClientTransport) { tr.MaxEventSize = 1 << 20 })
	if err == nil || !strings.Contains(err.Error(), "exceeded 1048576 bytes") {
		t.Errorf("capped client: %v", err)
	}
	// The server counts what it wrote, which runs ahead of what the client read by the
	// socket buffers and by however long the close takes on a loaded machine; the point is
	// that a capped client gives up before the whole event, which the default one reads.
	if got := capped.BytesWritten(ModeHugeEvent); got >= HugeEventBytes {
		t.Errorf("capped client let the whole %d-byte event through", got)
	}
}

// limitBodies is the bound a Tapline worker puts under go-sdk: every response
// body is cut off with an error after limit bytes, whatever its content type.
type limitBodies struct {
	next  http.RoundTripper
	limit int64
}

func (l limitBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: l.limit}
	return resp, nil
}

// errBodyTooLarge is what a read past the limit returns.
var errBodyTooLarge = errors.New("response body exceeds the frame limit")

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

func TestHostileBoundedByRoundTripper(t *testing.T) {
	t.Parallel()
	srv := NewHostileServer(t)
	bounded := func(tr *mcp.StreamableClientTransport) {
		tr.HTTPClient = &http.Client{Transport: limitBodies{next: http.DefaultTransport, limit: 1 << 20}}
	}
	// A JSON body over the limit fails the read and breaks the session.
	if _, err, survives := callHostile(t, srv, ModeOversized, bounded); err == nil || !strings.Contains(err.Error(), errBodyTooLarge.Error()) || survives {
		t.Errorf("oversized JSON: %v, survives %v", err, survives)
	}
	// An SSE body is bounded as a whole: the call ends without a response.
	if _, err, _ := callHostile(t, srv, ModeOversizedEvent, bounded); err == nil {
		t.Error("oversized event accepted through a 1 MiB bound")
	}
}

// TestClientCloseWaitsForCalls shows that ClientSession.Close waits for calls
// in flight: a call without a deadline against a server that never answers
// holds Close until the call's context ends. A worker must cancel its call
// contexts before closing a session.
func TestClientCloseWaitsForCalls(t *testing.T) {
	t.Parallel()
	srv := NewHostileServer(t)
	ctx := testContext(t)
	cs, err := mcp.NewClient(testImpl, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL(ModeHang)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	callCtx, cancelCall := context.WithCancel(ctx)
	callDone := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: "boom"})
		callDone <- err
	}()
	eventually(t, "the call to arrive", func() bool { return srv.ToolCalls(ModeHang) == 1 })

	closed := make(chan error, 1)
	go func() { closed <- cs.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a call was in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancelCall()
	if err := <-callDone; !errors.Is(err, context.Canceled) {
		t.Errorf("call: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still blocked after the call was cancelled")
	}
}

// TestHostileCloseDuringResponses closes the server while every slow mode is
// mid-response: Close must not wait for them, and the clients must get errors.
func TestHostileCloseDuringResponses(t *testing.T) {
	t.Parallel()
	srv := NewHostileServer(t)
	ctx := testContext(t)
	modes := []HostileMode{ModeDrip, ModeHang, ModeHugeEvent}
	errs := make(chan error, len(modes))
	for _, mode := range modes {
		cs, err := mcp.NewClient(testImpl, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL(mode)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		go func() {
			// No deadline of its own: only the server going away ends it.
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "boom"})
			errs <- fmt.Errorf("%s: %w", mode, err)
		}()
		eventually(t, string(mode)+" call", func() bool { return srv.ToolCalls(mode) == 1 })
	}
	start := time.Now()
	srv.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	for range modes {
		select {
		case err := <-errs:
			if errors.Unwrap(err) == nil {
				t.Errorf("%v: call succeeded after the server closed", err)
			}
		case <-ctx.Done():
			t.Fatal("a call hung after the server closed")
		}
	}
}
