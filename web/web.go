// Package web is Tapline's hosted web inspector: plain ES modules and CSS embedded in the
// binary, served at / and /assets/ with a strict Content-Security-Policy. There is no build
// step: the files under static/ are what the browser runs.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is sent with every page and asset. Scripts and styles come only from
// this origin (no inline code), images and media also from data: and blob: URLs the page
// builds itself, and the page talks only to this origin.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data: blob:; media-src 'self' data: blob:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// contentTypes maps the extensions under static/ to their types, so serving never depends
// on the host's mime tables.
var contentTypes = map[string]string{ //nolint:gochecknoglobals // lookup table
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
}

// Assets lists the embedded files by URL path ("/", "/assets/app.css", …).
func Assets() []string {
	m := mustLoad()
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	return out
}

func mustLoad() map[string]*asset {
	m, err := load()
	if err != nil {
		// The files are compiled in; failing to read them is a build defect.
		panic(err)
	}
	return m
}

func load() (map[string]*asset, error) {
	root, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	out := map[string]*asset{}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := contentTypes[path.Ext(p)]
		if ct == "" {
			ct = "application/octet-stream"
		}
		urlPath := "/" + p
		if p == "index.html" {
			urlPath = "/"
		}
		out[urlPath] = &asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out, err
}

// Handler serves the inspector: the page at / (and /index.html) and the files under
// /assets/. Anything else is 404. Responses carry the CSP and revalidate on every load
// (ETags make that cheap), so a deploy is picked up at once.
func Handler() http.Handler {
	assets := mustLoad()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		if p == "/index.html" {
			p = "/"
		}
		a, ok := assets[p]
		if !ok || (p != "/" && !strings.HasPrefix(p, "/assets/")) {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}
