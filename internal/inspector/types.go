package inspector

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tapline/tapline/internal/db"
)

// Errors callers map to HTTP statuses.
var (
	// ErrNotFound is db.ErrNotFound: an unknown id or another tenant's (404).
	ErrNotFound = db.ErrNotFound
	// ErrNotReady means the session is not connected (still connecting, failed or closed),
	// so the operation cannot reach the target (409).
	ErrNotReady = errors.New("session is not ready")
	// ErrConflict means the object's state does not allow the change, such as answering a
	// pending request twice (409).
	ErrConflict = errors.New("conflict")
	// ErrNoWorker means no worker answered within the command timeout: none held the
	// session, or the one that did is gone (504).
	ErrNoWorker = errors.New("no worker answered in time")
	// ErrWorkerTimeout means the worker holding the session, alive, did not answer within
	// the command timeout: the target may be slow (504).
	ErrWorkerTimeout = errors.New("the worker did not answer in time")
	// ErrTargetFailed means a request to the target failed without a JSON-RPC error: the
	// connection broke, the target answered an HTTP error or too large a response (502).
	ErrTargetFailed = errors.New("the target failed")
	// ErrLiveSessionLimit means the tenant already has its maximum of live sessions (409).
	ErrLiveSessionLimit = errors.New("live session limit reached")
)

// ValidationError names the input field at fault (400).
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// TargetRefusedError means the SSRF guard refused the target (422).
type TargetRefusedError struct {
	// Field is the input naming the refused target: target.url.
	Field  string
	Reason string
	Err    error
}

func (e *TargetRefusedError) Error() string { return "target refused: " + e.Reason }
func (e *TargetRefusedError) Unwrap() error { return e.Err }

// RemoteError is a JSON-RPC error the target server answered with. It is a normal outcome of
// an operation, not a Tapline failure: the API reports it as a 200 body for /rpc, and as a
// 502 problem for typed operations.
type RemoteError struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("target answered error %d: %s", e.Code, e.Message)
}

// Status is a session's connection state.
type Status string

// Session states.
const (
	StatusConnecting Status = "connecting"
	StatusReady      Status = "ready"
	StatusError      Status = "error"
	StatusClosed     Status = "closed"
)

// Live reports whether a worker should hold the session.
func (s Status) Live() bool { return s == StatusConnecting || s == StatusReady }

// Transport is how the worker talks to the target.
type Transport string

// Transports.
const (
	TransportStreamableHTTP Transport = "streamable_http"
	TransportSSE            Transport = "sse"
)

// Protocol versions a target may be pinned to; "auto" negotiates the newest both sides speak.
var ProtocolVersions = []string{"auto", "2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"} //nolint:gochecknoglobals // lookup table

// Target describes the MCP server a session connects to. Secrets (header values and the
// bearer token) are encrypted at rest and never returned.
type Target struct {
	Transport       Transport
	URL             string
	ProtocolVersion string // "auto" or a pinned version
	// Headers are sent with every request; values are secret.
	Headers map[string]string
	// BearerToken is sent as Authorization: Bearer; secret.
	BearerToken string
}

// RedactedTarget is a target as the API shows it.
type RedactedTarget struct {
	Transport       Transport `json:"transport"`
	URL             string    `json:"url"`
	ProtocolVersion string    `json:"protocol_version"`
	HeaderNames     []string  `json:"header_names"`
	HasBearerToken  bool      `json:"has_bearer_token"`
}

// Root is a filesystem root the client offers the server.
type Root struct {
	URI  string `json:"uri"`
	Name string `json:"name,omitempty"`
}

// Session is an inspector session.
type Session struct {
	ID              string
	TenantID        string
	Name            string
	Status          Status
	Error           string
	Target          RedactedTarget
	ServerInfo      json.RawMessage // {name, version, title?, …} or nil
	Capabilities    json.RawMessage
	Instructions    string
	ProtocolVersion string // negotiated
	Roots           []Root
	LoggingLevel    string
	Subscriptions   []string
	LastSeq         int64
	Epoch           int64
	OwnerNode       string
	CreatedBy       string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	ClosedAt        *time.Time
}

// EventType names an event.
type EventType string

// Event types (API.md, "Event JSON").
const (
	EventStatus          EventType = "status"
	EventFrame           EventType = "frame"
	EventNotification    EventType = "notification"
	EventProgress        EventType = "progress"
	EventCallResult      EventType = "call_result"
	EventPendingRequest  EventType = "pending_request"
	EventPendingResolved EventType = "pending_resolved"
	EventSessionMoved    EventType = "session_moved"
	EventWatchers        EventType = "watchers"
)

// EventTypes lists every type, for validating filters.
var EventTypes = []EventType{EventStatus, EventFrame, EventNotification, EventProgress, EventCallResult, //nolint:gochecknoglobals // lookup table
	EventPendingRequest, EventPendingResolved, EventSessionMoved, EventWatchers}

// Event is one entry of a session's log. Data is the type's JSON object.
type Event struct {
	Seq  int64           `json:"seq"`
	Type EventType       `json:"type"`
	At   time.Time       `json:"at"`
	Data json.RawMessage `json:"data"`
}

// CallStatus is a tool call's state.
type CallStatus string

// Call states. Queued calls have not reached the target yet; the others are as in API.md.
const (
	CallQueued      CallStatus = "queued"
	CallRunning     CallStatus = "running"
	CallSucceeded   CallStatus = "succeeded"
	CallFailed      CallStatus = "failed"
	CallCancelled   CallStatus = "cancelled"
	CallInterrupted CallStatus = "interrupted"
)

// Finished reports whether the call has ended.
func (s CallStatus) Finished() bool {
	return s == CallSucceeded || s == CallFailed || s == CallCancelled || s == CallInterrupted
}

// Progress is a call's latest progress notification.
type Progress struct {
	Progress float64  `json:"progress"`
	Total    *float64 `json:"total,omitempty"`
	Message  string   `json:"message,omitempty"`
}

// Call is an asynchronous tool call. Its JSON form is what an owner sends the api node
// waiting for it (Runtime.notifyCall); a column without a value is left out, so it decodes
// as the row reads.
type Call struct {
	ID         string
	SessionID  string
	Name       string
	Arguments  json.RawMessage `json:",omitempty"`
	Status     CallStatus
	Progress   *Progress       `json:",omitempty"`
	Result     json.RawMessage `json:",omitempty"` // the CallToolResult
	Error      json.RawMessage `json:",omitempty"` // {code?, message, data?}
	CreatedBy  string
	CreatedAt  time.Time
	FinishedAt *time.Time `json:",omitempty"`
}

// PendingKind is what a parked server→client request asks for.
type PendingKind string

// Pending kinds.
const (
	PendingSampling      PendingKind = "sampling"
	PendingElicitation   PendingKind = "elicitation"
	PendingInputRequired PendingKind = "input_required"
)

// PendingStatus is a parked request's state.
type PendingStatus string

// Pending states.
const (
	PendingWaiting   PendingStatus = "pending"
	PendingAnswered  PendingStatus = "answered"
	PendingExpired   PendingStatus = "expired"
	PendingCancelled PendingStatus = "cancelled"
)

// Pending is a server→client request (sampling, elicitation, MRTR input) waiting for a person.
type Pending struct {
	RequestID  string
	SessionID  string
	Kind       PendingKind
	Params     json.RawMessage
	Status     PendingStatus
	Answer     json.RawMessage
	AnsweredBy string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	AnsweredAt *time.Time
	// CallID is the tool call an input_required request belongs to.
	CallID string

	inputKey, requestState string
}

// PendingAnswer is a person's answer. For sampling: Result (a CreateMessageResult) or
// Error. For elicitation: Action ("accept", "decline", "cancel") and Content on accept.
type PendingAnswer struct {
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *RemoteError    `json:"error,omitempty"`
	Action  string          `json:"action,omitempty"`
	Content json.RawMessage `json:"content,omitempty"`
}

// Page is one page of a listing; NextCursor is empty on the last page.
type Page[T any] struct {
	Items      []T
	NextCursor string
}
