package webtest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

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
		var last string
		b.eval(fmt.Sprintf(`document.querySelector(%s).querySelector('.progress-row').dataset.progress + '/' + document.querySelector(%s).querySelector('.progress-row').dataset.total`, jsString(done), jsString(done)), &last)
		if last != "6/6" {
			t.Errorf("last progress = %s, want 6/6", last)
		}
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

	t.Run("History", func(t *testing.T) {
		b := b.with(t)
		b.click(`#tab-history`)
		b.waitJS("frames listed", `Number(document.querySelector('.history-tab .count')?.dataset.total) > 10`, 10*time.Second)
		b.typeInto(`.history-tab input[type="search"]`, "get-sum")
		b.waitJS("search narrows", `Number(document.querySelector('.history-tab .count').dataset.shown) < Number(document.querySelector('.history-tab .count').dataset.total)`, 5*time.Second)
		b.click(`.vrow[data-kind="request"]`)
		b.waitJS("paired response", `document.querySelector('.frame-detail .pair')?.textContent.includes('"sum"') || document.querySelector('.frame-detail .pair')?.textContent.includes('42')`, 5*time.Second)
		b.shot("09-history")
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
			if _, err := s.svc.Request(context.Background(), s.tenant.Tenant.ID, sessionID, inspector.OpPing, nil); err != nil {
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
