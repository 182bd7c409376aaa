package inspector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/tapline/tapline/internal/secretbox"
)

// Frame limits: a frame over maxFrameSize is stored as {truncated, size, preview} with a
// previewSize preview; a response body or SSE event over maxBodySize is cut off and the
// request fails, so a hostile server cannot make the worker buffer without bound.
const (
	maxFrameSize = 64 << 10
	previewSize  = 4 << 10
	maxBodySize  = 4 << 20
)

// errBodyTooLarge fails a request whose response exceeds maxBodySize.
var errBodyTooLarge = errors.New("response from the target exceeds the size limit")

// frameSink receives every tapped frame, in order, as a function that encodes its event
// data: the encoding runs later, off the request's path (the persister calls it). size is
// about what the frame holds until then, in bytes.
type frameSink func(size int, build func() json.RawMessage)

// frameOverhead is about what a frame's event holds besides its body: HTTP status and
// headers, and the event itself.
const frameOverhead = 512

// tapTransport sits under go-sdk's client: it adds the session's headers, and records every
// request body, response status and headers, JSON response body and SSE event as a `frame`
// event, as the SDK reads them, without a goroutine of its own.
type tapTransport struct {
	next    http.RoundTripper
	headers map[string]string // added to every request to origin; values are secret
	bearer  string
	// origin is the target's scheme, host and port (see originOf): the secrets go to it
	// alone, not to where a redirect or a legacy SSE endpoint event points elsewhere.
	origin string
	secret []string // header names to redact in frames
	sink   frameSink
}

func (t *tapTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if originOf(req.URL) == t.origin {
		for k, v := range t.headers {
			req.Header.Set(k, v)
		}
		if t.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+t.bearer)
		}
	}
	if req.Body != nil && req.Body != http.NoBody {
		body, err := io.ReadAll(io.LimitReader(req.Body, maxBodySize+1))
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		t.emit("send", body, &frameHTTP{Method: req.Method, Headers: t.redact(req.Header)})
	}
	ctx, span := tracer.Start(req.Context(), "mcp http "+req.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", req.Method), attribute.String("server.address", req.URL.Host)))
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		span.RecordError(err)
		span.End()
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	span.End()
	head := &frameHTTP{Method: req.Method, Status: resp.StatusCode, Headers: t.redact(resp.Header)}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusAccepted {
		t.emit("recv", nil, head)
		return resp, nil
	}
	resp.Body = &tappedBody{ReadCloser: resp.Body, tap: t, head: head, sse: mediaType == "text/event-stream"}
	return resp, nil
}

// redact returns h for a frame: the values of sensitive headers and of the session's
// secret headers are redacted, and so is any value holding one of the secrets, whatever the
// header's name (a target may echo them back).
func (t *tapTransport) redact(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[k] = strings.Join(v, ", ")
	}
	out = secretbox.Redact(out, t.secret...)
	for k, v := range out {
		if t.holdsSecret(v) {
			out[k] = secretbox.Redacted
		}
	}
	return out
}

// holdsSecret reports whether v contains a secret of the session.
func (t *tapTransport) holdsSecret(v string) bool {
	if t.bearer != "" && strings.Contains(v, t.bearer) {
		return true
	}
	for _, s := range t.headers {
		if s != "" && strings.Contains(v, s) {
			return true
		}
	}
	return false
}

// originOf is u's scheme, host and port, the port made explicit, as a browser compares
// origins.
func originOf(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// frameHTTP is the HTTP context of a frame.
type frameHTTP struct {
	Method  string            `json:"method,omitempty"`
	Status  int               `json:"status,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Event   string            `json:"sse_event,omitempty"`
	EventID string            `json:"sse_id,omitempty"`
}

// emit records one frame. A body that is not JSON is kept as a string preview. body and h
// are not changed afterwards: every caller hands over a body it no longer writes to.
//
// The frame is encoded when the persister takes it up, off the request's path; a body too
// large to keep whole is cut to its preview at once, so that events waiting for a slow
// database do not hold up to maxBodySize each.
func (t *tapTransport) emit(dir string, body []byte, h *frameHTTP) {
	if len(body) > maxFrameSize {
		data := frameData(dir, body, h)
		t.sink(len(data), func() json.RawMessage { return data })
		return
	}
	t.sink(len(body)+frameOverhead, func() json.RawMessage { return frameData(dir, body, h) })
}

func frameData(dir string, body []byte, h *frameHTTP) json.RawMessage {
	f := map[string]any{"dir": dir}
	if h != nil {
		f["http"] = h
	}
	switch {
	case len(body) == 0:
		f["message"] = nil
	case len(body) > maxFrameSize:
		f["truncated"] = true
		f["size"] = len(body)
		f["preview"] = preview(body)
	case json.Valid(body) && utf8.Valid(body):
		// JSON text is UTF-8 (RFC 8259); encoding/json lets invalid bytes in strings pass,
		// PostgreSQL does not.
		f["message"] = json.RawMessage(body)
	default:
		f["invalid_json"] = true
		f["size"] = len(body)
		f["preview"] = preview(body)
	}
	out, err := json.Marshal(f)
	if err != nil {
		out, _ = json.Marshal(map[string]any{"dir": dir, "error": fmt.Sprintf("unrecordable frame: %v", err)})
	}
	return out
}

// preview is the first previewSize bytes as valid UTF-8: a character the cut splits is left
// out, and invalid bytes become U+FFFD.
func preview(b []byte) string {
	if len(b) > previewSize {
		b = b[:previewSize]
		// Back up to the start of the last character (at most utf8.UTFMax-1 bytes) and
		// drop it unless it is whole.
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i]
				}
				break
			}
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// tappedBody records a response as the SDK reads it: a JSON body whole at EOF, an SSE body
// one event at a time. It enforces maxBodySize on a JSON body and on each SSE event.
type tappedBody struct {
	io.ReadCloser
	tap     *tapTransport
	head    *frameHTTP
	sse     bool
	buf     []byte
	total   int
	done    bool
	headOut bool
}

func (b *tappedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.total += n
	b.buf = append(b.buf, p[:n]...)
	if b.sse {
		b.cutEvents()
		if len(b.buf) > maxBodySize {
			b.buf = nil
			return n, errBodyTooLarge
		}
	} else {
		if len(b.buf) > maxBodySize {
			b.finish()
			return n, errBodyTooLarge
		}
		if err == io.EOF {
			b.finish()
		}
	}
	return n, err
}

func (b *tappedBody) Close() error {
	if !b.sse {
		b.finish()
	}
	return b.ReadCloser.Close()
}

func (b *tappedBody) finish() {
	if b.done {
		return
	}
	b.done = true
	b.tap.emit("recv", b.buf, b.head)
	b.buf = nil
}

// cutEvents records every complete SSE event (ended by a blank line) in buf. Events without
// data (priming events, comments) are not frames.
func (b *tappedBody) cutEvents() {
	if bytes.IndexByte(b.buf, '\r') >= 0 {
		b.buf = bytes.ReplaceAll(b.buf, []byte("\r\n"), []byte("\n"))
	}
	for {
		raw, rest, ok := bytes.Cut(b.buf, []byte("\n\n"))
		if !ok {
			return
		}
		b.buf = rest
		var data []byte
		h := &frameHTTP{Method: b.head.Method}
		for line := range strings.SplitSeq(string(raw), "\n") {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				h.EventID = value
			case "event":
				h.Event = value
			case "data":
				if data != nil {
					data = append(data, '\n')
				}
				data = append(data, value...)
			}
		}
		if len(data) == 0 {
			continue
		}
		if !b.headOut {
			h.Status, h.Headers = b.head.Status, b.head.Headers
			b.headOut = true
		}
		b.tap.emit("recv", data, h)
	}
}
