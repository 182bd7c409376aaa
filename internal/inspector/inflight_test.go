package inspector

import (
	"sync"
	"testing"
	"time"
)

// A closing connection waits for what runs on it while the target may still start more: the
// wait ends once everything that entered has left, and entering again while somebody waits
// is fine (a sync.WaitGroup may panic then).
func TestInflightMayBeWaitedOnWhileMoreEnters(t *testing.T) {
	var f inflight
	select {
	case <-f.idle():
	default:
		t.Fatal("nothing ran, yet idle is not closed")
	}
	f.enter()
	idle := f.idle()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			f.enter()
			time.Sleep(time.Millisecond)
			f.leave()
		})
	}
	select {
	case <-idle:
		t.Fatal("idle while the first is still running")
	case <-time.After(20 * time.Millisecond):
	}
	f.leave()
	wg.Wait()
	select {
	case <-f.idle():
	case <-time.After(time.Second):
		t.Fatal("not idle once everything left")
	}
	select {
	case <-idle:
	default:
		t.Fatal("a wait that began while the first ran did not end")
	}
}
