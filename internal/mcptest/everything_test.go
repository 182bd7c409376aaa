package mcptest

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// everythingTools are tools server-everything 2026.8.31 registers for a client
// that advertises roots, sampling and both elicitation modes. The last five
// are registered only after notifications/initialized, depending on those
// capabilities.
var everythingTools = []string{
	"echo", "get-sum", "get-tiny-image", "get-structured-content", "get-resource-links",
	"trigger-long-running-operation",
	"get-roots-list", "trigger-sampling-request", "trigger-elicitation-request", "trigger-url-elicitation",
}

func TestEverything(t *testing.T) {
	url := Everything(t)
	ctx := testContext(t)
	var mu sync.Mutex
	var progress []float64
	client := mcp.NewClient(testImpl, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Model: "human", Role: "assistant", Content: &mcp.TextContent{Text: "sampled"}}, nil
		},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "decline"}, nil
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, req.Params.Progress)
			mu.Unlock()
		},
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{ListChanged: true},
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
	})
	cs := connect(t, client, url, nil)
	res := cs.InitializeResult()
	t.Logf("server-everything at %s: protocol %s, server %s %s", url, res.ProtocolVersion, res.ServerInfo.Name, res.ServerInfo.Version)
	if res.ProtocolVersion != "2025-11-25" {
		t.Errorf("negotiated %q, want 2025-11-25 (fallback from 2026-07-28)", res.ProtocolVersion)
	}

	// Conditional tools appear once the server has handled initialized.
	var names []string
	eventually(t, "the conditional tools", func() bool {
		tools, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
		}
		return slices.Contains(names, "trigger-sampling-request")
	})
	t.Logf("tools: %s", strings.Join(names, ", "))
	for _, want := range everythingTools {
		if !slices.Contains(names, want) {
			t.Errorf("tool %q missing", want)
		}
	}

	echo, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hello everything"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, echo); got != "Echo: hello everything" {
		t.Errorf("echo = %q", got)
	}

	params := &mcp.CallToolParams{Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 0.2, "steps": 2}}
	params.SetProgressToken("ev-1")
	if _, err := cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	eventually(t, "progress from server-everything", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(progress) == 2
	})

	sampled, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "trigger-sampling-request", Arguments: map[string]any{"prompt": "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(textOf(t, sampled), "sampled") {
		t.Errorf("trigger-sampling-request = %q", textOf(t, sampled))
	}
}
