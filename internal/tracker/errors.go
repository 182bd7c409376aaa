package tracker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors. Redis errors are mapped to these once, in mapErr; callers
// test them with errors.Is.
var (
	// ErrInvalidID reports an empty, too long or non-UTF-8 id, URI or node name.
	ErrInvalidID = errors.New("tracker: invalid id")
	// ErrNotFound reports an entry that is absent or whose node is dead.
	ErrNotFound = errors.New("tracker: not found")
	// ErrDuplicate reports an in-flight claim that someone already holds or
	// has completed. The error is a *DuplicateError carrying the stored result.
	ErrDuplicate = errors.New("tracker: duplicate request")
	// ErrLeaseHeld reports a lease claim while another holder owns the lease.
	// The error is a *LeaseHeldError.
	ErrLeaseHeld = errors.New("tracker: lease held by another node")
	// ErrLeaseLost reports that a lease or an in-flight claim was taken over
	// (or expired and was granted anew): Redis holds another token or a newer
	// epoch. The holder must stop acting for it.
	ErrLeaseLost = errors.New("tracker: lease lost")
	// ErrNotHeld reports an operation on a claim, lease or entry this node
	// does not hold, or no longer holds because it released or completed it.
	ErrNotHeld = errors.New("tracker: not held")
	// ErrNoResult reports that AwaitResult's wait ended before a result was stored.
	ErrNoResult = errors.New("tracker: no result yet")
	// ErrUnavailable wraps every failure to reach Redis, so callers can answer
	// 503 rather than 500.
	ErrUnavailable = errors.New("tracker: redis unavailable")
	// ErrNodeAlive is returned by UntrackNode for another node that is still alive.
	ErrNodeAlive = errors.New("tracker: node is alive")
	// ErrStopped reports a call on a tracker that was stopped.
	ErrStopped = errors.New("tracker: stopped")
)

// DuplicateError is returned by ClaimInFlight when the request is already in
// flight or done. It matches ErrDuplicate.
type DuplicateError struct {
	// Done is true when the winner stored its result.
	Done bool
	// Result is the stored result when Done.
	Result []byte
	// Holder is the node id of the claim holder while the request runs.
	Holder string
}

// Error says whether the duplicate found a stored result or a running holder.
func (e *DuplicateError) Error() string {
	if e.Done {
		return "tracker: duplicate request (result stored)"
	}
	return "tracker: duplicate request (in flight on " + e.Holder + ")"
}

// Is makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// LeaseHeldError is returned by ClaimLease when another holder owns the lease.
// It matches ErrLeaseHeld.
type LeaseHeldError struct {
	// Holder is the node id of the current holder.
	Holder string
	// Epoch is the current holder's fencing epoch.
	Epoch uint64
	// TTL is how long the lease has left unless its holder renews it (0 when unknown), so a
	// claimant can try again the moment a dead holder's lease lapses.
	TTL time.Duration
}

// Error names the holder and its epoch.
func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("tracker: lease held by %s at epoch %d", e.Holder, e.Epoch)
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// mapErr turns a go-redis error into the package's vocabulary, once:
// redis.Nil is ErrNotFound, context errors pass through (wrapped with op), and
// anything else wraps ErrUnavailable.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return ErrNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("tracker: %s: %w", op, err)
	default:
		return fmt.Errorf("tracker: %s: %w (%w)", op, ErrUnavailable, err)
	}
}
