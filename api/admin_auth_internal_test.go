package api

import (
	"strconv"
	"testing"
	"time"
)

// TestLoginLimiter checks the login limit's window: five failures lock
// an address out until a minute after the first, other addresses are not
// affected, a success forgets the failures, and windows that ended are
// dropped when the limiter is full.
func TestLoginLimiter(t *testing.T) {
	t.Parallel()
	l := newLoginLimiter(5, time.Minute)
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for i := range 5 {
		if w := l.wait("a", t0.Add(time.Duration(i)*time.Second)); w != 0 {
			t.Fatalf("failure %d: wait %s, want none yet", i+1, w)
		}
		l.fail("a", t0.Add(time.Duration(i)*time.Second))
	}
	if w := l.wait("a", t0.Add(10*time.Second)); w != 50*time.Second {
		t.Fatalf("after five failures: wait %s, want the 50 s left of the minute", w)
	}
	if w := l.wait("b", t0.Add(10*time.Second)); w != 0 {
		t.Fatalf("another address: wait %s, want none", w)
	}
	if w := l.wait("a", t0.Add(time.Minute)); w != 0 {
		t.Fatalf("a minute after the first failure: wait %s, want none", w)
	}
	l.fail("a", t0.Add(time.Minute))
	l.succeed("a")
	if len(l.fails) != 0 {
		t.Fatalf("a success left %d addresses remembered", len(l.fails))
	}
	for i := range maxLimited {
		l.fails[strconv.Itoa(i)] = &loginFails{start: t0}
	}
	if w := l.wait("new", t0.Add(30*time.Second)); w != time.Minute {
		t.Fatalf("a full limiter, no window over: wait %s for a new address, want a minute", w)
	}
	if w := l.wait("new", t0.Add(time.Minute)); w != 0 || len(l.fails) != 0 {
		t.Fatalf("a full limiter whose windows ended: wait %s and %d addresses left, want none and none", w, len(l.fails))
	}
}
