package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium. deploy/local/test-services.sh installs it when missing.
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium with a fresh profile, and the page's problems (uncaught
// exceptions, console errors, CSP violations) collected for the test to check.
type browser struct {
	t   *testing.T
	ctx context.Context
	log *problemLog
}

// problemLog collects what the page reported, for every test using the browser.
type problemLog struct {
	mu       sync.Mutex
	problems []string
}

// with returns the browser for a subtest: failures go to t.
func (b *browser) with(t *testing.T) *browser {
	c := *b
	c.t = t
	return &c
}

// newBrowser starts Chromium for the test; it fails the test when Chromium is missing.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath
	if _, err := os.Stat(path); err != nil {
		p, lerr := exec.LookPath("chromium")
		if lerr != nil {
			t.Fatalf("headless Chromium is required for the web inspector tests: %s is missing (%v). "+
				"deploy/local/test-services.sh installs it as root with apt-get install -y chromium", chromiumPath, err)
		}
		path = p
	}
	// A fresh profile. Not t.TempDir: Chromium's helpers may still be writing to it for a
	// moment after the browser exits, which TempDir's cleanup reports as a failure.
	profile, err := os.MkdirTemp("", "tapline-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 960),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, log: &problemLog{}}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			b.problem("exception: " + e.ExceptionDetails.Error())
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				b.problem("console.error: " + strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.LevelError {
				b.problem(fmt.Sprintf("log %s: %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL))
			}
		}
	})
	if err := chromedp.Run(ctx, cdplog.Enable(), runtime.Enable()); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		// Close the browser gracefully; cancelling the allocator waits for the process.
		_ = chromedp.Cancel(ctx)
		cancelCtx()
		cancelAlloc()
		for range 20 {
			if os.RemoveAll(profile) == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return b
}

func (b *browser) problem(s string) {
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	b.log.problems = append(b.log.problems, s)
}

// problemsMatching returns the page problems, leaving out those containing any of ignore.
func (b *browser) problemsMatching(ignore ...string) []string {
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	var out []string
next:
	for _, p := range b.log.problems {
		for _, ig := range ignore {
			if strings.Contains(p, ig) {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// noProblems fails the test when the page threw, logged an error or violated its CSP.
// Failed requests the test provoked on purpose are named in ignore.
func (b *browser) noProblems(ignore ...string) {
	b.t.Helper()
	if p := b.problemsMatching(ignore...); len(p) > 0 {
		b.t.Errorf("the page reported problems:\n  %s", strings.Join(p, "\n  "))
	}
}

// run runs chromedp actions with a deadline, failing the test on error.
func (b *browser) run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.shot("failed-" + safeName(what))
		b.t.Fatalf("%s: %v\npage problems: %v", what, err, b.problemsMatching())
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into out.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	b.run("eval "+firstLine(expr), chromedp.Evaluate(expr, out, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
}

// waitJS polls a JavaScript boolean expression until it is true.
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		err := chromedp.Run(ctx, chromedp.Evaluate("Boolean("+expr+")", &ok))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.shot("timeout-" + safeName(what))
			var body string
			_ = chromedp.Run(b.ctx, chromedp.Evaluate(`document.querySelector('#main')?.innerText.slice(0, 3000) ?? ''`, &body))
			b.t.Fatalf("timed out waiting for %s (%s), err=%v\npage text:\n%s\npage problems: %v", what, expr, err, body, b.problemsMatching())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// click clicks the first element matching a CSS selector once it is visible. A list that
// re-renders (a live update arrived) may replace the element between finding and clicking
// it; the click is then tried again on the new one, as a person would.
func (b *browser) click(sel string) {
	b.t.Helper()
	// Centre it first, so the sticky top bar never covers the point clicked.
	actions := []chromedp.Action{
		chromedp.WaitVisible(sel, chromedp.ByQuery),
		chromedp.Evaluate(fmt.Sprintf(`document.querySelector(%s).scrollIntoView({block: 'center', inline: 'nearest'}), true`, jsString(sel)), nil),
		chromedp.Click(sel, chromedp.ByQuery),
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
		err := chromedp.Run(ctx, actions...)
		cancel()
		if err == nil {
			return
		}
		if attempt < 3 && strings.Contains(err.Error(), "Could not find node") {
			continue
		}
		b.shot("failed-" + safeName("click "+sel))
		b.t.Fatalf("click %s: %v\npage problems: %v", sel, err, b.problemsMatching())
	}
}

// typeInto replaces an input's value by typing, as a person does: the old value is selected
// and typed over.
func (b *browser) typeInto(sel, text string) {
	b.t.Helper()
	b.run("type into "+sel,
		chromedp.WaitVisible(sel, chromedp.ByQuery),
		chromedp.Focus(sel, chromedp.ByQuery),
		chromedp.Evaluate(fmt.Sprintf(`(() => { const el = document.querySelector(%s); el.select ? el.select() : null; return true; })()`, jsString(sel)), nil),
		chromedp.KeyEvent("\b"),
		// Key events to the focused input: SendKeys would look the node up again and read
		// its attributes while chromedp's event loop updates them (a data race in chromedp).
		chromedp.KeyEvent(text))
}

// choose selects the option of a <select> whose text contains label, as a person does.
func (b *browser) choose(sel, label string) {
	b.t.Helper()
	b.waitJS("select "+sel, fmt.Sprintf(`document.querySelector(%s)`, jsString(sel)), 10*time.Second)
	var ok bool
	b.eval(fmt.Sprintf(`(() => { const s = document.querySelector(%s); if (!s) return false;
		const o = [...s.options].find((o) => o.textContent.includes(%s)); if (!o) return false;
		s.value = o.value; s.dispatchEvent(new Event('change', { bubbles: true })); return true; })()`, jsString(sel), jsString(label)), &ok)
	if !ok {
		b.t.Fatalf("no option %q in %s", label, sel)
	}
}

// runTool opens a tool in the Tools tab, lets fill set its arguments, and runs it; it
// returns the new call's id.
func (b *browser) runTool(name string, fill func()) string {
	b.t.Helper()
	b.click(`#tab-tools`)
	b.click(fmt.Sprintf(`button[data-tool=%q]`, name))
	b.waitJS("form of "+name, fmt.Sprintf(`document.querySelector('.detail-head code')?.textContent === %s`, jsString(name)), 5*time.Second)
	if fill != nil {
		fill()
	}
	var before string
	b.eval(`document.querySelector('.call-box .call')?.dataset.callId ?? ''`, &before)
	b.click(`.tool-form button[data-action="run"]`)
	b.waitJS("call of "+name+" started", fmt.Sprintf(`(document.querySelector('.call-box .call')?.dataset.callId ?? '') !== %s`, jsString(before)), 10*time.Second)
	var id string
	b.eval(`document.querySelector('.call-box .call').dataset.callId`, &id)
	return id
}

// callDone waits for a call to end with status and returns its text.
func (b *browser) callDone(id, status string) string {
	b.t.Helper()
	sel := fmt.Sprintf(`.call[data-call-id=%q][data-status=%q]`, id, status)
	b.waitJS("call "+status, fmt.Sprintf(`document.querySelector(%s)`, jsString(sel)), 30*time.Second)
	return b.text(sel)
}

// accessible fails the test when a form control has no label or a button no name.
func (b *browser) accessible(where string) {
	b.t.Helper()
	var bad []string
	b.eval(`(() => {
		const bad = [];
		const named = (el) => (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
		for (const el of document.querySelectorAll('input:not([type="hidden"]), select, textarea')) {
			if (!named(el)) bad.push(el.outerHTML.slice(0, 120));
		}
		for (const el of document.querySelectorAll('button')) {
			if (!el.textContent.trim() && !el.getAttribute('aria-label')) bad.push(el.outerHTML.slice(0, 120));
		}
		return bad;
	})()`, &bad)
	if len(bad) > 0 {
		b.t.Errorf("%s: controls without an accessible name:\n  %s", where, strings.Join(bad, "\n  "))
	}
}

// text returns the text content of the first element matching sel ("" when none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	var s string
	b.eval(fmt.Sprintf(`document.querySelector(%s)?.textContent ?? ''`, jsString(sel)), &s)
	return s
}

// shot saves a PNG of the viewport as test-artifacts/web/<test>-<name>.png.
func (b *browser) shot(name string) string {
	var buf []byte
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.CaptureScreenshot(&buf)); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	dir := filepath.Join(repoRoot(b.t), "test-artifacts", "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("screenshot dir: %v", err)
		return ""
	}
	path := filepath.Join(dir, safeName(b.t.Name())+"-"+safeName(name)+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	return path
}

// signIn opens the inspector and signs in with the API key.
func (b *browser) signIn(baseURL, key string) {
	b.t.Helper()
	b.run("open the inspector", chromedp.Navigate(baseURL+"/"))
	b.typeInto(`input[name="api_key"]`, key)
	b.click(`form.signin-form button[type="submit"]`)
	b.waitJS("signed in", `document.querySelector('.who')?.textContent.includes('owner')`, 15*time.Second)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteRune('_')
		}
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
