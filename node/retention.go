package node

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// sweepEvery is how often a node tries to sweep, plus up to half of it at
// random, so that the nodes of a store do not all try at once. The node
// that takes the lock deletes the expired rows in the store's default
// batches and pauses (store.Deleting), so that the sweep takes a small
// share of the store while deliveries go on.
const sweepEvery = time.Minute

// sweeper deletes the rows whose retention is over, on one node of a store
// at a time: the holder of the store's retention lock.
type sweeper struct {
	st        *store.Store
	retention store.Retention
	every     time.Duration
	deleting  store.Deleting
	log       *slog.Logger
}

// newSweeper is the sweeper of cfg's retention.
func newSweeper(cfg *config.Config, st *store.Store, log *slog.Logger) *sweeper {
	return &sweeper{st: st, retention: retention(cfg), every: sweepEvery, log: log}
}

// retention is cfg's retention as the store takes it: each outcome's
// top-level window, and the projects' own.
func retention(cfg *config.Config) store.Retention {
	r := store.Retention{}
	add := func(status store.Status, top config.Duration, own func(config.Retention) config.Duration) {
		w := store.Window{Default: top.Std(), Projects: make(map[string]time.Duration)}
		for _, p := range cfg.Projects {
			w.Projects[p.ID] = own(p.Retention).Std()
		}
		r[status] = w
	}
	add(store.StatusProcessed, cfg.Retention.Processed, func(r config.Retention) config.Duration { return r.Processed })
	add(store.StatusFailed, cfg.Retention.Failed, func(r config.Retention) config.Duration { return r.Failed })
	add(store.StatusCancelled, cfg.Retention.Cancelled, func(r config.Retention) config.Duration { return r.Cancelled })
	return r
}

// run sweeps every s.every (plus jitter) until ctx ends.
func (s *sweeper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.every + rand.N(s.every/2+1)):
		}
		s.sweep(ctx)
	}
}

// sweep deletes the expired rows if it takes the store's retention lock,
// and says whether it took it and how many rows it deleted.
func (s *sweeper) sweep(ctx context.Context) (took bool, deleted int) {
	lock, err := s.st.TryLock(ctx, sweepLockKey(s.st.Schema()))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("retention: taking the sweep's lock failed; trying again at the next sweep", "err", err)
		}
		return false, 0
	}
	if lock == nil {
		return false, 0 // another node sweeps
	}
	defer lock.Release()
	d := s.deleting
	d.Check = lock.Check
	start := time.Now()
	n, err := s.st.DeleteExpired(ctx, s.retention, start, d)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("retention: the sweep stopped; the next one goes on", "deleted", n, "err", err)
	} else if n > 0 {
		s.log.Info("retention: expired rows deleted", "rows", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return true, n
}

// sweepLockKey names the advisory lock the sweeper of a store schema
// holds while it deletes.
func sweepLockKey(schema string) string {
	return "triggerd.retention." + schema
}
