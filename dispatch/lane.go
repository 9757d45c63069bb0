package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

const (
	// recheck is how soon a lane polls again when rows are due but another
	// node's claim had them locked.
	recheck = 50 * time.Millisecond
	// claimTimeout bounds one claim.
	claimTimeout = 5 * time.Second
)

// lane delivers one trigger's rows. Each trigger has its own lane, with its
// own attempt slots and its own cap on rows held, so a slow or dead webhook
// holds up nothing but itself.
type lane struct {
	d        *Dispatcher
	proj     *project
	trig     *config.Trigger
	signer   *auth.WebhookSigner // signs deliveries the Standard Webhooks way; nil when not
	slots    chan struct{}       // one per attempt in flight
	capacity int                 // rows held at most: in flight, waiting for a slot or sleeping
	// lease is how long this node's claim on a row lasts: the config's
	// lease plus the trigger's timeout, so that an attempt in flight
	// always ends before its lease does (see Dispatcher.fence).
	lease time.Duration

	mu      sync.Mutex
	held    int
	backlog bool      // rows were left due when the lane was full: poll when one leaves
	wakeAt  time.Time // when to poll next; zero when only the periodic poll is due
	poke    chan struct{}
}

func newLane(d *Dispatcher, p *project, t *config.Trigger, signer *auth.WebhookSigner) *lane {
	return &lane{
		d:        d,
		proj:     p,
		trig:     t,
		signer:   signer,
		slots:    make(chan struct{}, t.Concurrency),
		capacity: 16 * t.Concurrency,
		lease:    d.opts.Lease + t.Timeout(),
		wakeAt:   time.Now(),
		poke:     make(chan struct{}, 1),
	}
}

// reserve takes up to n places for rows, and returns how many it took.
// When it cannot take all, the lane polls again once a row leaves.
func (l *lane) reserve(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	free := min(n, l.capacity-l.held)
	if free < n {
		l.backlog = true
	}
	if free < 0 {
		free = 0
	}
	l.held += free
	return free
}

// hold takes n places whether or not the lane is full (synchronous rows,
// whose callers are waiting, are never turned away).
func (l *lane) hold(n int) {
	l.mu.Lock()
	l.held += n
	l.mu.Unlock()
}

// unreserve gives n places back, and wakes the lane when rows were left due.
func (l *lane) unreserve(n int) {
	l.mu.Lock()
	l.held -= n
	wake := l.backlog && l.held < l.capacity
	if wake {
		l.backlog = false
	}
	l.mu.Unlock()
	if wake {
		l.schedule(time.Now())
	}
}

// schedule makes the lane poll at t, or earlier if it already would.
func (l *lane) schedule(t time.Time) {
	l.mu.Lock()
	sooner := l.wakeAt.IsZero() || t.Before(l.wakeAt)
	if sooner {
		l.wakeAt = t
	}
	l.mu.Unlock()
	if sooner {
		select {
		case l.poke <- struct{}{}:
		default:
		}
	}
}

// run polls for due rows when a scheduled time comes, when rows were left
// due and a place frees up, and every Poll period, until ctx ends.
func (l *lane) run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	tick := time.NewTicker(l.d.opts.Poll)
	defer tick.Stop()
	for {
		periodic := false
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-l.poke:
		case <-tick.C:
			periodic = true
		}
		now := time.Now()
		l.mu.Lock()
		due := !l.wakeAt.IsZero() && !l.wakeAt.After(now)
		if due || periodic {
			l.wakeAt = time.Time{}
		}
		l.mu.Unlock()
		if due || periodic {
			l.poll(ctx)
		}
		l.mu.Lock()
		next := l.wakeAt
		l.mu.Unlock()
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// poll claims the trigger's due rows that fit in the lane, starts them, and
// schedules the next poll for the earliest row still staged.
func (l *lane) poll(ctx context.Context) {
	d := l.d
	l.mu.Lock()
	free := max(l.capacity-l.held, 0)
	l.held += free
	if free == 0 {
		l.backlog = true // poll again when a row leaves
	}
	l.mu.Unlock()
	if free == 0 {
		return
	}
	// Shutdown does not cut a claim short: one that committed unseen would
	// leave rows leased to this node for a lease. Rows claimed as Run stops
	// are started, find the dispatcher stopping, and are released.
	started := time.Now()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	rows, err := d.store.Claim(cctx, d.opts.NodeID, l.proj.cfg.ID, l.trig.Name, free, l.lease)
	cancel()
	l.unreserve(free - len(rows))
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("claim failed; retrying at the next poll", "project", l.proj.cfg.ID, "trigger", l.trig.Name, "err", err)
		}
		return
	}
	full := len(rows) == free
	if full {
		l.mu.Lock()
		l.backlog = true // more may be due: poll again when a row leaves
		l.mu.Unlock()
	}
	for _, r := range rows {
		d.start(&job{row: r, lane: l}, started.Add(l.lease))
	}
	if full {
		return
	}
	wait, ok, err := d.store.NextDue(ctx, l.proj.cfg.ID, l.trig.Name)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("next due lookup failed; retrying at the next poll", "project", l.proj.cfg.ID, "trigger", l.trig.Name, "err", err)
		}
		return
	}
	if ok {
		// A row that was due before the claim began, yet not claimed, is
		// locked by another node's claim in progress: look again shortly.
		// A row that became due since is claimed at once.
		if wait <= -time.Since(started) {
			wait = recheck
		}
		l.schedule(time.Now().Add(wait))
	}
}

// rowRef identifies a row for logs.
func (l *lane) rowRef(r *store.EventLog) []any {
	return []any{"project", l.proj.cfg.ID, "trigger", l.trig.Name, "id", r.ID}
}
