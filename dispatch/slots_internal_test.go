package dispatch

import (
	"context"
	"testing"
	"time"
)

// TestSlotsFollowTheLimit checks a lane's attempt slots as its trigger's
// concurrency changes: a taker waits while all are used, a higher limit
// lets it in at once, and a lower one lets no new taker in until enough
// are given back.
func TestSlotsFollowTheLimit(t *testing.T) {
	t.Parallel()
	s := slots{limit: 1, freed: make(chan struct{})}
	ctx := context.Background()
	if !s.take(ctx) {
		t.Fatal("the first slot was not taken")
	}
	got := make(chan bool, 1)
	go func() { got <- s.take(ctx) }()
	select {
	case <-got:
		t.Fatal("a second slot was taken over a limit of 1")
	case <-time.After(100 * time.Millisecond):
	}
	s.setLimit(2)
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("take failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("raising the limit did not let the waiting taker in")
	}
	s.setLimit(1) // two in use over a limit of 1
	s.give()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if s.take(short) {
		t.Fatal("a slot was taken while the slots in use were not under the lowered limit")
	}
	s.give()
	if !s.take(ctx) {
		t.Fatal("no slot once all were given back")
	}
}
