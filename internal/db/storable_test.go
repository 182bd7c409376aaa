package db_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
)

// PostgreSQL refuses what a target may send, as ErrInvalidInput, and takes it once made
// storable.
func TestPostgresRefusesWhatStorableFixes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	for _, c := range []struct {
		sql string
		raw any
		fix func(any) any
	}{
		{`select $1::jsonb`, []byte(`{"t":"a\u0000b"}`), func(v any) any { return db.StorableJSON(v.([]byte)) }},
		{`select $1::text`, "a\x00b", func(v any) any { return db.StorableText(v.(string)) }},
		{`select $1::text`, "a\xffb", func(v any) any { return db.StorableText(v.(string)) }},
	} {
		var out any
		err := db.InterpretError(pool.QueryRow(ctx, c.sql, c.raw).Scan(&out))
		if !errors.Is(err, db.ErrInvalidInput) {
			t.Errorf("%s with %q: error %v, want ErrInvalidInput", c.sql, c.raw, err)
		}
		if err := pool.QueryRow(ctx, c.sql, c.fix(c.raw)).Scan(&out); err != nil {
			t.Errorf("%s with %q made storable: %v", c.sql, c.raw, err)
		}
	}
}

var storableJSONCases = []struct{ name, in, want string }{
	{"in a value", `{"t":"a\u0000b"}`, `{"t":"a\ufffdb"}`},
	{"in a key", `{"\u0000":1}`, `{"\ufffd":1}`},
	{"several", `["\u0000\u0000",{"x":"y\u0000"}]`, `["\ufffd\ufffd",{"x":"y\ufffd"}]`},
	{"followed by a digit", `"\u00001"`, `"\ufffd1"`},
	{"after an escaped quote", `"\"\u0000"`, `"\"\ufffd"`},
	{"after an escaped backslash", `"\\\u0000"`, `"\\\ufffd"`},
	{"a string ending in an escaped backslash", `{"a":"\\","b":"\u0000"}`, `{"a":"\\","b":"\ufffd"}`},
	{"escaped backslash then u0000", `{"t":"\\u0000"}`, `{"t":"\\u0000"}`},
	{"two escaped backslashes then u0000", `"\\\\u0000"`, `"\\\\u0000"`},
	{"both", `["\\u0000","\u0000"]`, `["\\u0000","\ufffd"]`},
	{"other escapes", `"\u0001\u00a0\n"`, `"\u0001\u00a0\n"`},
	{"outside a string (not JSON)", `\u0000`, `\u0000`},
	{"cut off after the escape", `"\u0000\`, `"\ufffd\`},
	{"empty", ``, ``},
}

func TestStorableJSONReplacesNULEscapesInStrings(t *testing.T) {
	for _, c := range storableJSONCases {
		in := []byte(c.in)
		got := db.StorableJSON(in)
		if string(got) != c.want {
			t.Errorf("%s: StorableJSON(%s) = %s, want %s", c.name, c.in, got, c.want)
		}
		if string(in) != c.in {
			t.Errorf("%s: the input was modified: %s", c.name, in)
		}
	}
}

// The check runs on every event: with nothing to replace it returns its input as it is.
func TestStorableJSONDoesNotAllocateWithNothingToReplace(t *testing.T) {
	for _, in := range [][]byte{benchFrame(), []byte(`{"t":"\\u0000"}`)} {
		var out []byte
		if n := testing.AllocsPerRun(100, func() { out = db.StorableJSON(in) }); n != 0 {
			t.Errorf("StorableJSON(%s) allocates %v times", in, n)
		}
		if len(in) > 0 && &out[0] != &in[0] {
			t.Errorf("StorableJSON(%s) did not return its input", in)
		}
	}
}

// FuzzStorableJSON checks that what comes out is the same JSON with each U+0000 in a
// string or key read as U+FFFD, and that no U+0000 is left.
func FuzzStorableJSON(f *testing.F) {
	for _, c := range storableJSONCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out := db.StorableJSON(in)
		if !bytes.Equal(in, orig) {
			t.Fatal("the input was modified")
		}
		if len(out) != len(in) {
			t.Fatalf("length %d, want %d", len(out), len(in))
		}
		if !json.Valid(in) {
			return
		}
		var before, after any
		if err := json.Unmarshal(in, &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("%s is no longer JSON: %v", out, err)
		}
		want, ok := withoutNUL(before)
		if !ok {
			return // two keys became one; jsonb keeps the last, as for any duplicate
		}
		if !reflect.DeepEqual(after, want) {
			t.Fatalf("StorableJSON(%s) = %s", in, out)
		}
	})
}

// withoutNUL is v with U+0000 read as U+FFFD in every string and key; ok is false when
// that makes two keys of an object equal.
func withoutNUL(v any) (_ any, ok bool) {
	switch v := v.(type) {
	case string:
		return strings.ReplaceAll(v, "\x00", "\uFFFD"), true
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			if out[i], ok = withoutNUL(x); !ok {
				return nil, false
			}
		}
		return out, true
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			k = strings.ReplaceAll(k, "\x00", "\uFFFD")
			if _, dup := out[k]; dup {
				return nil, false
			}
			if out[k], ok = withoutNUL(x); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return v, true
}

func TestStorableText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":             "plain",
		"é and ✓":           "é and ✓",
		"a\x00b":            "ab",
		"a\xffb":            "a\uFFFDb",
		"\x00\xff\x00\xfe!": "\uFFFD!",
		"":                  "",
	} {
		if got := db.StorableText(in); got != want {
			t.Errorf("StorableText(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = db.StorableText("nothing to do here") }); n != 0 {
		t.Errorf("StorableText allocates %v times for storable text", n)
	}
}

func BenchmarkStorableJSON(b *testing.B) {
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"clean", benchFrame()},
		{"escaped_backslash", bytes.Replace(benchFrame(), []byte("step"), []byte(`\\u0000`), 1)},
		{"nul", bytes.Replace(benchFrame(), []byte("step"), []byte(`\u0000`), 1)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.in)))
			for b.Loop() {
				_ = db.StorableJSON(c.in)
			}
		})
	}
}

// benchFrame is a typical 300-byte frame event, as the persister's benchmarks use.
func benchFrame() []byte {
	b, _ := json.Marshal(map[string]any{"dir": "recv", "message": map[string]any{
		"jsonrpc": "2.0", "method": "notifications/progress",
		"params": map[string]any{"progressToken": "01a2012e-b35c-7c93-9f53-55f24d715636", "progress": 12, "total": 100, "message": "working on it, step twelve of one hundred"},
	}, "http": map[string]any{"method": "POST", "sse_event": "message", "sse_id": "0_12"}})
	return b
}
