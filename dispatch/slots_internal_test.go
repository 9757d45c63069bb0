package dispatch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/triggerd/triggerd/internal/waittest"
)

// TestSlotsFollowTheLimit checks a lane's attempt slots as its trigger's
// concurrency changes: a taker waits while all are used, a higher limit
// lets it in at once, and a lower one lets no new taker in until enough
// are given back.
func TestSlotsFollowTheLimit(t *testing.T) {
	t.Parallel()
	s := slots{limit: 1}
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

// TestSlotsHandEachSlotToTheFirstInLine: a slot given back goes to the
// taker that waited longest, and to it alone; a taker that gives up
// leaves its place in line, and a slot handed to it as it gives up goes on
// to the next.
func TestSlotsHandEachSlotToTheFirstInLine(t *testing.T) {
	t.Parallel()
	s := slots{limit: 1}
	ctx := context.Background()
	s.take(ctx)
	got := make(chan int, 3)
	quit, giveUp := context.WithCancel(ctx)
	for i := range 3 {
		c := ctx
		if i == 0 {
			c = quit // the first in line gives up
		}
		go func() {
			if s.take(c) {
				got <- i
			}
		}()
		waittest.For(t, 5*time.Second, func() error { // in line in this order
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.waiting.Len() != i+1 {
				return fmt.Errorf("%d takers waiting, want %d", s.waiting.Len(), i+1)
			}
			return nil
		})
	}
	giveUp()
	waittest.For(t, 5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.waiting.Len() != 2 {
			return fmt.Errorf("%d takers waiting, want 2 once the first gave up", s.waiting.Len())
		}
		return nil
	})
	s.give()
	select {
	case i := <-got:
		if i != 1 {
			t.Fatalf("taker %d got the slot, want 1, the first still in line", i)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no taker got the slot given back")
	}
	select {
	case i := <-got:
		t.Fatalf("taker %d got a slot too, over the limit of 1", i)
	case <-time.After(100 * time.Millisecond):
	}
	s.give()
	if i := <-got; i != 2 {
		t.Fatalf("taker %d got the next slot, want 2", i)
	}
}
