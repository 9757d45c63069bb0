package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
)

// heldRows is the set of rows this node holds, each with its lease. It owns
// the lease state (see holding): read and written only through its methods,
// under mu. A job is in it from Dispatcher.start until its goroutine ends.
type heldRows struct {
	mu   sync.Mutex
	rows map[uuid.UUID]*holding
}

// holding is a held row's lease. Owned by heldRows: no one else reads or
// writes it.
type holding struct {
	job       *job
	until     time.Time // when the lease ends, by this node's clock
	recording bool      // an outcome is being written: the renewer leaves it be
	lost      bool      // the lease went to another node: attempt no more
}

// add holds j's row until leaseUntil, and reports false, holding nothing,
// when the row is held already.
func (h *heldRows) add(j *job, leaseUntil time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, held := h.rows[j.row.ID]; held {
		return false
	}
	h.rows[j.row.ID] = &holding{job: j, until: leaseUntil}
	return true
}

func (h *heldRows) remove(j *job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rows, j.row.ID)
}

// The methods below take a job that is held: its own goroutine calls them.

func (h *heldRows) setLease(j *job, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rows[j.row.ID].until = until
}

func (h *heldRows) setRecording(j *job, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rows[j.row.ID].recording = on
}

// setLogged notes that j's row, delivered before it was logged, is logged
// (j.first is nil from then on), so that the renewer renews its lease.
// Only j's own goroutine writes j.first; the renewer reads it under h.mu.
func (h *heldRows) setLogged(j *job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j.first = nil
}

func (h *heldRows) isLost(j *job) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rows[j.row.ID].lost
}

func (h *heldRows) setLost(j *job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rows[j.row.ID].lost = true
}

// leaseLeft is how long j's lease lasts after now, by this node's clock.
func (h *heldRows) leaseLeft(j *job, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rows[j.row.ID].until.Sub(now)
}

// expiring returns the logged rows (a row not logged has no lease) that are
// not being recorded and whose lease, after now, is shorter than their
// trigger's timeout plus margin.
func (h *heldRows) expiring(now time.Time, margin time.Duration) []*job {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*job
	for _, r := range h.rows {
		if !r.recording && r.job.first == nil && r.until.Sub(now) < r.job.lane.settings().trig.Timeout()+margin {
			out = append(out, r.job)
		}
	}
	return out
}

// renewed applies a renewal of jobs' leases that began at now: kept says
// which the store extended, each by its lane's lease. The others are lost,
// unless they were released meanwhile or are being recorded (the store's
// answer to the outcome decides those); renewed returns the lost ones.
func (h *heldRows) renewed(jobs []*job, kept map[uuid.UUID]bool, now time.Time) (lost []*job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, j := range jobs {
		r := h.rows[j.row.ID]
		if r == nil || r.job != j {
			continue
		}
		switch {
		case kept[j.row.ID]:
			r.until = now.Add(j.lane.settings().lease)
		case !r.recording:
			r.lost = true
			lost = append(lost, j)
		}
	}
	return lost
}

// count is how many rows are held.
func (h *heldRows) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rows)
}

// all returns every held row.
func (h *heldRows) all() []*job {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*job, 0, len(h.rows))
	for _, r := range h.rows {
		out = append(out, r.job)
	}
	return out
}

// releaseAll hands every row still held back to the store, each due when
// its next attempt was (now, for rows that were about to be attempted),
// and gives up those not logged yet: their source streams them again.
// Run calls it once every job's goroutine has ended.
func (d *Dispatcher) releaseAll() error {
	var ids []uuid.UUID
	var due []time.Time
	for _, j := range d.held.all() {
		if j.first != nil {
			j.first.finish(false)
			continue
		}
		ids = append(ids, j.row.ID)
		if j.next.After(time.Now()) {
			due = append(due, j.next)
		} else {
			due = append(due, time.Time{})
		}
	}
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.store.Release(ctx, d.opts.NodeID, ids, due); err != nil {
		return err
	}
	d.log.Info("released rows for other nodes", "rows", len(ids))
	return nil
}
