package dispatch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// TestPlacesBacklog checks a lane's count of rows held: a lane that turned
// rows away polls again once a place frees up, and only then.
func TestPlacesBacklog(t *testing.T) {
	p := places{capacity: 2}
	if got := p.reserve(1); got != 1 {
		t.Fatalf("reserve(1) of 2 free took %d", got)
	}
	if p.give(1) {
		t.Fatal("giving a place back asked for a poll though no row was turned away")
	}
	if got := p.reserve(3); got != 2 {
		t.Fatalf("reserve(3) of 2 free took %d", got)
	}
	p.hold(1) // a synchronous row, over capacity
	if got := p.takeFree(); got != 0 {
		t.Fatalf("takeFree on a full lane took %d", got)
	}
	if p.give(1) {
		t.Fatal("the lane asked for a poll while still full")
	}
	if !p.give(1) {
		t.Fatal("the lane did not ask for a poll once a place freed up")
	}
	if p.give(1) {
		t.Fatal("the lane asked for a second poll for one backlog")
	}
	if got := p.takeFree(); got != 2 {
		t.Fatalf("takeFree on an empty lane took %d, want 2", got)
	}
	p.fillBacklog()
	if !p.give(2) {
		t.Fatal("the lane did not ask for a poll after a full claim")
	}
}

// TestAlarm checks a lane's alarm: it is only brought forward, pokes the
// lane when it is, and is taken when due or at the periodic poll.
func TestAlarm(t *testing.T) {
	now := time.Now()
	a := alarm{poke: make(chan struct{}, 1)}
	a.set(now.Add(time.Second))
	<-a.poke
	a.set(now.Add(2 * time.Second))
	select {
	case <-a.poke:
		t.Fatal("a later time poked the lane")
	default:
	}
	if got := a.next(); !got.Equal(now.Add(time.Second)) {
		t.Fatalf("next is %v, want the earlier time %v", got, now.Add(time.Second))
	}
	if a.take(now, false) {
		t.Fatal("the alarm was taken before its time")
	}
	if !a.take(now.Add(time.Second), false) || !a.next().IsZero() {
		t.Fatal("the alarm was not taken and cleared at its time")
	}
	a.set(now.Add(time.Hour))
	if !a.take(now, true) || !a.next().IsZero() {
		t.Fatal("the periodic poll did not take and clear the alarm")
	}
}

// TestRenewedMarksOnlyHeldRowsLost checks how heldRows applies a renewal:
// a kept lease is extended; a row not kept is lost, unless its outcome is
// being recorded or it was released (and perhaps claimed again) meanwhile.
func TestRenewedMarksOnlyHeldRowsLost(t *testing.T) {
	l := &lane{}
	l.set.Store(&laneSettings{trig: &config.Trigger{}, lease: time.Minute})
	newJob := func() *job { return &job{row: store.EventLog{ID: uuid.New()}, lane: l} }
	h := heldRows{rows: make(map[uuid.UUID]*holding)}
	now := time.Now()
	kept, notKept, recording, released := newJob(), newJob(), newJob(), newJob()
	for _, j := range []*job{kept, notKept, recording, released} {
		h.add(j, now)
	}
	if got := len(h.expiring(now, time.Second)); got != 4 {
		t.Fatalf("%d leases expiring, want 4", got)
	}
	h.setRecording(recording, true)
	h.remove(released)
	again := &job{row: released.row, lane: l}
	h.add(again, now)

	lost := h.renewed([]*job{kept, notKept, recording, released}, map[uuid.UUID]bool{kept.row.ID: true}, now)
	if len(lost) != 1 || lost[0] != notKept {
		t.Fatalf("lost %v, want only the row neither kept nor recording", lost)
	}
	if !h.isLost(notKept) || h.isLost(kept) || h.isLost(recording) || h.isLost(again) {
		t.Fatal("lost marks on the wrong rows")
	}
	if got := h.leaseLeft(kept, now); got != time.Minute {
		t.Fatalf("the kept lease has %s left, want the lane's lease", got)
	}
}

// TestIntakeAndCrewStopInOrder checks the shutdown's first phases: a
// closed intake admits no submit, waits for those admitted, and the crew's
// soft context ends before its hard one, which ends after the grace.
func TestIntakeAndCrewStopInOrder(t *testing.T) {
	var in intake
	live, done := in.enter()
	if !live {
		t.Fatal("an open intake refused a submit")
	}
	in.close()
	if live, _ := in.enter(); live {
		t.Fatal("a closed intake admitted a submit")
	}
	waited := make(chan struct{})
	go func() {
		in.wait()
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("wait returned while a submit was admitted")
	case <-time.After(20 * time.Millisecond):
	}
	done()
	<-waited

	c := newCrew()
	aborted := make(chan bool, 1)
	c.run(func(soft, hard context.Context) {
		<-soft.Done()
		<-hard.Done()
		aborted <- true
	})
	c.stopSoft()
	began := time.Now()
	c.finish(50*time.Millisecond, slog.New(slog.DiscardHandler))
	if took := time.Since(began); took < 50*time.Millisecond || !<-aborted {
		t.Fatalf("finish returned after %s, before the grace was over", took)
	}
}
