package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// TestInspectorFlow signs in, connects to server-everything and drives it the way a person
// would: a plain call (get-sum), a long call whose progress bar moves and survives a page
// reload, an elicitation answered through the generated form (the pending queue also
// survives a reload), the frames in the history, and the event stream resuming after it
// drops. Along the way the JWT is refreshed at least once (the stack issues 40 s tokens).
func TestInspectorFlow(t *testing.T) {
	everything := mcptest.Everything(t)
	s := newStack(t)
	b := newBrowser(t)

	b.signIn(s.url, s.key)
	var firstToken string
	b.eval(`JSON.parse(sessionStorage.getItem('tapline.auth')).token`, &firstToken)
	var mode string
	b.eval(`JSON.parse(sessionStorage.getItem('tapline.auth')).mode`, &mode)
	if mode != "jwt" {
		t.Fatalf("signed in with mode %q, want the API key exchanged for a JWT", mode)
	}
	b.waitJS("sessions page", `document.querySelector('.connect-form')`, 10*time.Second)
	b.shot("01-signed-in")

	// Connect.
	b.typeInto(`input[name="url"]`, everything)
	b.typeInto(`input[name="name"]`, "everything")
	b.click(`form.connect-form button[type="submit"]`)
	b.waitJS("session ready", `document.querySelector('.session-status')?.dataset.status === 'ready'`, 40*time.Second)
	b.waitJS("server info", `document.querySelector('.overview .kv')?.textContent.includes('mcp-servers/everything')`, 15*time.Second)
	b.waitJS("negotiated version", `/20\d\d-\d\d-\d\d/.test(document.querySelector('.overview .kv')?.textContent ?? '')`, 5*time.Second)
	b.waitJS("live stream", `document.querySelector('.conn')?.dataset.state === 'live'`, 10*time.Second)
	b.waitJS("presence", `Number(document.querySelector('.watchers')?.dataset.count) >= 1`, 10*time.Second)
	var sessionID string
	b.eval(`document.querySelector('.session-page').dataset.sessionId`, &sessionID)
	b.shot("02-overview")

	t.Run("GetSum", func(t *testing.T) {
		b := b.with(t)
		b.click(`#tab-tools`)
		b.click(`button[data-tool="get-sum"]`)
		b.typeInto(`.tool-form [data-prop="a"] input`, "2")
		b.typeInto(`.tool-form [data-prop="b"] input`, "40")
		b.click(`.tool-form button[data-action="run"]`)
		b.waitJS("get-sum result", `document.querySelector('.call[data-status="succeeded"]')?.textContent.includes('42')`, 20*time.Second)
		b.shot("03-get-sum")
		b.accessible("tools")
	})

	var callID string
	t.Run("LongRunningSurvivesReload", func(t *testing.T) {
		b := b.with(t)
		b.click(`button[data-tool="trigger-long-running-operation"]`)
		b.typeInto(`.tool-form [data-prop="duration"] input`, "9")
		b.typeInto(`.tool-form [data-prop="steps"] input`, "6")
		b.click(`.tool-form button[data-action="run"]`)
		b.waitJS("first progress", `Number(document.querySelector('.call[data-status="running"] .progress-row')?.dataset.progress) >= 1`, 20*time.Second)
		b.eval(`document.querySelector('.call[data-status="running"]').dataset.callId`, &callID)
		var first float64
		b.eval(`Number(document.querySelector('.call[data-status="running"] progress').value)`, &first)
		b.shot("04-progress")
		b.waitJS("progress moves", fmt.Sprintf(`Number(document.querySelector('.call[data-status="running"] progress')?.value) > %v`, first), 10*time.Second)

		// Reload mid-call: the same call shows, still running, with its progress.
		b.run("reload", chromedp.Reload())
		running := fmt.Sprintf(`.call[data-call-id=%q][data-status="running"]`, callID)
		b.waitJS("the same call after reload", fmt.Sprintf(`Number(document.querySelector(%s)?.querySelector('.progress-row')?.dataset.progress) >= 2`, jsString(running)), 15*time.Second)
		b.shot("05-progress-after-reload")
		done := fmt.Sprintf(`.call[data-call-id=%q][data-status="succeeded"]`, callID)
		b.waitJS("call finished", fmt.Sprintf(`document.querySelector(%s)?.textContent.includes('Long running operation completed')`, jsString(done)), 20*time.Second)
		b.waitJS("progress reached the end", fmt.Sprintf(`(() => { const r = document.querySelector(%s)?.querySelector('.progress-row'); return r && r.dataset.progress === '6' && r.dataset.total === '6'; })()`, jsString(done)), 5*time.Second)
		b.shot("06-long-running-done")
	})

	t.Run("ElicitationThroughTheForm", func(t *testing.T) {
		b := b.with(t)
		b.click(`button[data-tool="trigger-elicitation-request"]`)
		b.click(`.tool-form button[data-action="run"]`)
		b.waitJS("pending badge", `document.querySelector('#tab-pending .badge')?.textContent === '1'`, 20*time.Second)
		b.waitJS("pending note on the call", `document.querySelector('.call[data-status="running"] .pending-note')`, 5*time.Second)
		var elicitCall string
		b.eval(`document.querySelector('.call[data-status="running"]').dataset.callId`, &elicitCall)
		// server-everything leaves the mode out of its elicitation/create: the pending request
		// says what MCP infers from the rest, so whoever answers need not guess.
		waiting, err := s.svc.ListPending(context.Background(), s.tenant.Tenant.ID, sessionID, []inspector.PendingStatus{inspector.PendingWaiting})
		if err != nil || len(waiting) != 1 {
			t.Fatalf("pending = %+v, %v; want the elicitation", waiting, err)
		}
		var mode struct {
			Mode string `json:"mode"`
		}
		if err := json.Unmarshal(waiting[0].Params, &mode); err != nil || mode.Mode != "form" {
			t.Errorf("elicitation params = %s, want the inferred mode form", waiting[0].Params)
		}
		b.click(`#tab-pending`)
		card := `.pending-card[data-kind="elicitation"][data-status="pending"]`
		b.waitJS("elicitation card", `document.querySelector(`+jsString(card)+`)`, 10*time.Second)
		// The schema's defaults are filled in.
		var defaults map[string]any
		b.eval(`(() => { const c = document.querySelector(`+jsString(card)+`);
			const v = (p) => c.querySelector('[data-prop="' + p + '"] input, [data-prop="' + p + '"] select, [data-prop="' + p + '"] textarea');
			const sel = v('legacyTitledEnum');
			return { firstLine: v('firstLine').value, integer: v('integer').value, number: v('number').value,
			  legacy: sel.options[sel.selectedIndex].textContent,
			  guitar: [...c.querySelectorAll('[data-prop="untitledMultipleSelectEnum"] input:checked')].length };
		})()`, &defaults)
		want := map[string]any{"firstLine": "It was a dark and stormy night.", "integer": "42", "number": "3.14", "legacy": "Cats (pet-1)", "guitar": float64(1)}
		for k, v := range want {
			if defaults[k] != v {
				t.Errorf("default %s = %v, want %v", k, defaults[k], v)
			}
		}
		b.typeInto(card+` [data-prop="name"] input`, "Ada Lovelace")
		b.shot("07-elicitation-form")
		b.accessible("pending")

		// Reload: the pending queue and the waiting call are still there.
		b.run("reload", chromedp.Reload())
		b.waitJS("pending after reload", `document.querySelector(`+jsString(card)+`)`, 15*time.Second)
		b.waitJS("header counts it", `document.querySelector('.pending-link')?.textContent.includes('1 request')`, 5*time.Second)
		b.typeInto(card+` [data-prop="name"] input`, "Ada Lovelace")
		b.click(card + ` button[data-answer="accept"]`)
		b.waitJS("answered", `document.querySelector('.pending-card[data-kind="elicitation"]')?.dataset.status === 'answered'`, 15*time.Second)
		b.run("open the call", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/tools/trigger-elicitation-request", s.url, sessionID)))
		done := fmt.Sprintf(`.call[data-call-id=%q][data-status="succeeded"]`, elicitCall)
		b.waitJS("elicitation result", fmt.Sprintf(`document.querySelector(%s)?.textContent.includes('Ada Lovelace')`, jsString(done)), 20*time.Second)
		b.shot("08-elicitation-result")
	})

	t.Run("ContentTypes", func(t *testing.T) {
		b := b.with(t)
		id := b.runTool("get-tiny-image", nil)
		b.callDone(id, "succeeded")
		b.waitJS("image", fmt.Sprintf(`document.querySelector('.call[data-call-id=%q] .content-image img[src^="data:image/png;base64,"]')`, id), 5*time.Second)
		id = b.runTool("get-structured-content", func() { b.choose(`.tool-form [data-prop="location"] select`, "Chicago") })
		b.callDone(id, "succeeded")
		b.waitJS("structured content checked", fmt.Sprintf(`document.querySelector('.call[data-call-id=%q] .structured .valid')`, id), 5*time.Second)
		b.shot("10-structured")
		id = b.runTool("get-resource-links", nil)
		b.callDone(id, "succeeded")
		link := fmt.Sprintf(`.call[data-call-id=%q] .content-link button`, id)
		b.click(link)
		b.waitJS("resource link read", fmt.Sprintf(`document.querySelector('.call[data-call-id=%q] .link-read .resource-body')`, id), 10*time.Second)
	})

	t.Run("SamplingEditedAndSent", func(t *testing.T) {
		b := b.with(t)
		id := b.runTool("trigger-sampling-request", func() { b.typeInto(`.tool-form [data-prop="prompt"] input`, "Say hello") })
		b.click(`#tab-pending`)
		card := `.pending-card[data-kind="sampling"][data-status="pending"]`
		b.waitJS("sampling card", `document.querySelector(`+jsString(card)+`)?.textContent.includes('Say hello')`, 15*time.Second)
		b.typeInto(card+` textarea`, "Hello from a person")
		b.shot("11-sampling")
		b.click(card + ` button[data-answer="send"]`)
		b.run("open the call", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/tools/trigger-sampling-request", s.url, sessionID)))
		if got := b.callDone(id, "succeeded"); !strings.Contains(got, "Hello from a person") {
			t.Errorf("sampling result = %q", got)
		}
	})

	t.Run("URLElicitation", func(t *testing.T) {
		b := b.with(t)
		id := b.runTool("trigger-url-elicitation", func() {
			b.typeInto(`.tool-form [data-prop="url"] input`, "https://example.com/consent?step=1")
		})
		b.click(`#tab-pending`)
		card := `.pending-card[data-kind="elicitation"][data-status="pending"] .elicitation-url`
		b.waitJS("url card", `document.querySelector(`+jsString(card+` a[href="https://example.com/consent?step=1"][target="_blank"]`)+`)`, 15*time.Second)
		b.shot("11b-url-elicitation")
		b.click(card + ` button[data-answer="accept"]`)
		b.run("open the call", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/tools/trigger-url-elicitation", s.url, sessionID)))
		b.callDone(id, "succeeded")
	})

	t.Run("Cancel", func(t *testing.T) {
		b := b.with(t)
		id := b.runTool("trigger-long-running-operation", func() {
			b.typeInto(`.tool-form [data-prop="duration"] input`, "30")
			b.typeInto(`.tool-form [data-prop="steps"] input`, "30")
		})
		b.waitJS("running", fmt.Sprintf(`Number(document.querySelector('.call[data-call-id=%q] .progress-row')?.dataset.progress) >= 1`, id), 15*time.Second)
		b.click(fmt.Sprintf(`.call[data-call-id=%q] button[data-action="cancel"]`, id))
		b.callDone(id, "cancelled")
	})

	t.Run("Resources", func(t *testing.T) {
		b := b.with(t)
		b.click(`#tab-resources`)
		res := `.resource[data-uri^="demo://resource/static/document/"]`
		b.waitJS("resources listed", `document.querySelector(`+jsString(res)+`)`, 15*time.Second)
		var uri string
		b.eval(`document.querySelector(`+jsString(res)+`).dataset.uri`, &uri)
		b.click(res + ` button`)
		b.waitJS("read", `document.querySelector('.resources-tab .main-pane .resource-body')`, 10*time.Second)
		// A template: its variable completes and the URI expands.
		v := `.template[data-template="demo://resource/dynamic/text/{resourceId}"] input[data-var="resourceId"]`
		b.typeInto(v, "5")
		b.waitJS("completion", `document.querySelector(`+jsString(v)+`)?.dataset.completions === '1'`, 10*time.Second)
		b.waitJS("expanded", `document.querySelector('.template[data-template="demo://resource/dynamic/text/{resourceId}"] .expanded')?.textContent === 'demo://resource/dynamic/text/5'`, 5*time.Second)
		b.click(`.template[data-template="demo://resource/dynamic/text/{resourceId}"] .row:last-child button`)
		b.waitJS("template read", `document.querySelector('.resources-tab .main-pane')?.textContent.includes('demo://resource/dynamic/text/5')`, 10*time.Second)
		// Subscribe, make the server send an update, see it highlighted.
		sel := fmt.Sprintf(`.resource[data-uri=%q]`, uri)
		b.click(sel + ` button[aria-pressed="false"]`)
		b.waitJS("subscribed", `document.querySelector(`+jsString(sel+` button[aria-pressed="true"]`)+`)`, 10*time.Second)
		b.runTool("toggle-subscriber-updates", nil)
		b.click(`#tab-resources`)
		b.waitJS("update highlighted", `document.querySelector(`+jsString(sel)+`)?.classList.contains('updated')`, 15*time.Second)
		b.shot("12-resources")
		b.accessible("resources")
		b.runTool("toggle-subscriber-updates", nil)
	})

	t.Run("PromptWithCompletion", func(t *testing.T) {
		b := b.with(t)
		b.click(`#tab-prompts`)
		b.click(`button[data-prompt="completable-prompt"]`)
		dept := `.prompt-form input[data-arg="department"]`
		b.typeInto(dept, "Eng")
		b.waitJS("department completes", `[...document.querySelector(`+jsString(dept)+`).list.options].some(o => o.value === 'Engineering')`, 10*time.Second)
		b.typeInto(dept, "Engineering")
		name := `.prompt-form input[data-arg="name"]`
		b.typeInto(name, "A")
		b.waitJS("name completes in context", `[...document.querySelector(`+jsString(name)+`).list.options].some(o => o.value === 'Alice')`, 10*time.Second)
		b.typeInto(name, "Alice")
		b.click(`.prompt-form button[type="submit"]`)
		b.waitJS("messages", `document.querySelector('.prompt-out')?.textContent.includes('Please promote Alice to the head of the Engineering team.')`, 10*time.Second)
		b.shot("13-prompt")
		b.accessible("prompts")
	})

	t.Run("RootsPingAndConfig", func(t *testing.T) {
		b := b.with(t)
		b.click(`#tab-overview`)
		b.click(`#ov-roots ~ div button`)
		b.typeInto(`.roots .kv-row:last-child input[aria-label="Root URI"]`, "file:///work")
		b.typeInto(`.roots .kv-row:last-child input[aria-label="Root name"]`, "work")
		b.click(`#ov-roots ~ .actions button`)
		b.waitJS("saved", `[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('Roots saved'))`, 10*time.Second)
		id := b.runTool("get-roots-list", nil)
		if got := b.callDone(id, "succeeded"); !strings.Contains(got, "file:///work") {
			t.Errorf("roots the server saw: %q", got)
		}
		b.click(`#tab-overview`)
		b.click(`#ov-actions ~ .row button`)
		b.waitJS("pong", `/\d ms round trip/.test(document.querySelector('#ov-actions ~ .row output')?.textContent ?? '')`, 10*time.Second)
		b.eval(`[...document.querySelectorAll('#ov-actions ~ .row button')].find(x => x.textContent === 'Show mcp.json').click(), true`, new(bool))
		b.waitJS("mcp.json", fmt.Sprintf(`document.querySelector('.config-out')?.textContent.includes(%s)`, jsString(everything)), 10*time.Second)
		b.shot("14-overview-actions")
		b.accessible("overview")
	})

	t.Run("NotificationsFilteredByLevel", func(t *testing.T) {
		b := b.with(t)
		b.runTool("toggle-simulated-logging", nil)
		b.click(`#tab-notifications`)
		b.choose(`.notes-tab select[aria-label="Server log level"]`, "debug")
		b.click(`.notes-tab .toolbar .btn`)
		b.waitJS("log rows", `document.querySelector('.notes-tab .vrow[data-kind="log"]')`, 20*time.Second)
		b.shot("15-notifications")
		b.accessible("notifications")
		b.choose(`.notes-tab select[aria-label="Minimum log level"]`, "emergency")
		b.waitJS("logs below emergency hidden, other rows kept", `![...document.querySelectorAll('.notes-tab .vrow:not([hidden])')].some(r => r.dataset.kind === 'log' && !r.textContent.includes('emergency')) && document.querySelector('.notes-tab .vrow:not([hidden])[data-kind="notification"]')`, 5*time.Second)
		b.runTool("toggle-simulated-logging", nil)
	})

	t.Run("Presence", func(t *testing.T) {
		b := b.with(t)
		tab, cancel := chromedp.NewContext(b.ctx)
		defer cancel()
		// The first run opens the tab; it must not carry a timeout, which would close it.
		if err := chromedp.Run(tab); err != nil {
			t.Fatal(err)
		}
		other := &browser{t: t, ctx: tab, log: b.log}
		other.signIn(s.url, s.key)
		other.run("open the session", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/overview", s.url, sessionID)))
		b.waitJS("two watching", `document.querySelector('.watchers')?.dataset.count === '2'`, 15*time.Second)
		b.shot("16-presence")
		cancel()
		b.waitJS("one watching", `document.querySelector('.watchers')?.dataset.count === '1'`, 15*time.Second)
	})

	t.Run("History", func(t *testing.T) {
		b := b.with(t)
		b.click(`#tab-history`)
		b.waitJS("frames listed", `Number(document.querySelector('.history-tab .count')?.dataset.total) > 10`, 10*time.Second)
		b.typeInto(`.history-tab input[type="search"]`, "get-sum")
		b.waitJS("search narrows", `Number(document.querySelector('.history-tab .count').dataset.shown) < Number(document.querySelector('.history-tab .count').dataset.total)`, 5*time.Second)
		b.click(`.vrow[data-kind="request"]`)
		b.waitJS("paired response", `document.querySelector('.frame-detail .pair')?.textContent.includes('"sum"') || document.querySelector('.frame-detail .pair')?.textContent.includes('42')`, 5*time.Second)
		b.shot("09-history")
		b.accessible("history")
		// Keyboard: the list moves with the arrow keys.
		var sel string
		b.eval(`document.querySelector('.history-tab .vrow.selected').dataset.index`, &sel)
		b.run("keyboard", chromedp.Focus(`.history-tab .vlist`, chromedp.ByQuery), chromedp.KeyEvent(kb.ArrowDown))
		b.waitJS("selection moved down", fmt.Sprintf(`document.querySelector('.history-tab .vrow.selected')?.dataset.index === '%d'`, atoi(sel)+1), 5*time.Second)
	})

	t.Run("StreamResumesWithoutGapsOrDuplicates", func(t *testing.T) {
		b := b.with(t)
		var before float64
		b.eval(`window.tapline.store.lastSeq`, &before)
		b.eval(`window.tapline.dropStream(), true`, new(bool))
		// Events happen while the page is away.
		for range 3 {
			if _, err := s.svc.Request(context.Background(), s.tenant.Tenant.ID, sessionID, inspector.OpPing, nil, nil); err != nil {
				t.Fatalf("ping: %v", err)
			}
		}
		b.waitJS("stream back", `document.querySelector('.conn')?.dataset.state === 'live'`, 20*time.Second)
		sess, err := s.svc.GetSession(context.Background(), s.tenant.Tenant.ID, sessionID)
		if err != nil {
			t.Fatal(err)
		}
		b.waitJS("caught up", fmt.Sprintf(`window.tapline.store.lastSeq >= %d`, sess.LastSeq), 15*time.Second)
		var ok bool
		b.eval(`(() => { const f = window.tapline.store.frames; for (let i = 1; i < f.length; i++) if (f[i].seq <= f[i-1].seq) return false; return true; })()`, &ok)
		if !ok {
			t.Error("frames repeat or go backwards after the stream resumed")
		}
		var frames float64
		b.eval(`window.tapline.store.frames.length`, &frames)
		n := 0
		err = s.svc.ExportEvents(context.Background(), s.tenant.Tenant.ID, sessionID, func(e inspector.Event) error {
			if e.Type == inspector.EventFrame && e.Seq <= sess.LastSeq {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if int(frames) < n {
			t.Errorf("page has %v frames, the session %d", frames, n)
		}
		_ = before
	})

	t.Run("DarkScheme", func(t *testing.T) {
		b := b.with(t)
		b.run("prefer dark", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}))
		b.run("open a result", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/tools/get-structured-content", s.url, sessionID)))
		b.waitJS("result", `document.querySelector('.call .structured')`, 15*time.Second)
		var dark bool
		b.eval(`(() => { const [r, g, bl] = getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number); return r + g + bl < 120; })()`, &dark)
		if !dark {
			t.Error("the page is not dark when the system prefers a dark scheme")
		}
		b.shot("17-dark")
		b.run("prefer light", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}))
	})

	var lastToken string
	b.eval(`JSON.parse(sessionStorage.getItem('tapline.auth')).token`, &lastToken)
	if lastToken == firstToken {
		t.Errorf("the JWT was never refreshed during a test longer than its %v lifetime", tokenTTL)
	}
	b.noProblems()
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
