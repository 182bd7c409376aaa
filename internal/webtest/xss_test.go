package webtest

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Payloads a hostile MCP server sends. Each one, if it ever ran, would set window.__xss.
const (
	imgPayload  = `<img src=x onerror="window.__xss='img'">`
	linkPayload = `[click me](javascript:window.__xss='link') javascript:window.__xss='bare'`
	svgPayload  = `<svg xmlns="http://www.w3.org/2000/svg" onload="window.__xss='svg'"><script>window.__xss='svg-script'</script></svg>`
)

// tinyPNG is a 1×1 PNG: an allowed image that must be shown.
var tinyPNG, _ = base64.StdEncoding.DecodeString("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkaPhfDwAEgQG0bbZC7QAAAABJRU5ErkJggg==")

// hostileServer is a go-sdk MCP server whose every string is an attack: its name, title,
// website and instructions, a tool's title, description, icons and result (text, an SVG
// "image", a real PNG, resource links, an embedded HTML resource, structured content), and
// an elicitation whose message and form labels are markup.
func hostileServer(t *testing.T) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{
		Name: "evil" + imgPayload, Title: "Evil " + imgPayload, Version: "6.6.6",
		WebsiteURL: "javascript:window.__xss='site'", Description: imgPayload,
		Icons: []mcp.Icon{{Source: "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(svgPayload)), MIMEType: "image/svg+xml"}},
	}, &mcp.ServerOptions{
		Instructions:              "Read me: " + imgPayload + "\n" + linkPayload + "\nDocs: https://example.com/docs",
		SupportedProtocolVersions: []string{"2025-11-25", "2025-06-18"},
	})
	type noArgs struct{}
	type out struct {
		HTML string `json:"html"`
	}
	mcp.AddTool(server, &mcp.Tool{
		Name: "probe", Title: "Probe " + imgPayload, Description: "Says hello. " + imgPayload + " " + linkPayload,
		Annotations: &mcp.ToolAnnotations{Title: imgPayload},
		Icons: []mcp.Icon{
			{Source: "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(svgPayload)), MIMEType: "image/svg+xml"},
			{Source: "javascript:window.__xss='icon'"},
		},
	}, func(context.Context, *mcp.CallToolRequest, noArgs) (*mcp.CallToolResult, out, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{
			&mcp.TextContent{Text: "Result: " + imgPayload + "\n" + linkPayload + "\nSafe: https://example.com/ok"},
			&mcp.ImageContent{MIMEType: "image/svg+xml", Data: []byte(svgPayload)},
			&mcp.ImageContent{MIMEType: "image/png", Data: tinyPNG},
			&mcp.ResourceLink{URI: "javascript:window.__xss='rl'", Name: imgPayload},
			&mcp.ResourceLink{URI: "https://example.com/safe", Name: "safe link"},
			&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "file:///evil.html", MIMEType: "text/html", Text: "<script>window.__xss='script'</script>" + imgPayload}},
		}}, out{HTML: imgPayload}, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "probe-elicit", Description: "Asks a hostile question."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ noArgs) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{
				Message: "Answer me " + imgPayload + " " + linkPayload,
				RequestedSchema: map[string]any{
					"type": "object",
					"properties": map[string]any{
						"choice": map[string]any{"type": "string", "title": "Pick " + imgPayload, "description": imgPayload,
							"enum": []any{imgPayload, "plain"}, "default": "plain"},
					},
				},
			})
			if err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "answered " + res.Action}}}, nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		for ss := range server.Sessions() {
			_ = ss.Close()
		}
		ts.CloseClientConnections()
		ts.Close()
	})
	return ts.URL
}

// inertChecks is JavaScript that reports every way markup from the server could have
// become live: a script that ran, elements or attributes that only markup would create,
// javascript: links, SVG shown as an image.
const inertChecks = `(() => {
  const bad = [];
  if (window.__xss !== undefined) bad.push('script ran: ' + window.__xss);
  if (document.querySelector('img[src="x"]')) bad.push('img src=x exists');
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) if (/^on/i.test(a.name)) bad.push('handler attribute ' + a.name + ' on ' + el.tagName);
  }
  if (document.querySelectorAll('script').length !== 1) bad.push('scripts: ' + document.querySelectorAll('script').length);
  if (document.querySelector('#main svg')) bad.push('svg element exists');
  for (const a of document.querySelectorAll('a[href]')) {
    const u = new URL(a.href, location.href);
    if (!['http:', 'https:'].includes(u.protocol)) bad.push('link to ' + a.href);
  }
  for (const img of document.querySelectorAll('img')) {
    if (!/^data:image\/(png|jpeg|gif|webp);base64,/.test(img.getAttribute('src') || '') && !img.src.startsWith(location.origin)) bad.push('img ' + img.src.slice(0, 40));
  }
  return bad;
})()`

// TestHostileServerIsRenderedInert connects to a server whose strings are HTML, SVG and
// javascript: links, and checks every view shows them as text and runs none of them.
func TestHostileServerIsRenderedInert(t *testing.T) {
	target := hostileServer(t)
	s := newStack(t)
	id := s.createSession(t, "hostile", target+"/")
	s.waitReady(t, id)
	b := newBrowser(t)
	b.signIn(s.url, s.key)
	inert := func(where string) {
		t.Helper()
		var bad []string
		b.eval(inertChecks, &bad)
		if len(bad) > 0 {
			b.shot("live-markup-" + where)
			t.Errorf("%s: server markup became live: %v", where, bad)
		}
	}

	// The sessions list and the overview (name, title, website, instructions, icon).
	b.waitJS("listed", `document.querySelector('.session-row')`, 10*time.Second)
	inert("sessions")
	b.run("open", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/overview", s.url, id)))
	b.waitJS("overview", `document.querySelector('.overview .kv')?.textContent.includes('Evil <img src=x onerror=')`, 15*time.Second)
	b.waitJS("instructions as text", `document.querySelector('.instructions')?.textContent.includes('<img src=x onerror=')`, 5*time.Second)
	b.waitJS("the http link in instructions is a link", `document.querySelector('.instructions a[href="https://example.com/docs"]')`, 5*time.Second)
	b.waitJS("the javascript: website is text", `[...document.querySelectorAll('.inert-link')].some(e => e.textContent.startsWith('javascript:'))`, 5*time.Second)
	inert("overview")
	b.shot("overview")

	// Tools: the list, the description, then the result.
	b.click(`#tab-tools`)
	b.click(`button[data-tool="probe"]`)
	b.waitJS("description as text", `document.querySelector('.detail .description')?.textContent.includes('<img src=x onerror=')`, 5*time.Second)
	inert("tool")
	b.click(`.tool-form button[data-action="run"]`)
	b.waitJS("result", `document.querySelector('.call[data-status="succeeded"] .tool-result')`, 20*time.Second)
	var shown map[string]bool
	b.eval(`(() => { const r = document.querySelector('.call .tool-result');
		return {
		  text: r.textContent.includes('Result: <img src=x onerror="window.__xss=\'img\'">'),
		  jsLinkText: r.textContent.includes("javascript:window.__xss='link'"),
		  safeLink: !!r.querySelector('a[href="https://example.com/safe"][rel~="noopener"]'),
		  okLink: !!r.querySelector('a[href="https://example.com/ok"]'),
		  png: !!r.querySelector('img[src^="data:image/png;base64,"]'),
		  svgRefused: [...r.querySelectorAll('.refused')].some(e => e.textContent.includes('image/svg+xml')),
		  htmlAsText: r.textContent.includes("<script>window.__xss='script'</script>"),
		  structured: r.querySelector('.structured')?.textContent.includes('<img src=x onerror=') ?? false,
		}; })()`, &shown)
	for k, v := range shown {
		if !v {
			t.Errorf("result check %s failed", k)
		}
	}
	inert("result")
	b.shot("result")

	// The same strings in the raw history.
	b.click(`#tab-history`)
	b.click(`.vrow[data-kind="response"]`)
	inert("history")

	// An elicitation whose message, labels and choices are markup.
	b.click(`#tab-tools`)
	b.click(`button[data-tool="probe-elicit"]`)
	b.click(`.tool-form button[data-action="run"]`)
	b.click(`#tab-pending`)
	card := `.pending-card[data-status="pending"]`
	b.waitJS("elicitation", `document.querySelector(`+jsString(card)+`)?.textContent.includes('Answer me <img src=x onerror=')`, 20*time.Second)
	b.waitJS("labels as text", `document.querySelector(`+jsString(card+` [data-prop="choice"]`)+`)?.textContent.includes('Pick <img src=x')`, 5*time.Second)
	inert("pending")
	b.shot("pending")
	b.click(card + ` button[data-answer="decline"]`)
	b.waitJS("declined", `document.querySelector('.pending-card')?.dataset.status === 'answered'`, 10*time.Second)
	inert("end")
	b.noProblems()
}
