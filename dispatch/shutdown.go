package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// intake admits the submits that may start jobs (Enqueue, Call, Ingest)
// until Run closes it, and counts those admitted, so that Run can let them
// start their jobs before it waits for the jobs. Read and written only
// through its methods.
type intake struct {
	mu       sync.Mutex
	closed   bool
	admitted sync.WaitGroup // submits admitted and not done yet
}

// enter admits a submit, unless intake is closed: live says which. Call
// done when the submit has started its jobs.
func (in *intake) enter() (live bool, done func()) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false, func() {}
	}
	in.admitted.Add(1)
	return true, in.admitted.Done
}

// close admits no more submits.
func (in *intake) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
}

// wait returns once every admitted submit is done; call it after close.
func (in *intake) wait() { in.admitted.Wait() }

// crew runs the jobs' goroutines (see Dispatcher.start) and stops them in
// two steps. It owns the two stop contexts and hands them to each job as
// arguments: soft ends when Run's context ends (start no new attempt), hard
// when the grace period is over (abort the attempts in flight). New makes
// it, so that jobs started before Run have them; only Run stops it.
type crew struct {
	soft, hard      context.Context
	stopSoft, abort context.CancelFunc
	jobs            sync.WaitGroup
}

func newCrew() *crew {
	c := &crew{}
	c.soft, c.stopSoft = context.WithCancel(context.Background())
	c.hard, c.abort = context.WithCancel(context.Background())
	return c
}

// run runs a job in a goroutine of its own, with the stop contexts.
func (c *crew) run(job func(soft, hard context.Context)) {
	c.jobs.Go(func() { job(c.soft, c.hard) })
}

// finish waits for the jobs' goroutines to end. After grace it aborts the
// attempts still in flight, and waits for those.
func (c *crew) finish(grace time.Duration, log *slog.Logger) {
	finished := make(chan struct{})
	go func() {
		c.jobs.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(grace):
		log.Warn("grace period over: aborting attempts in flight", "grace", grace)
		c.abort()
		<-finished
	}
}
