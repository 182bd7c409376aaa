package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tapline/tapline/internal/inspector"
	"github.com/tapline/tapline/internal/mcptest"
)

// historyFrames is how many frames the history must stay usable at.
const historyFrames = 10_000

// TestHistoryVirtualises10kFrames loads a session with 10,000 frames (5,000 request and
// response pairs, written straight into its event log) and checks the history list keeps
// only the visible rows in the DOM, scrolls to the end, searches, and pairs frames.
func TestHistoryVirtualises10kFrames(t *testing.T) {
	target := mcptest.NewStatefulServer(t, nil)
	s := newStack(t)
	id := s.createSession(t, "big history", target.URL())
	s.waitReady(t, id)
	s.closeSession(t, id)
	ctx := context.Background()
	// Odd frames are tools/call requests, even ones their results; ids pair them.
	var lastSeq int64
	err := s.db.Pool.QueryRow(ctx, `
		with s as (
			update sessions set last_seq = last_seq + $3 where tenant_id = $1 and id = $2
			returning last_seq - $3 as base
		), ins as (
			insert into session_events (tenant_id, session_id, seq, type, data, at)
			select $1, $2, s.base + g, 'frame',
				case when g % 2 = 1 then jsonb_build_object('dir', 'send', 'message', jsonb_build_object(
					'jsonrpc', '2.0', 'id', g / 2, 'method', 'tools/call',
					'params', jsonb_build_object('name', 'echo', 'arguments', jsonb_build_object('n', g))))
				else jsonb_build_object('dir', 'recv', 'message', jsonb_build_object(
					'jsonrpc', '2.0', 'id', (g - 1) / 2,
					'result', jsonb_build_object('content', jsonb_build_array(jsonb_build_object('type', 'text', 'text', 'echo ' || g))))) end,
				now() + g * interval '1 millisecond'
			from s, generate_series(1, $3) g
			returning seq
		)
		select max(seq) from ins`, s.tenant.Tenant.ID, id, historyFrames).Scan(&lastSeq)
	if err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t)
	b.signIn(s.url, s.key)
	start := time.Now()
	b.run("open history", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/history", s.url, id)))
	b.waitJS("every frame", fmt.Sprintf(`Number(document.querySelector('.history-tab .count')?.dataset.total) >= %d`, historyFrames), 60*time.Second)
	t.Logf("%d frames replayed and listed in %v", historyFrames, time.Since(start).Round(time.Millisecond))
	b.waitJS("caught up", fmt.Sprintf(`window.tapline.store.lastSeq >= %d`, lastSeq), 10*time.Second)

	rows := func() int {
		var n int
		b.eval(`document.querySelectorAll('.history-tab .vrow:not([hidden])').length`, &n)
		return n
	}
	if n := rows(); n == 0 || n > 120 {
		t.Fatalf("%d rows in the DOM for %d frames; want only the visible ones", n, historyFrames)
	}
	b.shot("10k-end")

	// Following is on: the last frame is in view. Home goes to the first.
	b.waitJS("last frame shown", fmt.Sprintf(`[...document.querySelectorAll('.history-tab .vrow:not([hidden])')].some(r => r.dataset.seq === '%d')`, lastSeq), 5*time.Second)
	b.run("home", chromedp.Focus(`.history-tab .vlist`, chromedp.ByQuery), chromedp.KeyEvent(kb.Home))
	b.waitJS("first frame selected", `document.querySelector('.history-tab .vrow.selected')?.dataset.index === '0'`, 5*time.Second)
	if n := rows(); n > 120 {
		t.Errorf("%d rows in the DOM after scrolling", n)
	}

	// Search finds the one request with n = 9999, and it pairs with its result.
	b.typeInto(`.history-tab input[type="search"]`, `"n":9999`)
	b.waitJS("search", `document.querySelector('.history-tab .count')?.dataset.shown === '1'`, 10*time.Second)
	b.waitJS("the row shows the match", `document.querySelectorAll('.history-tab .vrow:not([hidden])').length === 1 && document.querySelector('.history-tab .vrow:not([hidden])').dataset.seq !== '1'`, 5*time.Second)
	b.click(`.history-tab .vrow[data-kind="request"]`)
	b.waitJS("pair", `document.querySelector('.frame-detail .pair')?.textContent.includes('echo 10000')`, 5*time.Second)
	b.shot("10k-search")
	b.noProblems()
}

// TestRetentionGapIsNoted: events the team's retention deleted from the start and the middle
// of a history show in the notifications as notes naming the deleted seqs, where the
// history would otherwise just skip them.
func TestRetentionGapIsNoted(t *testing.T) {
	target := mcptest.NewStatefulServer(t, nil)
	s := newStack(t)
	id := s.createSession(t, "purged history", target.URL())
	s.waitReady(t, id)
	ctx := context.Background()
	for range 2 {
		c, err := s.svc.StartCall(ctx, s.tenant.Tenant.ID, id, inspector.StartCallParams{Name: "echo", Arguments: json.RawMessage(`{"text":"x"}`), Wait: 10 * time.Second})
		if err != nil || c.Status != inspector.CallSucceeded {
			t.Fatalf("call: %+v, %v", c, err)
		}
	}
	last := s.closeSession(t, id).LastSeq
	if last < 5 {
		t.Fatalf("the session has %d events; the test needs at least 5", last)
	}
	// As the retention job deletes (the oldest first), plus one in the middle, as a purge
	// in progress can leave.
	if _, err := s.db.Pool.Exec(ctx, `delete from session_events where tenant_id = $1 and session_id = $2 and (seq <= 2 or seq = 4)`,
		s.tenant.Tenant.ID, id); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t)
	b.signIn(s.url, s.key)
	b.run("open notifications", chromedp.Navigate(fmt.Sprintf("%s/#/s/%s/notifications", s.url, id)))
	b.waitJS("caught up", fmt.Sprintf(`window.tapline?.store?.lastSeq >= %d`, last), 20*time.Second)
	b.waitJS("both gaps noted", `(() => {
		const rows = [...document.querySelectorAll('.notes-tab .vrow[data-kind="system"]')].map(r => r.textContent);
		return rows.some(t => t.includes('events 1–2 were deleted by retention')) && rows.some(t => t.includes('event 4 was deleted by retention'));
	})()`, 10*time.Second)
	b.shot("retention-gap")
	b.noProblems()
}
