package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/tapline/tapline/internal/redisconn"
)

// Op names a command the api sends to the worker that owns a session.
type Op string

// Commands. The fast ones answer synchronously; call, cancel_call, answer_pending, close,
// reconnect and watchers are doorbells whose durable state is already in PostgreSQL.
const (
	OpListTools             Op = "tools/list"
	OpListResources         Op = "resources/list"
	OpListResourceTemplates Op = "resources/templates/list"
	OpReadResource          Op = "resources/read"
	OpSubscribe             Op = "resources/subscribe"
	OpUnsubscribe           Op = "resources/unsubscribe"
	OpListPrompts           Op = "prompts/list"
	OpGetPrompt             Op = "prompts/get"
	OpComplete              Op = "completion/complete"
	OpSetLoggingLevel       Op = "logging/setLevel"
	OpPing                  Op = "ping"
	OpRPC                   Op = "rpc"
	OpSetRoots              Op = "roots/set"
	OpStartCall             Op = "call"
	OpCancelCall            Op = "cancel_call"
	OpAnswerPending         Op = "answer_pending"
	OpClose                 Op = "close"
	OpReconnect             Op = "reconnect"
	OpWatchers              Op = "watchers"
)

// Command is one message on a worker's inbox. ID makes redelivery harmless: a worker that
// sees an id twice answers with the first result.
type Command struct {
	ID       string            `json:"id"`
	Op       Op                `json:"op"`
	TenantID string            `json:"tenant_id"`
	Session  string            `json:"session_id"`
	Params   json.RawMessage   `json:"params,omitempty"`
	ReplyTo  string            `json:"reply_to,omitempty"`
	Deadline time.Time         `json:"deadline"`
	Trace    map[string]string `json:"trace,omitempty"`
}

// Reply answers a command.
type Reply struct {
	ID     string          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	// Remote is a JSON-RPC error from the target server.
	Remote *RemoteError `json:"remote,omitempty"`
	// Error is Tapline's own failure; Code says which sentinel it maps to.
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// Reply codes map worker-side failures back to api-side errors.
const (
	codeNotReady   = "not_ready"
	codeNotOwner   = "not_owner"
	codeValidation = "validation"
	codeNotFound   = "not_found"
	// codeTimeout: the command's deadline passed while the worker waited on the target. The
	// api, whose wait ends at the same deadline, answers worker-timeout either way, whichever
	// of the two comes first.
	codeTimeout = "timeout"
)

func (r *Reply) err() error {
	switch {
	case r.Remote != nil:
		return r.Remote
	case r.Error == "":
		return nil
	case r.Code == codeNotReady:
		return fmt.Errorf("%w: %s", ErrNotReady, r.Error)
	case r.Code == codeNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, r.Error)
	case r.Code == codeValidation:
		return &ValidationError{Field: "params", Reason: r.Error}
	case r.Code == codeNotOwner:
		return errNotOwner
	case r.Code == codeTimeout:
		return fmt.Errorf("%w: %s", ErrWorkerTimeout, r.Error)
	}
	// Everything else went wrong between the worker and the target.
	return fmt.Errorf("%w: %s", ErrTargetFailed, r.Error)
}

var errNotOwner = errors.New("worker does not own the session")

// Key layout of the command bus. A node's inbox is a stream with a hash tag of its own.
func inboxKey(prefix, node string) string     { return prefix + ":inbox:{" + node + "}" }
func replyChannel(prefix, node string) string { return prefix + ":reply:{" + node + "}" }
func wakeChannel(prefix string) string        { return prefix + ":wake" }

// inboxMaxLen bounds a node's inbox; commands are short-lived, so old ones are trimmed.
const inboxMaxLen = 10000

// commandClient sends commands from an api node and collects their replies.
type commandClient struct {
	rdb    redis.UniversalClient
	prefix string
	node   string
	logger *slog.Logger

	mu sync.Mutex
	// waiters are the replies awaited, by id. An id may have several: requests with the
	// same Idempotency-Key share their command's id.
	waiters map[string][]chan Reply
	pubsub  *redis.PubSub
	done    chan struct{}
	stopped chan struct{}
}

func newCommandClient(rdb redis.UniversalClient, prefix, node string, logger *slog.Logger) *commandClient {
	return &commandClient{rdb: rdb, prefix: prefix, node: node, logger: logger, waiters: map[string][]chan Reply{}}
}

// start subscribes to this node's reply channel.
func (c *commandClient) start(ctx context.Context) error {
	c.pubsub = c.rdb.Subscribe(ctx, replyChannel(c.prefix, c.node))
	c.done = make(chan struct{})
	c.stopped = make(chan struct{})
	ch := c.pubsub.Channel(redis.WithChannelSize(1024))
	go func() {
		defer close(c.stopped)
		for {
			select {
			case <-c.done:
				return
			case msg, ok := <-ch:
				if !ok {
					return
				}
				var r Reply
				if err := json.Unmarshal([]byte(msg.Payload), &r); err != nil {
					c.logger.Warn("bad command reply", slog.Any("error", err))
					continue
				}
				c.mu.Lock()
				for _, w := range c.waiters[r.ID] {
					select {
					case w <- r:
					default:
					}
				}
				c.mu.Unlock()
			}
		}
	}()
	return nil
}

func (c *commandClient) stop() {
	if c.pubsub == nil {
		return
	}
	close(c.done)
	_ = c.pubsub.Close()
	<-c.stopped
}

// send appends cmd to node's inbox without waiting for a reply.
func (c *commandClient) send(ctx context.Context, node string, cmd *Command) error {
	cmd.Trace = map[string]string{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(cmd.Trace))
	body, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	key := inboxKey(c.prefix, node)
	pipe := c.rdb.Pipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: inboxMaxLen, Approx: true, Values: []string{"c", string(body)}})
	pipe.Expire(ctx, key, 10*time.Minute)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("send command: %w", redisconn.InterpretError(err))
	}
	return nil
}

// request sends cmd to node and waits for its reply until ctx ends. Redelivery of the same
// command id after a timeout is the caller's choice.
func (c *commandClient) request(ctx context.Context, node string, cmd *Command) (*Reply, error) {
	cmd.ReplyTo = c.node
	w, stop := c.await(cmd.ID)
	defer stop()
	if err := c.send(ctx, node, cmd); err != nil {
		return nil, err
	}
	select {
	case r := <-w:
		return &r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// callNoticeID is the reply id under which a worker sends a finished call to the api node
// waiting for it.
func callNoticeID(callID string) string { return "call:" + callID }

// awaitNotice registers for the finished call callID, sent by its owner to this node, and
// returns the channel it arrives on and the function that unregisters.
func (c *commandClient) awaitNotice(callID string) (<-chan Reply, func()) {
	return c.await(callNoticeID(callID))
}

// await registers for the reply with id and returns the channel it arrives on and the
// function that unregisters.
func (c *commandClient) await(id string) (<-chan Reply, func()) {
	w := make(chan Reply, 1)
	c.mu.Lock()
	c.waiters[id] = append(c.waiters[id], w)
	c.mu.Unlock()
	return w, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		rest := slices.DeleteFunc(c.waiters[id], func(x chan Reply) bool { return x == w })
		if len(rest) == 0 {
			delete(c.waiters, id)
		} else {
			c.waiters[id] = rest
		}
	}
}

// wake tells every worker to look for sessions that need an owner now.
func (c *commandClient) wake(ctx context.Context) {
	_ = c.rdb.Publish(ctx, wakeChannel(c.prefix), "1").Err()
}
