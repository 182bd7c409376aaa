package inspector

import (
	"context"
	"errors"
	"testing"

	"github.com/tapline/tapline/internal/db"
)

// A call's recorded progress is the highest the server sent, whatever order the writes land
// in: the last notifications/progress is often handled after the result it preceded, and two
// progress writes may overtake each other. Another tenant's call, and a stale owner, change
// nothing.
func TestCallProgressIsTheHighestSent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShardTest(t)
	mineTenant, mine := s.tenant(1)
	theirTenant, theirs := s.tenant(1)
	insertCall := func(tenantID, sessionID string) string {
		t.Helper()
		id := newID()
		if _, err := s.d.Pool.Exec(ctx, `insert into session_calls (id, tenant_id, session_id, name, status, epoch)
			values ($1, $2, $3, 'slow', 'running', 1)`, id, tenantID, sessionID); err != nil {
			t.Fatal(err)
		}
		return id
	}
	call, theirCall := insertCall(mineTenant, mine[0]), insertCall(theirTenant, theirs[0])
	store := NewStore(s.d.AppPool)
	total := 5.0
	progress := func(tenantID, sessionID, callID string, epoch int64, p float64) bool {
		t.Helper()
		_, applied, err := store.updateCallAsOwner(ctx, tenantID, sessionID, callID, epoch, callUpdate{Progress: &Progress{Progress: p, Total: &total}})
		if err != nil && !errors.Is(err, db.ErrStaleEpoch) && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		return applied && err == nil
	}
	stored := func(tenantID, sessionID, callID string) (CallStatus, float64) {
		t.Helper()
		c, err := store.GetCall(ctx, tenantID, sessionID, callID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Progress == nil {
			return c.Status, -1
		}
		return c.Status, c.Progress.Progress
	}

	if !progress(mineTenant, mine[0], call, 1, 3) {
		t.Fatal("progress 3 of a running call was not recorded")
	}
	if progress(mineTenant, mine[0], call, 1, 2) {
		t.Error("progress 2, overtaken by 3, was recorded over it")
	}
	// The result lands before the last progress.
	if _, applied, err := store.updateCallAsOwner(ctx, mineTenant, mine[0], call, 1,
		callUpdate{Status: CallSucceeded, Result: []byte(`{"content":[]}`)}); err != nil || !applied {
		t.Fatalf("finish = %v, %v", applied, err)
	}
	if progress(mineTenant, mine[0], call, 2, 5) {
		t.Error("a stale owner's progress was recorded")
	}
	if progress(theirTenant, mine[0], call, 1, 5) {
		t.Error("progress written as another tenant was recorded")
	}
	if !progress(mineTenant, mine[0], call, 1, 5) {
		t.Error("the last progress, handled after the result, was not recorded")
	}
	if st, p := stored(mineTenant, mine[0], call); st != CallSucceeded || p != 5 {
		t.Errorf("call = %s at progress %v, want succeeded at 5", st, p)
	}
	if progress(mineTenant, mine[0], call, 1, 4) {
		t.Error("progress 4 after 5 was recorded")
	}
	if st, p := stored(theirTenant, theirs[0], theirCall); st != CallRunning || p != -1 {
		t.Errorf("the other tenant's call = %s at progress %v, want running without progress", st, p)
	}
}
