package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// heldRows is the set of rows this node holds, with their leases.
type heldRows struct {
	mu   sync.Mutex
	jobs map[uuid.UUID]*job
}

// add holds j's row until leaseUntil, and reports false, holding nothing,
// when the row is held already.
func (h *heldRows) add(j *job, leaseUntil time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, held := h.jobs[j.row.ID]; held {
		return false
	}
	j.leaseUntil = leaseUntil
	h.jobs[j.row.ID] = j
	return true
}

func (h *heldRows) remove(j *job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.jobs, j.row.ID)
}

func (h *heldRows) setLease(j *job, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j.leaseUntil = until
}

func (h *heldRows) setRecording(j *job, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j.recording = on
}

func (h *heldRows) isLost(j *job) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return j.lost
}

func (h *heldRows) setLost(j *job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j.lost = true
}

// leaseLeft is how long j's lease lasts after now, by this node's clock.
func (h *heldRows) leaseLeft(j *job, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return j.leaseUntil.Sub(now)
}

// expiring returns the rows that are not being recorded and whose lease,
// after now, is shorter than their trigger's timeout plus margin.
func (h *heldRows) expiring(now time.Time, margin time.Duration) []*job {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*job
	for _, j := range h.jobs {
		if !j.recording && j.leaseUntil.Sub(now) < j.lane.trig.Timeout()+margin {
			out = append(out, j)
		}
	}
	return out
}

// all returns every held row.
func (h *heldRows) all() []*job {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*job, 0, len(h.jobs))
	for _, j := range h.jobs {
		out = append(out, j)
	}
	return out
}

// renew extends, every quarter lease, the leases that would end within
// their trigger's timeout plus half a lease, so that an attempt normally
// finds its lease long enough (see fence) and needs no renewal of its own;
// until ctx ends. Rows whose lease another node took are marked lost, so
// that they are attempted no more here.
func (d *Dispatcher) renew(ctx context.Context) {
	tick := time.NewTicker(d.opts.Lease / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		jobs := d.held.expiring(now, d.opts.Lease/2)
		if len(jobs) == 0 {
			continue
		}
		ids := make([]uuid.UUID, len(jobs))
		leases := make([]time.Duration, len(jobs))
		for i, j := range jobs {
			ids[i], leases[i] = j.row.ID, j.lane.lease
		}
		kept, err := d.store.Renew(ctx, d.opts.NodeID, ids, leases)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("renewing leases failed; trying again", "rows", len(ids), "err", err)
			}
			continue
		}
		d.held.mu.Lock()
		for _, j := range jobs {
			switch {
			case kept[j.row.ID]:
				j.leaseUntil = now.Add(j.lane.lease)
			case !j.recording && d.held.jobs[j.row.ID] == j:
				j.lost = true
				d.log.Warn("lost the lease on a row; another node may deliver it", j.lane.rowRef(&j.row)...)
			}
		}
		d.held.mu.Unlock()
	}
}

// releaseAll hands every row still held back to the store, each due when
// its next attempt was (now, for rows that were about to be attempted).
func (d *Dispatcher) releaseAll() error {
	jobs := d.held.all()
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(jobs))
	due := make([]time.Time, len(jobs))
	for i, j := range jobs {
		ids[i] = j.row.ID
		if j.next.After(time.Now()) {
			due[i] = j.next
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.store.Release(ctx, d.opts.NodeID, ids, due); err != nil {
		return err
	}
	d.log.Info("released rows for other nodes", "rows", len(ids))
	return nil
}

const (
	// sweepEvery is how often unknown triggers' overdue rows are cancelled.
	sweepEvery = time.Minute
	// orphanAfter is how long a row of an unknown trigger must have been
	// due before it is cancelled: a node with a newer config, which knows
	// the trigger, would have claimed it by then.
	orphanAfter = time.Minute
)

// sweep cancels overdue rows whose trigger is not in this node's config
// (the trigger was removed), at start and then every sweepEvery, until ctx
// ends.
func (d *Dispatcher) sweep(ctx context.Context) {
	known := make([]store.Trigger, 0, len(d.lanes))
	for _, l := range d.lanes {
		known = append(known, store.Trigger{Project: l.proj.cfg.ID, Name: l.trig.Name})
	}
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		cancelled, err := d.store.CancelOrphans(ctx, known, orphanAfter)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("cancelling rows of removed triggers failed", "err", err)
		case err == nil:
			for t, n := range cancelled {
				d.log.Warn("cancelled staged rows of a trigger that is not in the config", "project", t.Project, "trigger", t.Name, "rows", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
