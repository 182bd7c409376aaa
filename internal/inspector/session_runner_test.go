package inspector

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A call whose outcome PostgreSQL refuses even once made storable ends failed, saying why,
// instead of running for ever; its call_result event says the same. The structured content
// holds bytes that are not UTF-8, which json.Marshal copies from a json.RawMessage as they
// are and StorableJSON leaves alone.
func TestUnstorableCallResultIsRecordedAsFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	tenantID, ids := s.tenant(1)
	callID := newID()
	if _, err := s.d.Pool.Exec(ctx, `insert into session_calls (id, tenant_id, session_id, name, status, epoch)
		values ($1, $2, $3, 'unstorable', 'running', 1)`, callID, tenantID, ids[0]); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	rt := &Runtime{store: NewStore(s.d.AppPool), persister: &persister{shards: []*commitShard{s.shard}}, logger: logger}
	s.start()
	r := newSessionRunner(rt, nil, &Session{TenantID: tenantID, ID: ids[0], Epoch: 1})
	defer r.cancel()

	res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "fine"}}, StructuredContent: json.RawMessage("{\"t\":\"a\xffb\"}")}
	r.finishCall(ctx, nil, callID, &mcp.CallToolParams{Name: "unstorable"}, res, nil, "")

	c, err := rt.store.GetCall(ctx, tenantID, ids[0], callID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != CallFailed || !strings.Contains(string(c.Error), "the result could not be stored") {
		t.Fatalf("call %s, error %s; want failed because the result could not be stored", c.Status, c.Error)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		events, err := rt.store.Events(ctx, tenantID, ids[0], EventsParams{})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 1 {
			var ev map[string]any
			_ = json.Unmarshal(events[0].Data, &ev)
			if events[0].Type != EventCallResult || ev["ok"] != false || ev["status"] != string(CallFailed) || ev["result"] != nil {
				t.Fatalf("event %s %s", events[0].Type, events[0].Data)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want the call_result", len(events))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
