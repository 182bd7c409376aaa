package audit

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

func TestCanonicalJSONFollowsRFC8785(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		// RFC 8785 §3.2.2.3 and appendix B number samples.
		{"Numbers", `[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001, -0, 1e21, 1e20, 1e-7, 1e-6, 9007199254740993]`,
			`[333333333.3333333,1e+30,4.5,0.002,1e-27,0,1e+21,100000000000000000000,1e-7,0.000001,9007199254740992]`},
		// §3.2.2.2 string escaping.
		{"Strings", `"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/<>&\u2028"`, "\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/<>&\u2028\""},
		// §3.2.3 sorting by UTF-16 code units.
		{"KeyOrder", `{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}`,
			"{\"\\r\":2,\"1\":4,\"\u0080\":6,\"ö\":7,\"€\":1,\"😀\":5,\"\ufb33\":3}"},
		{"Nested", ` { "b" : [ true , null , { "z":1, "a" : "x" } ], "a": {} } `, `{"a":{},"b":[true,null,{"a":"x","z":1}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canonicalJSON(json.RawMessage(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("canonical\n got %s\nwant %s", got, tc.want)
			}
			// Canonical form is a fixed point.
			again, err := canonicalJSON(json.RawMessage(got))
			if err != nil || string(again) != string(got) {
				t.Fatalf("not idempotent: %s (%v)", again, err)
			}
		})
	}
}

func TestFormatNumberMatchesECMAScript(t *testing.T) {
	t.Parallel()
	for f, want := range map[float64]string{
		1: "1", -1.5: "-1.5", 123456789012345680000: "123456789012345680000", 0.1: "0.1",
		1e-5: "0.00001", 1.5e-7: "1.5e-7", 5e-324: "5e-324", math.MaxFloat64: "1.7976931348623157e+308",
		0.30000000000000004: "0.30000000000000004", 1e300: "1e+300",
	} {
		if got := formatNumber(f); got != want {
			t.Errorf("formatNumber(%v) = %s, want %s", f, got, want)
		}
	}
}

func TestDetailsRedactSecrets(t *testing.T) {
	t.Parallel()
	got, err := canonicalDetails(map[string]any{
		"token": "abc", "token_type": "Bearer", "nested": map[string]any{"Password": "x", "ok": "y\x00z"},
		"headers": []any{map[string]any{"Authorization": "Bearer zzz"}}, "api_key_id": "k1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"api_key_id":"k1","headers":[{"Authorization":"[redacted]"}],"nested":{"Password":"[redacted]","ok":"yz"},"token":"[redacted]","token_type":"Bearer"}`
	if string(got) != want {
		t.Fatalf("details\n got %s\nwant %s", got, want)
	}
	if _, err := canonicalDetails([]int{1}); err == nil {
		t.Fatal("non-object details accepted")
	}
	if d, _ := canonicalDetails(nil); string(d) != "{}" {
		t.Fatalf("nil details = %s", d)
	}
}

// compareUTF16 orders keys exactly as encoding both strings to UTF-16 would, for ASCII,
// the rest of the BMP (around the surrogate range), supplementary characters, invalid
// UTF-8 and prefixes of each other.
func TestCompareUTF16MatchesEncoding(t *testing.T) {
	encoded := func(a, b string) int { return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b))) }
	alphabet := []string{"a", "b", "Z", "é", "\u00ff", "\ud7ff", "\ue000", "\uffee", "\ufffd", "😀", "𝄞", "\U0010ffff", "\xff", "\xe2\x82", ""}
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		var sb strings.Builder
		for range rng.IntN(5) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	for range 200000 {
		a, b := word(), word()
		if got, want := compareUTF16(a, b), encoded(a, b); got != want {
			t.Fatalf("compareUTF16(%q, %q) = %d, encoding says %d", a, b, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { compareUTF16("aé😀x", "aé😀\ue000") }); n != 0 {
		t.Fatalf("compareUTF16 allocates %v times", n)
	}
}
