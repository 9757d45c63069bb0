// Package dispatch is triggerd's core: it matches events to triggers, stages
// them in the store, and delivers them to webhooks on time, with retries,
// leases shared between nodes, and answers for synchronous callers.
//
// docs/dispatch.md draws a row's states and the phases of a shutdown, and
// names the functions that make each step.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// Options tunes a Dispatcher; zero values take the defaults.
type Options struct {
	// NodeID names this node in leases, CloudEvents and X-SC-Token.
	NodeID string
	// Lease is how long a claim lasts beyond the trigger's timeout unless
	// renewed (default: the config's lease). A dead node's rows come back to
	// the others within about this long plus the timeout.
	Lease time.Duration
	// Poll is how often each trigger looks for rows staged or released by
	// other nodes (default 1s). Rows this node stages wake it on time.
	Poll time.Duration
	// RoomWait is how long staging a database's changes waits for their
	// lanes to have room before it stops waiting for a lane that cannot
	// keep up (default 250ms; see roomWait).
	RoomWait time.Duration
	// Grace is how long attempts in flight may finish after Run's context
	// ends (default 10s).
	Grace time.Duration
	// Client makes the webhook requests (default: keep-alive, no redirects).
	Client *http.Client
	// Logger receives the dispatcher's logs (default slog.Default()).
	Logger *slog.Logger
	// UserAgent is sent with every webhook request.
	UserAgent string
	// Metrics, when set, counts staged rows, deliveries and synchronous
	// calls (see NewMetrics).
	Metrics *Metrics
}

// Event is what a source hands to the dispatcher.
type Event struct {
	Project string
	Type    string
	// Data is the event's JSON; nil is null.
	Data json.RawMessage
	// Time is when the event occurred (default now).
	Time time.Time
	// FireAt is when to deliver it (default Time).
	FireAt time.Time
}

// Errors a caller can act on.
var (
	// ErrNoTrigger: no trigger of the project handles the event's type.
	ErrNoTrigger = errors.New("no trigger handles this event type")
	// ErrUnknownProject: the event names a project this node does not serve.
	ErrUnknownProject = errors.New("unknown project")
	// ErrStopping: the dispatcher is shutting down; the event is stored and
	// will be delivered by another node or after a restart.
	ErrStopping = errors.New("triggerd is shutting down")
	// ErrUnstorable: the store refused the event's content (see
	// store.IsPermanent); queueing it again fails the same way.
	ErrUnstorable = errors.New("the store refused the event as it is")
)

// FailedError is a synchronous call whose every attempt failed.
type FailedError struct {
	// Remark is the last attempt's error, as the row's remark has it.
	Remark string
	// Reason is what a caller may be told of it: how the webhook answered,
	// without its url or the network's details.
	Reason string
}

// Error returns the last attempt's error.
func (e *FailedError) Error() string { return e.Remark }

// Result is the answer to a synchronous call.
type Result struct {
	// ID is the event's id.
	ID uuid.UUID
	// Response is the "response" field of the first webhook answer, in
	// trigger order, that had one; nil when none had.
	Response json.RawMessage
}

// Dispatcher stages events and delivers them. Create it with New, start it
// with Run, and hand it events with Enqueue and Call. Update changes its
// triggers while it runs.
type Dispatcher struct {
	// Set by New; read-only after.
	opts     Options
	store    *store.Store
	log      *slog.Logger
	client   *http.Client
	projects map[string]*project

	// routes are the lanes of each project by type and name. Update
	// replaces the whole map; readers load it once per event.
	routes atomic.Pointer[map[string]*routes]
	// mu orders Update against Run starting and stopping the lanes.
	mu sync.Mutex
	// lanesCtx is the lanes' context while Run runs, nil before; stopped
	// is set once Run stops the lanes. Guarded by mu.
	lanesCtx context.Context
	stopped  bool

	held   heldRows    // the rows this node holds and their leases
	intake intake      // admits submits until Run stops
	crew   *crew       // the jobs' goroutines and their stop contexts
	ran    atomic.Bool // set by the first Run
}

// project is a configured project and its keys. Set by New; read-only after.
type project struct {
	cfg  *config.Project
	keys *auth.Keyring
}

// routes are a project's lanes, by the type they handle and by name. A
// value is never changed: Update makes new ones.
type routes struct {
	byType map[string][]*lane // in trigger order
	byName map[string]*lane
}

// New builds a dispatcher for cfg's projects and triggers; keys holds each
// project's keyring.
func New(cfg *config.Config, st *store.Store, keys map[string]*auth.Keyring, opts Options) (*Dispatcher, error) {
	if opts.NodeID == "" {
		opts.NodeID = cfg.NodeID
	}
	if opts.Lease <= 0 {
		opts.Lease = cfg.Lease.Std()
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.RoomWait <= 0 {
		opts.RoomWait = roomWait
	}
	if opts.Grace <= 0 {
		opts.Grace = cfg.ShutdownGrace.Std()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Client == nil {
		opts.Client = newClient()
	}
	d := &Dispatcher{
		opts:     opts,
		store:    st,
		log:      opts.Logger,
		client:   opts.Client,
		projects: make(map[string]*project),
		crew:     newCrew(),
	}
	d.held.rows = make(map[uuid.UUID]*holding)
	triggers := make(map[string][]*config.Trigger)
	for i := range cfg.Projects {
		pc := &cfg.Projects[i]
		k := keys[pc.ID]
		if k == nil {
			return nil, fmt.Errorf("project %s has no keyring", pc.ID)
		}
		d.projects[pc.ID] = &project{cfg: pc, keys: k}
		for j := range pc.Triggers {
			triggers[pc.ID] = append(triggers[pc.ID], &pc.Triggers[j])
		}
	}
	d.routes.Store(&map[string]*routes{})
	if _, err := d.Update(triggers); err != nil {
		return nil, err
	}
	return d, nil
}

// Update makes the triggers of each project those given, in the order
// given (the order of a synchronous call's answers), and returns the
// triggers it removed. A trigger that is new gets a lane; one whose
// settings changed keeps its lane, and its rows take the new settings
// from their next attempt; one that is gone loses its lane: its jobs make
// no more attempts, and an attempt in flight finishes. Rows of a removed
// trigger stay as they are in the store (see store.DeleteTrigger and
// store.CancelDeleted). A project not given keeps its triggers; a trigger
// whose webhook secrets cannot sign is refused, and the others applied.
// Update takes the triggers as they are: they must have been checked
// (config.ParseTrigger, config.Load), and are not changed after.
func (d *Dispatcher) Update(triggers map[string][]*config.Trigger) (removed []store.Trigger, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.routes.Load()
	next := make(map[string]*routes, len(d.projects))
	var errs []error
	for id, p := range d.projects {
		list, given := triggers[id]
		if !given {
			if r := old[id]; r != nil {
				next[id] = r
			} else {
				next[id] = &routes{byType: map[string][]*lane{}, byName: map[string]*lane{}}
			}
			continue
		}
		r := &routes{byType: make(map[string][]*lane), byName: make(map[string]*lane)}
		for _, t := range list {
			var signer *auth.WebhookSigner
			if secrets := p.cfg.SigningSecrets(t); len(secrets) > 0 {
				if signer, err = auth.NewWebhookSigner(secrets); err != nil {
					errs = append(errs, fmt.Errorf("project %s, trigger %s: %w", id, t.Name, err))
					continue
				}
			}
			if r.byName[t.Name] != nil {
				errs = append(errs, fmt.Errorf("project %s: trigger %s is given twice", id, t.Name))
				continue
			}
			var l *lane
			if prev := old[id]; prev != nil && prev.byName[t.Name] != nil {
				l = prev.byName[t.Name]
				if !l.settings().trig.Equal(t) {
					l.reconfigure(t, signer)
				}
			} else {
				l = newLane(d, p, t, signer)
				if d.lanesCtx != nil && !d.stopped {
					l.stop = startService(d.lanesCtx, l)
				}
			}
			r.byType[t.Type] = append(r.byType[t.Type], l)
			r.byName[t.Name] = l
		}
		next[id] = r
	}
	d.routes.Store(&next)
	for id, r := range old {
		for name, l := range r.byName {
			if next[id].byName[name] == l {
				continue
			}
			l.removed.Store(true)
			if l.stop != nil {
				l.stop()
				l.stop = nil
			}
			removed = append(removed, store.Trigger{Project: id, Name: name})
		}
	}
	return removed, errors.Join(errs...)
}

// lane returns the lane of a project's trigger, or nil.
func (d *Dispatcher) lane(project, trigger string) *lane {
	if r := (*d.routes.Load())[project]; r != nil {
		return r.byName[trigger]
	}
	return nil
}

// Held is how many rows this node holds now: claimed, and not yet done here.
func (d *Dispatcher) Held() int { return d.held.count() }

// NodeID is the id this dispatcher claims rows and signs tokens with.
func (d *Dispatcher) NodeID() string { return d.opts.NodeID }

// Run delivers staged events until ctx ends. It then stops claiming, lets
// attempts in flight finish for the grace period, aborts the rest, hands
// every row it still holds back to the store, and returns. Events handed
// over before Run starts are delivered once it does.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.ran.Swap(true) {
		return errors.New("dispatcher has already run")
	}
	defer d.crew.abort()

	stopRenew := startService(d.crew.hard, &renewer{
		held: &d.held, store: d.store, node: d.opts.NodeID, lease: d.opts.Lease, log: d.log,
	})
	d.mu.Lock()
	d.lanesCtx = ctx
	for _, r := range *d.routes.Load() {
		for _, l := range r.byName {
			l.stop = startService(ctx, l)
		}
	}
	d.mu.Unlock()
	stopSweep := startService(ctx, &sweeper{store: d.store, known: d.triggers, log: d.log})
	stopWake := startService(ctx, &waker{d: d, store: d.store, log: d.log})

	<-ctx.Done()
	// Stop intake, and start no new attempt.
	d.intake.close()
	d.crew.stopSoft()
	d.intake.wait()
	// Stop claiming: the lanes and the sweeper end with ctx.
	d.mu.Lock()
	d.stopped = true
	for _, r := range *d.routes.Load() {
		for _, l := range r.byName {
			if l.stop != nil {
				l.stop()
				l.stop = nil
			}
		}
	}
	d.mu.Unlock()
	stopSweep()
	stopWake()
	// Let attempts in flight finish for the grace period, then abort them.
	d.crew.finish(d.opts.Grace, d.log)
	stopRenew()
	// Hand back the rows still held.
	return d.releaseAll()
}

// triggers lists the triggers this node has now.
func (d *Dispatcher) triggers() []store.Trigger {
	var known []store.Trigger
	for id, r := range *d.routes.Load() {
		for name := range r.byName {
			known = append(known, store.Trigger{Project: id, Name: name})
		}
	}
	return known
}

// Wake has this node's lanes of the given triggers poll now: rows were
// staged for them by other means than this dispatcher (the admin API's
// redeliveries), and are due. Triggers this node does not serve are
// skipped. Other nodes are woken by the store's announcement (waker).
func (d *Dispatcher) Wake(triggers []store.Trigger) {
	now := time.Now()
	for _, t := range triggers {
		if l := d.lane(t.Project, t.Name); l != nil {
			l.alarm.set(now)
		}
	}
}

// Enqueue stages an event for every trigger of its type and returns once the
// rows are committed. An event no trigger handles is stored nowhere: Enqueue
// returns its id and zero rows.
func (d *Dispatcher) Enqueue(ctx context.Context, ev Event) (id uuid.UUID, rows int, err error) {
	return d.submit(ctx, ev, nil)
}

// Call stages an event, delivers it at once, and waits until every trigger's
// row is processed or failed. It returns the first "response" in trigger
// order; a *FailedError when every row failed; ErrNoTrigger when no trigger
// handles the type; and ctx's error when ctx ends first, while delivery
// goes on in the background. The id is valid whenever the event was stored.
func (d *Dispatcher) Call(ctx context.Context, ev Event) (Result, error) {
	res, err := d.call(ctx, ev)
	d.opts.Metrics.call(callOutcome(ctx, err))
	return res, err
}

// call is Call, uncounted.
func (d *Dispatcher) call(ctx context.Context, ev Event) (Result, error) {
	w := newWaiter()
	id, rows, err := d.submit(ctx, ev, w)
	if err != nil {
		return Result{ID: id}, err
	}
	if rows == 0 {
		return Result{ID: id}, ErrNoTrigger
	}
	select {
	case <-w.done:
		return w.result(id)
	case <-ctx.Done():
		return Result{ID: id}, ctx.Err()
	}
}

// callOutcome is the outcome label of Call's answer.
func callOutcome(ctx context.Context, err error) string {
	var failed *FailedError
	switch {
	case err == nil:
		return "success"
	case errors.As(err, &failed):
		return "failed"
	case errors.Is(err, ErrNoTrigger):
		return "no_trigger"
	case ctx.Err() != nil:
		return "timeout"
	default:
		return "error"
	}
}

// submit stages ev's rows and returns the event id and the number of rows.
// Rows due now are claimed at insert and handed to their lanes in-process,
// unless a lane is full; the others wake their lane when due. With a waiter,
// every row is claimed here, so that this node delivers it and can answer.
func (d *Dispatcher) submit(ctx context.Context, ev Event, w *waiter) (uuid.UUID, int, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.Nil, 0, fmt.Errorf("new event id: %w", err)
	}
	r := (*d.routes.Load())[ev.Project]
	if r == nil {
		return id, 0, fmt.Errorf("%w %q", ErrUnknownProject, ev.Project)
	}
	lanes := r.byType[ev.Type]
	if len(lanes) == 0 {
		return id, 0, nil
	}
	now := time.Now()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	if ev.FireAt.IsZero() {
		ev.FireAt = ev.Time
	}
	live, done := d.intake.enter()
	defer done()

	rows := make([]store.EventLog, len(lanes))
	var claimed []*job
	for i, l := range lanes {
		rowID, err := uuid.NewV7()
		if err != nil {
			return id, 0, fmt.Errorf("new row id: %w", err)
		}
		var j *job
		rows[i], j = d.newRow(l, rowID, id, &ev, now, live, w, i)
		if j != nil {
			claimed = append(claimed, j)
		}
	}
	// The rows are written even when the caller goes away meanwhile: once
	// queued they may commit, and this node must then deliver what it claimed.
	if err := d.store.Insert(context.WithoutCancel(ctx), rows); err != nil {
		unreserve(claimed)
		if store.IsPermanent(err) {
			return id, 0, fmt.Errorf("stage event: %w: %w", ErrUnstorable, err)
		}
		return id, 0, fmt.Errorf("stage event: %w", err)
	}
	d.opts.Metrics.stagedRows(rows, nil, sourceCustom)
	if w != nil {
		w.expect(len(lanes))
	}
	d.launch(rows, claimed, nil)
	if !live {
		return id, len(rows), ErrStopping
	}
	return id, len(rows), nil
}

// newRow builds the staged row of ev for lane l. A row due now is claimed
// at insert, for this node to deliver in-process, when the lane has room or
// a synchronous caller waits; its job is returned, to start once the row
// is committed.
func (d *Dispatcher) newRow(l *lane, id, batch uuid.UUID, ev *Event, now time.Time, live bool, w *waiter, index int) (store.EventLog, *job) {
	row := store.EventLog{
		ID: id, BatchID: batch, Project: ev.Project, Trigger: l.name, Type: ev.Type,
		Payload: ev.Data, EventTime: storedTime(ev.Time), FireAt: ev.FireAt, Synchronous: w != nil,
		Status: store.StatusStaged, DueAt: ev.FireAt,
	}
	claim := false
	if live && w != nil {
		l.places.hold(1)
		claim = true
	} else if live && !ev.FireAt.After(now) {
		claim = l.places.reserve(1) == 1
	}
	if !claim {
		return row, nil
	}
	// The claim lasts a lease after the row falls due, by this node's
	// clock as it was before the insert: a slow commit shortens it, and
	// the fence renews it before the attempt.
	row.ClaimedBy = d.opts.NodeID
	row.DueAt = later(ev.FireAt, now).Add(l.settings().lease)
	return row, &job{row: row, lane: l, wait: w, index: index, next: ev.FireAt}
}

// launch starts the claimed jobs of committed rows and wakes the lanes of
// the others when they fall due. Rows missing from written (nil: all were
// written) were skipped by the store: their places are given back.
func (d *Dispatcher) launch(rows []store.EventLog, claimed []*job, written map[uuid.UUID]bool) {
	wake := make(map[*lane]time.Time)
	for i := range rows {
		r := &rows[i]
		if r.ClaimedBy != "" || (written != nil && !written[r.ID]) {
			continue
		}
		l := d.lane(r.Project, r.Trigger)
		if l == nil {
			continue // removed meanwhile
		}
		if t, ok := wake[l]; !ok || r.FireAt.Before(t) {
			wake[l] = r.FireAt
		}
	}
	for l, t := range wake {
		l.alarm.set(t)
	}
	for _, j := range claimed {
		if written == nil || written[j.row.ID] || j.first != nil {
			d.start(j, j.row.DueAt)
		} else {
			j.lane.unreserve(1)
		}
	}
}

// unreserve gives back the places of jobs whose rows were not written,
// nor will be by the jobs.
func unreserve(jobs []*job) {
	for _, j := range jobs {
		j.lane.unreserve(1)
		if j.first != nil {
			j.first.finish(false)
		}
	}
}

// storedTime is t as the store keeps it, to the microsecond: a row
// delivered from memory then says what the log of its attempts renders
// again (AttemptBody), and what a row read back from the store says.
func storedTime(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()) }

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
