package inspector

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
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
