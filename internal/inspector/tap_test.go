package inspector

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tapline/tapline/internal/netguard"
)

// Frames are recorded as valid UTF-8 JSON whatever the target sends, keeping as much of it as
// the limits allow: PostgreSQL refuses invalid UTF-8 in jsonb, and encoding/json lets it pass.
func TestFrameDataIsValidUTF8JSON(t *testing.T) {
	big := append([]byte("x"), bytes.Repeat([]byte("é"), maxFrameSize)...) // the preview's cut splits an é
	for _, tc := range []struct {
		name        string
		body        []byte
		wantMessage bool
		wantPreview string // a prefix the preview must have, when not wantMessage
	}{
		{"JSON", []byte(`{"jsonrpc":"2.0","id":1,"result":{}}`), true, ""},
		{"InvalidUTF8InAString", []byte("{\"text\":\"a\xffb\"}"), false, "{\"text\":\"a\uFFFDb\"}"},
		{"InvalidUTF8First", append([]byte{0xff}, bytes.Repeat([]byte("x"), maxFrameSize)...), false, "\uFFFDxxx"},
		{"CutInsideACharacter", big, false, "xéé"},
		{"NotJSON", []byte("<html>bad gateway</html>"), false, "<html>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := frameData("recv", tc.body, nil)
			if !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("frame is not valid UTF-8 JSON: %q", out)
			}
			var f struct {
				Message json.RawMessage `json:"message"`
				Preview string          `json:"preview"`
				Size    int             `json:"size"`
			}
			if err := json.Unmarshal(out, &f); err != nil {
				t.Fatal(err)
			}
			if tc.wantMessage {
				if !bytes.Equal(f.Message, tc.body) {
					t.Fatalf("message %s, want the body as it came", f.Message)
				}
				return
			}
			if f.Message != nil || f.Size != len(tc.body) || !strings.HasPrefix(f.Preview, tc.wantPreview) || utf8.RuneCountInString(f.Preview) > previewSize {
				t.Fatalf("frame %s: want a preview starting %q of at most %d bytes and size %d", out, tc.wantPreview, previewSize, len(tc.body))
			}
			if strings.HasSuffix(f.Preview, "\uFFFD") && tc.name == "CutInsideACharacter" {
				t.Fatalf("the character the cut split became U+FFFD instead of being left out")
			}
		})
	}
}

// The session's secrets go to its target's origin alone: not to another host a redirect
// names (net/http drops Authorization there, and the tap must not put it back), nor to one a
// legacy SSE endpoint event names. A secret the target echoes back under another header's
// name is redacted in the frame all the same.
func TestTapSendsSecretsToTheTargetOriginOnly(t *testing.T) {
	guard, err := netguard.New(&netguard.Config{AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan http.Header, 2)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	defer other.Close()
	// The other host is "localhost" where the target is 127.0.0.1: another origin.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("X-Echo", "you sent "+r.Header.Get("X-Tenant-Ref")+" and "+r.Header.Get("Authorization"))
		http.Redirect(w, r, otherURL+"/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer target.Close()
	u, _ := url.Parse(target.URL)
	var frames []json.RawMessage
	client := &http.Client{Transport: &tapTransport{
		next: guard.Transport(), headers: map[string]string{"X-Tenant-Ref": "s3cr3t-header"}, bearer: "s3cr3t-bearer",
		origin: originOf(u), secret: []string{"X-Tenant-Ref"},
		sink: func(_ int, build func() json.RawMessage) { frames = append(frames, build()) },
	}, CheckRedirect: guard.CheckRedirect}
	res, err := client.Post(target.URL+"/mcp", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if h := <-seen; h.Get("Authorization") != "Bearer s3cr3t-bearer" || h.Get("X-Tenant-Ref") != "s3cr3t-header" {
		t.Fatalf("the target itself did not get its secrets: %v", h)
	}
	if h := <-seen; h.Get("Authorization") != "" || h.Get("X-Tenant-Ref") != "" {
		t.Fatalf("another origin got the secrets after a redirect: %v", h)
	}
	for _, f := range frames {
		if bytes.Contains(f, []byte("s3cr3t")) {
			t.Fatalf("a frame holds a secret: %s", f)
		}
	}
	if len(frames) < 2 {
		t.Fatalf("%d frames recorded, want the request and the redirect at least", len(frames))
	}
}

func TestOriginOfMakesThePortExplicit(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"https://MCP.example.com/mcp", "https://mcp.example.com:443/other"},
		{"http://127.0.0.1/sse", "http://127.0.0.1:80/messages?session=1"},
		{"http://[::1]:8080/a", "http://[::1]:8080/b"},
	} {
		a, _ := url.Parse(tc.a)
		b, _ := url.Parse(tc.b)
		if originOf(a) != originOf(b) {
			t.Errorf("%s and %s: %q != %q", tc.a, tc.b, originOf(a), originOf(b))
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"https://mcp.example.com/", "http://mcp.example.com/"},
		{"https://mcp.example.com/", "https://mcp.example.com:8443/"},
		{"https://mcp.example.com/", "https://evil.example.com/"},
	} {
		a, _ := url.Parse(tc.a)
		b, _ := url.Parse(tc.b)
		if originOf(a) == originOf(b) {
			t.Errorf("%s and %s share the origin %q", tc.a, tc.b, originOf(a))
		}
	}
}
