package webtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tapline/tapline/internal/mcptest"
)

// TestInputRequiredRounds drives a 2026-07-28 server whose tool answers input_required: the
// round's elicitation and sampling requests show in the pending queue as input_required
// rows, are answered there, and the worker's retry completes the call.
func TestInputRequiredRounds(t *testing.T) {
	target := mcptest.NewStatelessServer(t, nil)
	s := newStack(t)
	id := s.createSession(t, "modern", target.URL())
	s.waitReady(t, id)
	b := newBrowser(t)
	b.signIn(s.url, s.key)
	b.run("open", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/tools", s.url, id)))
	b.waitJS("modern era", `document.querySelector('.session-head .target-url')?.title.includes('2026-07-28')`, 15*time.Second)
	call := b.runTool("confirm", nil)
	b.click(`#tab-pending`)
	elicit := `.pending-card[data-kind="input_required"][data-status="pending"].pending-input_required`
	b.waitJS("two input rows", `document.querySelectorAll(`+jsString(elicit)+`).length === 2`, 20*time.Second)
	b.waitJS("labelled by method", `[...document.querySelectorAll('.pending-card .pending-head')].some(h => h.textContent.includes('input required · elicitation/create'))`, 5*time.Second)
	b.shot("input-required")
	b.accessible("input required")
	// The elicitation: tick "Approve?" and accept.
	b.click(`.pending-card[data-status="pending"] [data-prop="approve"] input[type="checkbox"]`)
	b.click(`.pending-card[data-status="pending"] .elicit-form button[data-answer="accept"]`)
	// The sampling request: reply and send.
	b.waitJS("one left", `document.querySelectorAll(`+jsString(elicit)+`).length === 1`, 10*time.Second)
	b.typeInto(`.pending-card[data-status="pending"] .sampling textarea`, "all good")
	b.click(`.pending-card[data-status="pending"] button[data-answer="send"]`)
	b.run("back to the call", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/tools/confirm", s.url, id)))
	got := b.callDone(call, "succeeded")
	if !strings.Contains(got, `action=accept approve=true summary="all good"`) {
		t.Errorf("call result = %q", got)
	}
	b.noProblems()
}
