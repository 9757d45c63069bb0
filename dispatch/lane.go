package dispatch

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
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
// holds up nothing but itself. A lane is a service: its Run goroutine polls
// for due rows. When its trigger changes, the lane stays and takes the new
// settings (reconfigure); when its trigger goes, the lane is removed
// (Dispatcher.Update).
type lane struct {
	// Set by newLane; read-only after.
	d    *Dispatcher
	proj *project
	name string // the trigger's name, which never changes

	// set holds the trigger's settings; reconfigure replaces them whole,
	// and each attempt reads them anew (see Dispatcher.work).
	set atomic.Pointer[laneSettings]
	// removed is set once the trigger is gone: the lane's jobs make no
	// more attempts.
	removed atomic.Bool
	// stop ends the lane's Run goroutine; owned by the Dispatcher, under
	// its mu.
	stop func()

	// slots holds a token per attempt in flight, up to the trigger's
	// concurrency. Only the jobs' goroutines take and give them: each
	// takes one before an attempt and gives it back once the outcome is
	// recorded (see Dispatcher.work); reconfigure changes the limit.
	slots slots
	// places counts the rows the lane holds; any goroutine takes and gives
	// them through its methods.
	places places
	// alarm is when the lane polls next; any goroutine may bring it
	// forward, the lane's Run goroutine alone takes it.
	alarm alarm
	// behind is set while the lane's deliveries are slower than the
	// database changes it takes arrive (see roomWait); any goroutine
	// reads it, Dispatcher.waitRoom alone writes it.
	behind atomic.Bool
}

// laneSettings are a lane's trigger and what follows from it. A value is
// never changed: reconfigure stores a new one.
type laneSettings struct {
	trig   *config.Trigger
	signer *auth.WebhookSigner // signs deliveries the Standard Webhooks way; nil when not
	// lease is how long this node's claim on a row lasts: the config's
	// lease plus the trigger's timeout, so that an attempt in flight
	// always ends before its lease does (see Dispatcher.fence).
	lease time.Duration
}

func newLane(d *Dispatcher, p *project, t *config.Trigger, signer *auth.WebhookSigner) *lane {
	l := &lane{
		d:      d,
		proj:   p,
		name:   t.Name,
		slots:  slots{limit: t.Concurrency},
		places: places{capacity: placesPer * t.Concurrency},
		alarm:  alarm{at: time.Now(), poke: make(chan struct{}, 1)},
	}
	l.set.Store(&laneSettings{trig: t, signer: signer, lease: d.opts.Lease + t.Timeout()})
	return l
}

// placesPer is how many rows a lane holds per attempt it may have in flight.
const placesPer = 16

// settings returns the lane's current settings.
func (l *lane) settings() *laneSettings { return l.set.Load() }

// reconfigure gives the lane trigger t's settings: rows held take them
// from their next attempt, and the lane's caps follow t's concurrency.
func (l *lane) reconfigure(t *config.Trigger, signer *auth.WebhookSigner) {
	l.set.Store(&laneSettings{trig: t, signer: signer, lease: l.d.opts.Lease + t.Timeout()})
	l.slots.setLimit(t.Concurrency)
	if l.places.setCapacity(placesPer * t.Concurrency) {
		l.alarm.set(time.Now())
	}
}

// slots counts a lane's attempts in flight against a limit that can
// change. Takers that find no free slot wait in line, and each slot given
// back goes to the first of them: a lane holds up to placesPer times more
// jobs than slots, and waking them all for each slot (as a broadcast
// would) cost more CPU than the deliveries. Read and written only through
// its methods, under mu.
type slots struct {
	mu      sync.Mutex
	limit   int
	used    int
	waiting list.List // of chan struct{}, closed when its taker is handed a slot
}

// take waits for a free slot and takes it; false when ctx ends first.
func (s *slots) take(ctx context.Context) bool {
	s.mu.Lock()
	if s.used < s.limit && s.waiting.Len() == 0 {
		s.used++
		s.mu.Unlock()
		return true
	}
	handed := make(chan struct{})
	place := s.waiting.PushBack(handed)
	s.mu.Unlock()
	select {
	case <-handed:
		return true
	case <-ctx.Done():
	}
	s.mu.Lock()
	select {
	case <-handed: // handed a slot as ctx ended: pass it on
		s.used--
		s.handOut()
	default:
		s.waiting.Remove(place)
	}
	s.mu.Unlock()
	return false
}

// give gives a slot back.
func (s *slots) give() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
	s.handOut()
}

// setLimit changes the number of slots. Attempts in flight over a lower
// limit finish; no new one starts until the count is under it.
func (s *slots) setLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = n
	s.handOut()
}

// handOut hands the free slots to the takers waiting, first come first
// served; the caller holds mu.
func (s *slots) handOut() {
	for s.used < s.limit && s.waiting.Len() > 0 {
		first := s.waiting.Front()
		s.waiting.Remove(first)
		s.used++
		close(first.Value.(chan struct{}))
	}
}

// places counts a lane's rows held against its capacity: rows claimed for
// this node and not yet done here, whether in flight, waiting for a slot or
// sleeping until a retry. Read and written only through its methods, under
// mu.
type places struct {
	mu       sync.Mutex
	capacity int // rows held at most; follows the trigger's concurrency
	held     int
	backlog  bool          // rows were left due when the lane was full: poll when one leaves
	freed    chan struct{} // closed when a place is given back; nil while nobody waits for one
}

// size is how many rows the lane may hold.
func (p *places) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.capacity
}

// drained reports whether the lane holds at most half its places.
func (p *places) drained() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held <= p.capacity/2
}

// awaitRoom waits until n places are free, for as long as a place is
// given back every idle, until deadline, and until ctx or stop ends. It
// takes none, and reports whether the places were free.
func (p *places) awaitRoom(ctx, stop context.Context, n int, idle time.Duration, deadline time.Time) bool {
	timer := time.NewTimer(min(idle, time.Until(deadline)))
	defer timer.Stop()
	for {
		p.mu.Lock()
		if p.capacity-p.held >= n {
			p.mu.Unlock()
			return true
		}
		if !time.Now().Before(deadline) {
			p.mu.Unlock()
			return false
		}
		if p.freed == nil {
			p.freed = make(chan struct{})
		}
		freed := p.freed
		p.mu.Unlock()
		select {
		case <-freed:
			timer.Reset(min(idle, time.Until(deadline)))
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		case <-stop.Done():
			return false
		}
	}
}

// reserve takes up to n places, and returns how many it took. When it
// cannot take all, the lane is to poll again once a row leaves.
func (p *places) reserve(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	free := min(n, p.capacity-p.held)
	if free < n {
		p.backlog = true
	}
	if free < 0 {
		free = 0
	}
	p.held += free
	return free
}

// hold takes n places whether or not the lane is full (synchronous rows,
// whose callers are waiting, are never turned away).
func (p *places) hold(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held += n
}

// takeFree takes every free place, for a poll, and returns how many. When
// none is free, the lane is to poll again once a row leaves.
func (p *places) takeFree() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	free := max(p.capacity-p.held, 0)
	p.held += free
	if free == 0 {
		p.backlog = true
	}
	return free
}

// setCapacity changes how many rows the lane may hold, and reports
// whether the lane should poll now: rows were left due and a place is free.
func (p *places) setCapacity(n int) (poll bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.capacity = n
	poll = p.backlog && p.held < p.capacity
	if poll {
		p.backlog = false
	}
	return poll
}

// fillBacklog notes that more rows may be due than the lane took: it is to
// poll again once a row leaves.
func (p *places) fillBacklog() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backlog = true
}

// give gives n places back, and reports whether the lane should poll now:
// rows were left due and a place is free.
func (p *places) give(n int) (poll bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held -= n
	if p.freed != nil {
		close(p.freed)
		p.freed = nil
	}
	poll = p.backlog && p.held < p.capacity
	if poll {
		p.backlog = false
	}
	return poll
}

// alarm is when a lane polls next. Any goroutine may bring it forward
// (set); only the lane's Run goroutine takes it (take, next) and receives
// from poke. Read and written only through its methods, under mu.
type alarm struct {
	mu   sync.Mutex
	at   time.Time     // when to poll next; zero when only the periodic poll is due
	poke chan struct{} // a token when at was brought forward since Run last looked
}

// set makes the lane poll at t, or earlier if it already would.
func (a *alarm) set(t time.Time) {
	a.mu.Lock()
	sooner := a.at.IsZero() || t.Before(a.at)
	if sooner {
		a.at = t
	}
	a.mu.Unlock()
	if sooner {
		select {
		case a.poke <- struct{}{}:
		default:
		}
	}
}

// take reports whether to poll now: the alarm's time has come, or periodic
// says the periodic poll is due. Either way the alarm is cleared, for the
// poll to set anew.
func (a *alarm) take(now time.Time, periodic bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	due := !a.at.IsZero() && !a.at.After(now)
	if due || periodic {
		a.at = time.Time{}
	}
	return due || periodic
}

// next is when to poll next; zero when only the periodic poll is due.
func (a *alarm) next() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at
}

// unreserve gives n places back, and wakes the lane when rows were left due.
func (l *lane) unreserve(n int) {
	if l.places.give(n) {
		l.alarm.set(time.Now())
	}
}

// Run polls for due rows when the alarm's time comes, when rows were left
// due and a place frees up, and every Poll period, until ctx ends.
func (l *lane) Run(ctx context.Context) {
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
		case <-l.alarm.poke:
		case <-tick.C:
			periodic = true
		}
		if l.alarm.take(time.Now(), periodic) {
			l.poll(ctx)
		}
		timer.Stop()
		if next := l.alarm.next(); !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// poll claims the trigger's due rows that fit in the lane, starts them, and
// sets the alarm for the earliest row still staged.
func (l *lane) poll(ctx context.Context) {
	d := l.d
	free := l.places.takeFree()
	if free == 0 {
		return
	}
	// Shutdown does not cut a claim short: one that committed unseen would
	// leave rows leased to this node for a lease. Rows claimed as Run stops
	// are started, find the dispatcher stopping, and are released.
	started := time.Now()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	lease := l.settings().lease
	rows, err := d.store.Claim(cctx, d.opts.NodeID, l.proj.cfg.ID, l.name, free, lease)
	cancel()
	l.unreserve(free - len(rows))
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("claim failed; retrying at the next poll", "project", l.proj.cfg.ID, "trigger", l.name, "err", err)
		}
		return
	}
	full := len(rows) == free
	if full {
		l.places.fillBacklog() // more may be due
	}
	for _, r := range rows {
		d.start(&job{row: r, lane: l}, started.Add(lease))
	}
	if !full {
		l.setAlarm(ctx, started)
	}
}

// setAlarm sets the alarm for the earliest row of the trigger still staged,
// after a poll that began at started and left none due that it could take.
func (l *lane) setAlarm(ctx context.Context, started time.Time) {
	wait, ok, err := l.d.store.NextDue(ctx, l.proj.cfg.ID, l.name)
	if err != nil {
		if ctx.Err() == nil {
			l.d.log.Warn("next due lookup failed; retrying at the next poll", "project", l.proj.cfg.ID, "trigger", l.name, "err", err)
		}
		return
	}
	if !ok {
		return
	}
	// A row that was due before the claim began, yet not claimed, is
	// locked by another node's claim in progress: look again shortly.
	// A row that became due since is claimed at once.
	if wait <= -time.Since(started) {
		wait = recheck
	}
	l.alarm.set(time.Now().Add(wait))
}

// rowRef identifies a row for logs.
func (l *lane) rowRef(r *store.EventLog) []any {
	return []any{"project", l.proj.cfg.ID, "trigger", l.name, "id", r.ID}
}
