package inspector

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bytesPerRun is the heap allocated per call of f, averaged over runs calls.
func bytesPerRun(runs int, f func()) uint64 {
	f() // first-use allocations (type caches) are not per call
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// The go-sdk decodes every JSON-RPC message, and again every result and argument object,
// through a segmentio json.Decoder, which reads into a buffer of at least 32 KiB each time.
// A worker decodes a message per frame of every session it holds, so Tapline builds with a
// patched copy (third_party/segmentio-encoding, see its TAPLINE.md) that sizes the buffer
// to the message. Without the patch a small frame costs over 32 KiB of garbage.
func TestSDKDecodesASmallFrameWithoutA32KiBBuffer(t *testing.T) {
	frame := []byte(`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"hello from the benchmark"}],"isError":false}}`)
	var msg jsonrpc.Message
	perDecode := bytesPerRun(200, func() {
		var err error
		if msg, err = jsonrpc.DecodeMessage(frame); err != nil {
			t.Fatal(err)
		}
	})
	resp, ok := msg.(*jsonrpc.Response)
	if !ok {
		t.Fatalf("decoded %T", msg)
	}
	var res mcp.CallToolResult
	perResult := bytesPerRun(200, func() {
		if err := res.UnmarshalJSON(resp.Result); err != nil {
			t.Fatal(err)
		}
	})
	if text := res.Content[0].(*mcp.TextContent).Text; text != "hello from the benchmark" {
		t.Fatalf("result text %q", text)
	}
	const limit = 16 << 10
	if perDecode > limit || perResult > limit {
		t.Fatalf("a %d-byte frame allocates %d bytes to decode and its result %d (limit %d each): is the segmentio/encoding replace in go.mod gone?",
			len(frame), perDecode, perResult, limit)
	}
	t.Logf("a %d-byte frame: %d bytes allocated to decode, %d for its result", len(frame), perDecode, perResult)
}

// The go-sdk decodes every request's params again to read their _meta (the progress token,
// the protocol version), on the server and on the client before each send. The stock
// decoder gives every map it decodes room for 64 entries up front, over 4 KiB even for a
// _meta of one key; the patched copy lets the map grow from empty.
func TestSDKDecodesAMetaObjectWithoutRoomFor64Entries(t *testing.T) {
	raw := []byte(`{"_meta":{"progressToken":"p-7"},"content":[{"type":"text","text":"hello"}],"isError":false}`)
	var res mcp.CallToolResult
	perDecode := bytesPerRun(200, func() {
		res = mcp.CallToolResult{}
		if err := res.UnmarshalJSON(raw); err != nil {
			t.Fatal(err)
		}
	})
	if got := res.Meta["progressToken"]; got != "p-7" {
		t.Fatalf("_meta decoded as %v", res.Meta)
	}
	const limit = 3 << 10
	if perDecode > limit {
		t.Fatalf("a result with a one-key _meta allocates %d bytes to decode (limit %d): is the map size hint patch in third_party/segmentio-encoding/json/decode.go gone?", perDecode, limit)
	}
	t.Logf("a %d-byte result with _meta: %d bytes allocated to decode", len(raw), perDecode)
}

// Frames larger than the stock 32 KiB buffer, and every size around the buffer's edges,
// still decode whole.
func TestSDKDecodesFramesOfEverySize(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 32 << 10, 1 << 20} {
		text := strings.Repeat("x", n)
		frame, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": map[string]any{
			"content": []any{map[string]any{"type": "text", "text": text}}}})
		msg, err := jsonrpc.DecodeMessage(frame)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		var res mcp.CallToolResult
		if err := res.UnmarshalJSON(msg.(*jsonrpc.Response).Result); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got := res.Content[0].(*mcp.TextContent).Text; got != text {
			t.Fatalf("%d bytes: decoded %d bytes of text", n, len(got))
		}
		// A frame cut short, or blank input, is still refused.
		if _, err := jsonrpc.DecodeMessage(frame[:len(frame)-1]); err == nil {
			t.Fatalf("%d bytes: a truncated frame decoded", n)
		}
		if _, err := jsonrpc.DecodeMessage(bytes.Repeat([]byte(" "), n%7)); err == nil {
			t.Fatalf("%d bytes: blank input decoded", n)
		}
	}
}
