package node

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

func TestRetentionOfConfig(t *testing.T) {
	t.Parallel()
	d := func(h time.Duration) config.Duration { return config.Duration(h * time.Hour) }
	cfg := &config.Config{
		Retention: config.Retention{Processed: d(168), Failed: d(720), Cancelled: d(0)},
		Projects:  []config.Project{{ID: "a", Retention: config.Retention{Processed: d(1), Failed: d(720), Cancelled: d(2)}}},
	}
	r := retention(cfg)
	if w := r[store.StatusProcessed]; w.Default != 168*time.Hour || w.Projects["a"] != time.Hour {
		t.Errorf("processed: %+v", w)
	}
	if w := r[store.StatusFailed]; w.Default != 720*time.Hour || w.Projects["a"] != 720*time.Hour {
		t.Errorf("failed: %+v", w)
	}
	if w := r[store.StatusCancelled]; w.Default != 0 || w.Projects["a"] != 2*time.Hour || len(r) != 3 {
		t.Errorf("cancelled: %+v (%d outcomes)", w, len(r))
	}
}

// TestOneSweeperAtATime runs two nodes' sweepers against one store: while
// one deletes (a row per batch, slowly), the lock is held and the other's
// sweeps take nothing; once it is done, the other may sweep.
func TestOneSweeperAtATime(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	ctx := t.Context()
	open := func() *store.Store {
		st, err := store.Open(ctx, store.Options{URL: url, Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		return st
	}
	a, b := open(), open()
	pool := pgtest.Pool(t, url, schema)
	const rows = 20
	_, err := pool.Exec(ctx, `
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at, status, updated_at)
		SELECT id, id, 'p', 't', 'x', now(), now(), 'processed', now() - interval '2 days'
		FROM (SELECT (lpad(to_hex((extract(epoch FROM now() - interval '3 days')::bigint * 1000 + g)), 12, '0')
		              || '7000' || '8' || lpad(g::text, 15, '0'))::uuid AS id FROM generate_series(1, $1) g) s`, rows)
	if err != nil {
		t.Fatal(err)
	}
	r := store.Retention{store.StatusProcessed: {Default: 24 * time.Hour}}
	slow := &sweeper{st: a, retention: r, deleting: store.Deleting{Batch: 1, Rest: 20}, log: slog.New(slog.DiscardHandler)}
	other := &sweeper{st: b, retention: r, deleting: store.Deleting{Batch: 1, Rest: -1}, log: slog.New(slog.DiscardHandler)}

	var wg sync.WaitGroup
	var took bool
	var deleted int
	started := make(chan struct{})
	wg.Go(func() {
		// slow holds the lock once its first row is gone.
		go func() {
			for ctx.Err() == nil {
				if held, _ := store.LockHeld(ctx, pool, sweepLockKey(schema)); held {
					close(started)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		took, deleted = slow.sweep(ctx)
	})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first sweeper never held the lock")
	}
	tries := 0
	for {
		held, err := store.LockHeld(ctx, pool, sweepLockKey(schema))
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			break
		}
		got, n := other.sweep(ctx)
		if n != 0 {
			t.Fatalf("the second sweeper took the lock (%v) and deleted %d rows while the first held it", got, n)
		}
		if got {
			// The first let go between the check above and this sweep: it
			// had deleted every row (checked below), so nothing was left.
			break
		}
		tries++
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	if !took || deleted != rows {
		t.Errorf("the first sweeper took the lock: %v, deleted %d rows, want %d", took, deleted, rows)
	}
	if tries < 5 {
		t.Errorf("the second sweeper tried only %d times while the first swept", tries)
	}
	if got, n := other.sweep(context.Background()); !got || n != 0 {
		t.Errorf("after the first sweep, the second took the lock: %v and deleted %d rows, want true and 0", got, n)
	}
}
