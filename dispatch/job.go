package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// job is a row this node holds, from claim to its last attempt here. Its
// fields are set when it is made; after Dispatcher.start, next, body, format and
// row.Attempts are written only by the job's own goroutine, and read by
// releaseAll once that goroutine has ended. Its lease is not here: heldRows
// owns it.
type job struct {
	row   store.EventLog
	lane  *lane
	wait  *waiter   // the synchronous caller, if it is waiting on this node
	index int       // the row's trigger position, for the waiter
	next  time.Time // when to attempt; zero or past means now
	// kept is set while the row waits here for a retry, claimed all along:
	// the store may have cancelled it meanwhile (see Dispatcher.stillHeld).
	kept bool
	body []byte // the request body in format, the same on every attempt while the trigger's format stays
	// format is the format body is in.
	format config.Format
	// first is set while the row is not in the store: it is delivered
	// before it is logged, and logged with its first outcome (see Ingest).
	// Only the job's goroutine sets it to nil, under heldRows' lock.
	first *Logged
}

// start holds j, whose lease ends at leaseUntil by this node's clock, and
// runs it in its own goroutine, unless this node holds its row already: a
// row is never worked on twice at once by one node.
func (d *Dispatcher) start(j *job, leaseUntil time.Time) {
	if !d.held.add(j, leaseUntil) {
		d.log.Warn("a row this node holds was claimed again; it stays with the work already on it", j.lane.rowRef(&j.row)...)
		unreserve([]*job{j})
		return
	}
	d.crew.run(func(soft, hard context.Context) {
		if d.work(soft, hard, j) {
			d.held.remove(j)
			unreserve([]*job{j}) // and a row not logged is given up
		} else if j.wait != nil {
			j.wait.abandon()
		}
	})
}

// work attempts j until it is processed or failed, released for a later
// retry, or lost. It starts no attempt once soft ends, and hard aborts the
// attempt in flight. It returns false when shutdown interrupts it with the
// row still held, for Run to release.
func (d *Dispatcher) work(soft, hard context.Context, j *job) bool {
	l := j.lane
	for {
		if !sleepUntil(soft, j.next) {
			return false
		}
		if d.held.isLost(j) {
			return true
		}
		if soft.Err() != nil { // stopping: start no new attempt
			return false
		}
		if j.kept && !d.stillHeld(hard, j) {
			return true
		}
		if !l.slots.take(soft) {
			return false
		}
		if l.removed.Load() {
			l.slots.give()
			d.dropRemoved(j)
			return true
		}
		switch held, err := d.fence(hard, j); {
		case err != nil:
			l.slots.give()
			// The renewer warns of the store's outage; one line per row
			// and second would flood the log.
			d.log.Debug("cannot renew a row's lease before its attempt; trying again", append(l.rowRef(&j.row), "err", err)...)
			j.next = time.Now().Add(recordRetry)
			continue
		case !held:
			l.slots.give()
			d.log.Warn("another node took this row over while this node was held up; it is not attempted here", l.rowRef(&j.row)...)
			return true
		}
		// The slot is held until the outcome is written: a crash can then
		// leave at most concurrency attempts per trigger unrecorded, and
		// so delivered again.
		res := d.attempt(hard, j)
		if res.aborted {
			l.slots.give()
			return false
		}
		d.held.setRecording(j, true)
		out, applied := d.record(hard, j, res)
		d.held.setRecording(j, false)
		l.slots.give()
		if !applied && l.removed.Load() {
			d.log.Info("the trigger was removed during an attempt; its outcome was not recorded", l.rowRef(&j.row)...)
			d.dropRemoved(j)
			return true
		}
		if !applied {
			d.log.Warn("this node no longer holds the row: another node took this row over, or it was cancelled; its outcome here was not recorded", l.rowRef(&j.row)...)
			return true
		}
		d.opts.Metrics.outcome(&j.row, &out, res.duration)
		// A synchronous caller hears of an outcome once it is recorded.
		if j.wait != nil && out.Status != store.StatusStaged {
			j.wait.finish(j.index, out)
		}
		j.row.Attempts = out.Attempts
		if out.Status != store.StatusStaged {
			return true
		}
		if !out.Keep {
			l.alarm.set(out.DueAt)
			return true
		}
		j.next = out.DueAt.Add(-l.settings().lease) // the retry (see decide)
		j.kept = true
		d.held.setLease(j, out.DueAt)
	}
}

// stillHeld reports whether the store still has j's row staged and
// claimed by this node, after j kept it through a retry's wait: an admin
// may have cancelled it. When the store cannot tell, the attempt goes
// ahead: the store refuses its outcome if the row was cancelled.
func (d *Dispatcher) stillHeld(hard context.Context, j *job) bool {
	j.kept = false
	ctx, cancel := context.WithTimeout(hard, claimTimeout)
	defer cancel()
	held, err := d.store.Holds(ctx, d.opts.NodeID, j.row.ID)
	if err != nil {
		d.log.Debug("cannot read a kept row's claim before its retry; attempting it", append(j.lane.rowRef(&j.row), "err", err)...)
		return true
	}
	if !held {
		d.log.Info("a row waiting here for a retry was cancelled or taken over meanwhile; it is not attempted again", j.lane.rowRef(&j.row)...)
		if j.wait != nil {
			j.wait.finish(j.index, store.Outcome{EventID: j.row.ID, Status: store.StatusCancelled, Attempts: j.row.Attempts,
				Remark: "the row was cancelled, or taken over by another node, while it waited for a retry"})
		}
	}
	return held
}

// dropRemoved ends the work on j, whose trigger was removed: its row is
// handed back, for the node that cancels the rows of a deleted trigger
// or, for a trigger gone from the config, for a node that still has it
// (or the sweeper); a synchronous caller is told the row was cancelled.
func (d *Dispatcher) dropRemoved(j *job) {
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	if err := d.store.Release(ctx, d.opts.NodeID, []uuid.UUID{j.row.ID}, []time.Time{j.next}); err != nil {
		d.log.Warn("handing back a row of a removed trigger failed; its lease will lapse", append(j.lane.rowRef(&j.row), "err", err)...)
	}
	d.opts.Metrics.delivery(&j.row, "cancelled")
	if j.wait != nil {
		j.wait.finish(j.index, store.Outcome{EventID: j.row.ID, Status: store.StatusCancelled, Attempts: j.row.Attempts,
			Remark: "the trigger was removed before the row was delivered"})
	}
}

// sleepUntil waits until t, and reports false when soft ends first.
func sleepUntil(soft context.Context, t time.Time) bool {
	wait := time.Until(t)
	if wait <= 0 {
		return true
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-soft.Done():
		return false
	}
}

// fence reports whether this node may attempt j's row now: only while its
// lease, by this node's clock, outlasts the attempt (the trigger's timeout)
// with room to spare, or, for a row not logged yet, while its source
// still streams. A lease that ran short (the node stalled, a commit
// was slow) is renewed first; false means another node holds the row.
func (d *Dispatcher) fence(hard context.Context, j *job) (bool, error) {
	if j.first != nil {
		// No node can claim a row that is not logged, but another may
		// stream its source now, and deliver it again.
		return j.first.stream(), nil
	}
	set := j.lane.settings()
	need := set.trig.Timeout() + d.opts.Lease/8
	for {
		now := time.Now()
		if d.held.leaseLeft(j, now) >= need {
			return true, nil
		}
		// A renewal that took most of a lease leaves too little: renew again.
		kept, err := d.renewOne(hard, j, set.lease)
		if err != nil || !kept {
			return false, err
		}
		d.held.setLease(j, now.Add(set.lease))
	}
}

// renewOne extends j's lease by lease, and marks it lost when another node
// holds the row.
func (d *Dispatcher) renewOne(hard context.Context, j *job, lease time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(hard, claimTimeout)
	defer cancel()
	kept, err := d.store.Renew(ctx, d.opts.NodeID, []uuid.UUID{j.row.ID}, []time.Duration{lease})
	if err != nil {
		return false, err
	}
	if !kept[j.row.ID] {
		d.held.setLost(j)
	}
	return kept[j.row.ID], nil
}

// decide turns an attempt's result into the row's outcome.
func (d *Dispatcher) decide(j *job, res attemptResult) store.Outcome {
	set := j.lane.settings()
	t := set.trig
	attempts := j.row.Attempts + 1
	// The retry budget counts from the row's last redelivery.
	tries := attempts - j.row.RetryBase
	out := store.Outcome{
		EventID:  j.row.ID,
		Attempts: attempts,
		Invocation: &store.Invocation{
			ID:             newID(),
			EventID:        j.row.ID,
			Attempt:        attempts,
			NodeID:         d.opts.NodeID,
			StartedAt:      res.started,
			Duration:       res.duration,
			ResponseStatus: res.status,
			ResponseBody:   res.body,
			Error:          res.err,
		},
	}
	if j.body != nil {
		// The body is the row in j.format: the store keeps the format,
		// not a copy (see AttemptBody).
		out.Invocation.RequestFormat = string(j.format)
	}
	switch {
	case res.err == "":
		out.Status = store.StatusProcessed
		out.Response = res.response
	case tries > t.Retries:
		out.Status = store.StatusFailed
		out.Remark = fmt.Sprintf("failed after %d attempt(s): %s", attempts, res.err)
	default:
		out.Status = store.StatusStaged
		wait := retryDelay(t.RetryBackoff, tries, res.retryAfter)
		out.DueAt = time.Now().Add(wait)
		out.Remark = fmt.Sprintf("attempt %d failed: %s", attempts, res.err)
		if j.wait != nil || wait <= d.opts.Lease {
			// Retried here: the row stays this node's until a lease after
			// the retry, so that no poll (this node's included) claims it
			// in between, and the retry costs no claim, which would write
			// the row once more. Always for a waiting caller; otherwise
			// only for a retry due within a lease, so that a row does not
			// hold a place long, and a dead node's row comes back to the
			// others at most a lease after its retry was due.
			out.Keep, out.DueAt = true, out.DueAt.Add(set.lease)
		}
	}
	return out
}

// recordRetry is how long record waits between tries while the store is down.
const recordRetry = time.Second

// record decides an attempt's outcome and writes it, trying again while
// the store is unreachable so that an outage does not lose it. It returns
// the outcome written and whether the row was still ours. When the store
// refuses the outcome for a reason that retrying cannot change (its data),
// the outcome is written once more without the webhook's answer; if even
// that is refused, the row is given up here and its lease lapses. It stops
// trying when hard ends.
func (d *Dispatcher) record(hard context.Context, j *job, res attemptResult) (store.Outcome, bool) {
	out := d.decide(j, res)
	stripped := false
	for {
		applied, err := d.writeOutcome(context.WithoutCancel(hard), j, out)
		switch {
		case err == nil:
			return out, applied[out.EventID]
		case store.IsPermanent(err) && !stripped:
			d.log.Error("the store refused an attempt's outcome; recording it without the webhook's answer",
				append(j.lane.rowRef(&j.row), "err", err)...)
			out, stripped = d.decide(j, res.withoutAnswer()), true
			continue
		case store.IsPermanent(err) && j.first != nil:
			d.log.Error("the store refused a row with its first outcome, even without the webhook's answer; it is given up here, and delivered again when its source is streamed again",
				append(j.lane.rowRef(&j.row), "err", err)...)
			return out, false
		case store.IsPermanent(err):
			d.log.Error("the store refused an attempt's outcome, even without the webhook's answer; the row will be attempted again once its lease lapses",
				append(j.lane.rowRef(&j.row), "err", err)...)
			return out, true
		}
		d.log.Error("recording an attempt failed; trying again", append(j.lane.rowRef(&j.row), "err", err)...)
		select {
		case <-time.After(recordRetry):
		case <-hard.Done():
			return out, true // the lease lapses and the row is attempted again
		}
	}
}

// writeOutcome writes out, the outcome of an attempt of j's row: with
// the row itself when it is not logged yet (store.RecordFirst), which it
// is from then on.
func (d *Dispatcher) writeOutcome(ctx context.Context, j *job, out store.Outcome) (map[uuid.UUID]bool, error) {
	if j.first == nil {
		return d.store.Record(ctx, d.opts.NodeID, []store.Outcome{out})
	}
	rows := []store.EventLog{j.row}
	inserted, err := d.store.RecordFirst(ctx, d.opts.NodeID, rows, []store.Outcome{out})
	if err != nil {
		return nil, err
	}
	j.first.finish(true) // inserted, or logged before by another run
	d.held.setLogged(j)
	d.opts.Metrics.stagedRows(rows, inserted, sourceDB)
	return inserted, nil
}

// newID returns a UUIDv7, falling back to a random UUID if the clock-based
// generator fails (it only fails when the system's randomness does).
func newID() uuid.UUID {
	if id, err := uuid.NewV7(); err == nil {
		return id
	}
	return uuid.New()
}

// callerReason says what a failed outcome came to, for a synchronous
// caller: the webhook's status and the start of its answer, or that it did
// not answer, without the webhook's url or the network's details.
func callerReason(out store.Outcome) string {
	if out.Status == store.StatusCancelled {
		return out.Remark // nothing of the webhook's: see dropRemoved
	}
	what := "the webhook could not be reached"
	if in := out.Invocation; in != nil {
		switch {
		case in.ResponseStatus != 0:
			what = fmt.Sprintf("the webhook answered %d %s%s", in.ResponseStatus, http.StatusText(in.ResponseStatus),
				quoteBody([]byte(in.ResponseBody)))
		case strings.HasPrefix(in.Error, noAnswer):
			what = in.Error
		}
	}
	return fmt.Sprintf("failed after %d attempt(s): %s", out.Attempts, what)
}

// waiter collects the outcomes of a synchronous event's rows. Read and
// written only through its methods, under mu; done is closed once every row
// has finished.
type waiter struct {
	mu      sync.Mutex
	n       int // rows of the event
	pending int
	rows    map[int]store.Outcome
	last    store.Outcome // the outcome of the last row that failed
	stopped bool          // shutdown left a row unfinished
	done    chan struct{}
}

func newWaiter() *waiter {
	return &waiter{rows: make(map[int]store.Outcome), done: make(chan struct{})}
}

// expect sets how many rows must finish before the caller is answered.
func (w *waiter) expect(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n, w.pending = n, n
	if n == 0 {
		close(w.done)
	}
}

// finish records a row's final outcome.
func (w *waiter) finish(index int, out store.Outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rows[index] = out
	if out.Status != store.StatusProcessed {
		w.last = out
	}
	w.settle()
}

// abandon counts a row that shutdown left unfinished.
func (w *waiter) abandon() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.settle()
}

// settle counts one row done; the caller must hold w.mu.
func (w *waiter) settle() {
	w.pending--
	if w.pending == 0 {
		close(w.done)
	}
}

// result is the caller's answer once every row has finished.
func (w *waiter) result(id uuid.UUID) (Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	res := Result{ID: id}
	processed := false
	for i := range w.n {
		out, ok := w.rows[i]
		if !ok || out.Status != store.StatusProcessed {
			continue
		}
		processed = true
		if out.Response != nil && res.Response == nil {
			res.Response = out.Response
		}
	}
	switch {
	case processed:
	case w.stopped:
		return res, ErrStopping
	default:
		return res, &FailedError{Remark: w.last.Remark, Reason: callerReason(w.last)}
	}
	return res, nil
}
