package waittest_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/triggerd/triggerd/internal/waittest"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	start := time.Now()
	err := waittest.Until(10*time.Second, func() error {
		if polls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || polls.Load() != 3 {
		t.Fatalf("Until returned %v after %d polls, want nil after 3", err, polls.Load())
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Until took %s for three polls", took)
	}
}

func TestUntilReportsTheLastErrorAtTheDeadline(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	start := time.Now()
	err := waittest.Until(100*time.Millisecond, func() error {
		return fmt.Errorf("poll %d", polls.Add(1))
	})
	if want := fmt.Sprintf("not within 100ms: poll %d", polls.Load()); err == nil || err.Error() != want {
		t.Fatalf("Until returned %v, want %q, the last poll's error", err, want)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("Until gave up after %s, before its deadline", took)
	}
	if n := polls.Load(); n < 2 {
		t.Errorf("Until polled %d times in 100ms", n)
	}
}
