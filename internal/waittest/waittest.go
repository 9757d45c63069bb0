// Package waittest waits in tests for a condition rather than for a time:
// it polls the condition until it holds or a deadline passes, so a test
// goes on as soon as what it waits for happened, and fails saying what
// was missing when it did not.
package waittest

import (
	"fmt"
	"testing"
	"time"
)

// Tick is how often a condition is polled.
const Tick = 10 * time.Millisecond

// For polls cond until it returns nil, and fails the test with cond's last
// error when that takes longer than within. cond says in its error what is
// missing, such as "3 of 5 deliveries".
func For(tb testing.TB, within time.Duration, cond func() error) {
	tb.Helper()
	if err := Until(within, cond); err != nil {
		tb.Fatal(err)
	}
}

// Until polls cond until it returns nil, and returns nil; or, when that
// takes longer than within, cond's last error, for a test that reports
// more than the wait.
func Until(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", within, err)
		}
		time.Sleep(Tick)
	}
}
