package dispatch

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// service is a loop that Dispatcher.Run starts beside the jobs: a lane, the
// renewer, the sweeper or the waker. Run returns once ctx ends. A service's fields are
// set when it is made and not changed after; what its loop changes is its
// own, or belongs to a type that says so.
type service interface {
	Run(ctx context.Context)
}

// startService runs s in a goroutine of its own until ctx ends or stop is
// called; stop returns once s has returned.
func startService(ctx context.Context, s service) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// renewer extends the leases of the rows this node holds before they run
// short, so that an attempt normally finds its lease long enough (see
// Dispatcher.fence) and needs no renewal of its own.
type renewer struct {
	held  *heldRows
	store *store.Store
	node  string
	lease time.Duration // the config's lease, without a trigger's timeout
	log   *slog.Logger
}

// Run extends, every quarter lease, the leases that would end within their
// trigger's timeout plus half a lease, until ctx ends. Rows whose lease
// another node took are marked lost, so that they are attempted no more
// here.
func (r *renewer) Run(ctx context.Context) {
	tick := time.NewTicker(r.lease / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		jobs := r.held.expiring(now, r.lease/2)
		if len(jobs) == 0 {
			continue
		}
		ids := make([]uuid.UUID, len(jobs))
		leases := make([]time.Duration, len(jobs))
		for i, j := range jobs {
			ids[i], leases[i] = j.row.ID, j.lane.settings().lease
		}
		kept, err := r.store.Renew(ctx, r.node, ids, leases)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("renewing leases failed; trying again", "rows", len(ids), "err", err)
			}
			continue
		}
		for _, j := range r.held.renewed(jobs, kept, now) {
			r.log.Warn("lost the lease on a row; another node may deliver it", j.lane.rowRef(&j.row)...)
		}
	}
}

const (
	// sweepEvery is how often unknown triggers' overdue rows are cancelled.
	sweepEvery = time.Minute
	// orphanAfter is how long a row of an unknown trigger must have been
	// due before it is cancelled: a node with a newer config, which knows
	// the trigger, would have claimed it by then.
	orphanAfter = time.Minute
)

// sweeper cancels overdue rows whose trigger this node does not have and
// the store does not keep (the trigger was removed from the config).
type sweeper struct {
	store *store.Store
	known func() []store.Trigger // the triggers this node has now
	log   *slog.Logger
}

// Run sweeps at start and then every sweepEvery, until ctx ends.
func (s *sweeper) Run(ctx context.Context) {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		cancelled, err := s.store.CancelOrphans(ctx, s.known(), orphanAfter)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("cancelling rows of removed triggers failed", "err", err)
		case err == nil:
			for t, n := range cancelled {
				s.log.Warn("cancelled staged rows of a trigger that is not in the config", "project", t.Project, "trigger", t.Name, "rows", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// wakeRetry is how long the waker waits before listening again after its
// connection failed.
const wakeRetry = time.Second

// waker has this node's lanes poll as soon as the admin API, on any node,
// stages their rows again (store.Redeliver announces them). Without it,
// the lanes would find those rows at their next poll.
type waker struct {
	d     *Dispatcher
	store *store.Store
	log   *slog.Logger
}

// Run listens until ctx ends, again after a failure.
func (w *waker) Run(ctx context.Context) {
	for {
		l, err := w.store.ListenStaged(ctx)
		if err == nil {
			for {
				triggers, err := l.Next(ctx)
				if err != nil {
					if ctx.Err() == nil {
						w.log.Warn("listening for redelivered rows failed; listening again (meanwhile the lanes' polls find them)", "err", err)
					}
					break
				}
				w.d.Wake(triggers)
			}
			l.Close()
		} else if ctx.Err() == nil {
			w.log.Warn("cannot listen for redelivered rows; trying again (meanwhile the lanes' polls find them)", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wakeRetry):
		}
	}
}
