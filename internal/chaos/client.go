package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// restClient talks to the REST API with one API key.
type restClient struct {
	base string
	key  string
	hc   *http.Client

	mu       sync.Mutex
	statuses map[int]int // every status code answered, for the report
	bad      []string    // a sample of 500 answers
}

func newRESTClient(base, key string) *restClient {
	return &restClient{base: base, key: key, statuses: map[int]int{},
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// problemType returns the slug of a problem+json answer.
func (r *response) problemType() string {
	var p struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(r.body, &p)
	return strings.TrimPrefix(p.Type, "urn:tapline:problem:")
}

func (c *restClient) do(ctx context.Context, method, path string, body any, hdr map[string]string) (*response, error) {
	return c.doAt(ctx, c.base, method, path, body, hdr)
}

func (c *restClient) doAt(ctx context.Context, base, method, path string, body any, hdr map[string]string) (*response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.statuses[resp.StatusCode]++
	if resp.StatusCode == http.StatusInternalServerError && len(c.bad) < 10 {
		c.bad = append(c.bad, method+" "+path+": "+string(b))
	}
	c.mu.Unlock()
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func (c *restClient) statusCount(code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statuses[code]
}

type sessionJSON struct {
	ID              string   `json:"id"`
	Status          string   `json:"status"`
	Error           string   `json:"error"`
	ProtocolVersion string   `json:"protocol_version"`
	LoggingLevel    string   `json:"logging_level"`
	Subscriptions   []string `json:"subscriptions"`
	LastSeq         int64    `json:"last_seq"`
}

type callJSON struct {
	CallID string          `json:"call_id"`
	Status string          `json:"status"`
	Error  json.RawMessage `json:"error"`
}

func finished(status string) bool {
	switch status {
	case "succeeded", "failed", "cancelled", "interrupted":
		return true
	}
	return false
}

// retryable reports whether an answer may be retried with the same Idempotency-Key.
func retryable(r *response, err error) bool {
	if err != nil {
		return true
	}
	return r.status >= 500 || r.status == http.StatusTooManyRequests ||
		(r.status == http.StatusConflict && r.problemType() == "idempotency-in-progress")
}

// sseReader follows one session's event stream through the proxy for as long as ctx lives,
// reconnecting with Last-Event-ID after every drop, and records what it saw.
type sseReader struct {
	client  *restClient
	session string

	mu         sync.Mutex
	last       int64
	seen       map[int64]int
	dups       int
	gaps       int
	reconnects int
}

func newSSEReader(c *restClient, session string) *sseReader {
	return &sseReader{client: c, session: session, seen: map[int64]int{}}
}

func (s *sseReader) lastSeq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *sseReader) run(ctx context.Context) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableKeepAlives: true}}
	for ctx.Err() == nil {
		_ = s.follow(ctx, hc)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.reconnects++
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *sseReader) follow(ctx context.Context, hc *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.client.base+"/v1/sessions/"+s.session+"/events/stream", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.client.key)
	req.Header.Set("Accept", "text/event-stream")
	if last := s.lastSeq(); last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(last, 10))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	s.client.mu.Lock()
	s.client.statuses[resp.StatusCode]++
	s.client.mu.Unlock()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("stream: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 8<<20)
	var id int64 = -1
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id, _ = strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
		case line == "":
			if id >= 0 {
				s.record(id)
			}
			id = -1
		}
	}
	return sc.Err()
}

func (s *sseReader) record(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[seq]++
	switch {
	case seq <= s.last:
		s.dups++
		return
	case seq > s.last+1:
		s.gaps += int(seq - s.last - 1)
	}
	s.last = seq
}

// missing counts seqs in 1..upTo this reader never saw, and deliveries beyond the first.
func (s *sseReader) account(upTo int64) (missing, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q := int64(1); q <= upTo; q++ {
		if s.seen[q] == 0 {
			missing++
		}
	}
	for _, n := range s.seen {
		if n > 1 {
			dups += n - 1
		}
	}
	return missing, dups
}
