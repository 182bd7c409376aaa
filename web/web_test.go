package web_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tapline/tapline/web"
)

func get(t *testing.T, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesThePageWithAStrictCSP(t *testing.T) {
	t.Parallel()
	h := web.Handler()
	res := get(t, h, "/")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", res.StatusCode)
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{
		"default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
		"media-src 'self' data: blob:", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'",
	} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("CSP allows unsafe sources: %q", csp)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	body, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(body), `<script type="module" src="/assets/js/main.js"></script>`) {
		t.Errorf("page does not load main.js as a module:\n%s", body)
	}

	js := get(t, h, "/assets/js/main.js")
	if js.StatusCode != http.StatusOK || js.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("main.js = %d %q", js.StatusCode, js.Header.Get("Content-Type"))
	}
	etag := js.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if again := get(t, h, "/assets/js/main.js", "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation = %d, want 304", again.StatusCode)
	}
	for _, p := range []string{"/assets/js/nope.js", "/web.go", "/static/index.html", "/v1/me"} {
		if r := get(t, h, p); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, r.StatusCode)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d", rec.Code)
	}
}

// staticFiles reads every file under static/.
func staticFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir("static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(p)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNoMarkupSinks keeps server data away from the HTML parser and from code: no module
// assigns innerHTML or outerHTML, calls insertAdjacentHTML, document.write, eval or
// new Function, or sets a style attribute; the page has no inline script or style.
func TestNoMarkupSinks(t *testing.T) {
	t.Parallel()
	sinks := regexp.MustCompile(`\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(|setAttribute\(\s*['"](style|on\w+|href|src)['"]|\.srcdoc\b`)
	for path, src := range staticFiles(t) {
		switch {
		case strings.HasSuffix(path, ".js"):
			for i, line := range strings.Split(src, "\n") {
				code, _, _ := strings.Cut(line, "//")
				if sinks.MatchString(code) {
					// navLink sets a fixed "#/" route; everything else is a finding.
					if strings.Contains(code, "setAttribute('href', hash)") {
						continue
					}
					t.Errorf("%s:%d uses a markup or code sink: %s", path, i+1, strings.TrimSpace(line))
				}
			}
			// Element.append turns null into the text "null": views use add() from dom.js.
			if strings.Contains(path, "/views/") {
				for i, line := range strings.Split(src, "\n") {
					if strings.Contains(line, ".append(") {
						t.Errorf("%s:%d calls Element.append; use add() so null children are skipped", path, i+1)
					}
				}
			}
		case strings.HasSuffix(path, ".html"):
			if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(src) || strings.Contains(src, "<style") || regexp.MustCompile(`\son\w+=`).MatchString(src) || strings.Contains(src, "style=") {
				t.Errorf("%s has inline script or style", path)
			}
		}
	}
}

// TestImportsResolve checks every relative import of every module names an embedded file
// that exports the names imported, so a typo is caught without a browser.
func TestImportsResolve(t *testing.T) {
	t.Parallel()
	files := staticFiles(t)
	importRe := regexp.MustCompile(`(?s)import\s*\{([^}]*)\}\s*from\s*'([^']+)'`)
	exportRe := regexp.MustCompile(`export\s+(?:async\s+)?(?:function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)`)
	exports := map[string][]string{}
	for p, src := range files {
		for _, m := range exportRe.FindAllStringSubmatch(src, -1) {
			exports[p] = append(exports[p], m[1])
		}
	}
	for p, src := range files {
		if !strings.HasSuffix(p, ".js") {
			continue
		}
		for _, m := range importRe.FindAllStringSubmatch(src, -1) {
			target := filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(p), m[2])))
			if _, ok := files[target]; !ok {
				t.Errorf("%s imports %s: no such file", p, m[2])
				continue
			}
			for _, name := range strings.Split(m[1], ",") {
				name = strings.TrimSpace(name)
				name, _, _ = strings.Cut(name, " as ")
				if name != "" && !slices.Contains(exports[target], name) {
					t.Errorf("%s imports %s from %s, which does not export it", p, name, m[2])
				}
			}
		}
	}
	assets := web.Assets()
	for p := range files {
		url := "/" + strings.TrimPrefix(p, "static/")
		if url == "/index.html" {
			url = "/"
		}
		if !slices.Contains(assets, url) {
			t.Errorf("%s is not served (as %s)", p, url)
		}
	}
}
