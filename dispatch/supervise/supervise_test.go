package supervise

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestSessionsRunAgainAfterFailuresUntilCancelled(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	began := time.Now()
	Sessions(ctx, log, "it stopped", func(ctx context.Context) error {
		runs++
		if runs == 3 {
			cancel()
			return nil
		}
		return errors.New("boom")
	})
	// Two failures: waits of 0.1-0.2 s and 0.2-0.4 s.
	if took := time.Since(began); runs != 3 || took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("%d runs in %s, want 3 after two backoffs", runs, took)
	}
	if n := strings.Count(logs.String(), `msg="it stopped" err=boom`); n != 2 {
		t.Errorf("%d failures logged, want 2:\n%s", n, logs.String())
	}
}

func TestStandbyWaitsForTheLock(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tries := 0
	err := Standby(context.Background(), log, 10*time.Millisecond, "waiting", "took", func() (bool, error) {
		tries++
		return tries == 4, nil
	})
	if err != nil || tries != 4 || strings.Count(logs.String(), "msg=waiting") != 1 || strings.Count(logs.String(), "msg=took") != 1 {
		t.Errorf("err %v after %d tries; logs:\n%s", err, tries, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := Standby(ctx, log, 10*time.Millisecond, "waiting", "took", func() (bool, error) { return false, nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a lock never free: %v, want the context's error", err)
	}
	boom := errors.New("boom")
	if err := Standby(context.Background(), log, time.Millisecond, "waiting", "took", func() (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("a failed try: %v, want it returned", err)
	}
}
