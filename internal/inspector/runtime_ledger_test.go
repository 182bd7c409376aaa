package inspector

import (
	"fmt"
	"slices"
	"testing"
)

func TestCommandLedgerRunsEachCommandOnce(t *testing.T) {
	l := newCommandLedger(2)
	if _, run := l.begin("slow", "api-1"); !run {
		t.Fatal("a new command did not run")
	}
	// Repeats while it runs join it, each api node once.
	for _, node := range []string{"api-1", "api-2", "", "api-2"} {
		if rep, run := l.begin("slow", node); run || rep != nil {
			t.Fatalf("a repeat from %q = %v, %v; want it to wait", node, rep, run)
		}
	}
	// Finished commands past the bound do not push the running one out.
	for i := range 5 {
		id := fmt.Sprint("fast-", i)
		l.begin(id, "api-1")
		l.finish(id, &Reply{ID: id}, true)
	}
	if rep, run := l.begin("slow", "api-3"); run || rep != nil {
		t.Fatalf("the running command was forgotten: %v, %v", rep, run)
	}
	done := &Reply{ID: "slow", Result: []byte(`{}`)}
	if askers := l.finish("slow", done, true); !slices.Equal(askers, []string{"api-1", "api-2", "api-3"}) {
		t.Fatalf("reply goes to %v", askers)
	}
	if rep, run := l.begin("slow", "api-4"); run || rep != done {
		t.Fatalf("a repeat of the finished command = %v, %v; want its reply", rep, run)
	}
	// The bound holds: the oldest finished commands are forgotten.
	if len(l.items) != 2 || len(l.finished) != 2 {
		t.Fatalf("%d commands remembered (%d finished), want 2", len(l.items), len(l.finished))
	}
}

func TestCommandLedgerForgetsWhatItDidNotDo(t *testing.T) {
	l := newCommandLedger(10)
	l.begin("moved", "api-1")
	l.begin("moved", "api-2")
	if askers := l.finish("moved", &Reply{Code: codeNotOwner}, false); len(askers) != 2 {
		t.Fatalf("not-owner reply goes to %v, want both askers", askers)
	}
	if _, run := l.begin("moved", "api-1"); !run {
		t.Fatal("a command the worker did not hold the session for is not run again")
	}
	if len(l.items) != 1 || len(l.finished) != 0 {
		t.Fatalf("ledger keeps %d items, %d finished", len(l.items), len(l.finished))
	}
}
