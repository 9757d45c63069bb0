package node_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
)

// The fencing tests freeze the node holding a source with SIGSTOP: its
// process stops, its connections stay open, and so would its locks. They
// stay serial, as they time the takeover against store.FenceAfter.

// The log messages of a standby that fences a frozen holder, and of the
// change capture's session.
const (
	fencedSlotMsg      = "fenced the node streaming this slot, which stopped renewing its lock"
	fencedDirMsg       = "fenced the node watching this directory, which stopped renewing its lock"
	slotStandingByMsg  = "another node streams this slot; standing by to take over"
	captureStoppedMsg  = "change capture stopped; reconnecting"
	watchingStoppedMsg = "watching stopped; restarting"
)

// takeoverBound is the longest a standby may take to take over from a
// frozen holder: the fencing bound, a lock retry, and a session's start.
const takeoverBound = store.FenceAfter + 3*time.Second

// TestStandbyFencesAFrozenStreamer freezes the node streaming the slot
// while rows are committed: the standby must fence it and deliver the rows
// within the bound, and the frozen node, once it runs again, must give the
// slot up; every row is logged exactly once.
func TestStandbyFencesAFrozenStreamer(t *testing.T) {
	c := newCapture(t)
	streaming := nodetest.Start(t, c.config("node-a"))
	c.waitWalsender(30 * time.Second)
	standby := nodetest.Start(t, c.config("node-b"))
	standby.WaitLog(t, slotStandingByMsg, 30*time.Second)

	w := c.startWriter()
	time.Sleep(time.Second) // rows committed while node A streams
	streaming.Signal(t, syscall.SIGSTOP)
	frozen := time.Now()
	took := c.waitDeliveredAfter(w.last()+1, frozen, 20*time.Second)
	t.Logf("the standby delivered a row committed after the freeze %s after it", took.Round(time.Millisecond))
	if took > takeoverBound {
		t.Errorf("the standby took %s to take over, more than %s", took, takeoverBound)
	}
	if !standby.Logs(fencedSlotMsg) {
		t.Errorf("the standby did not log %q", fencedSlotMsg)
	}

	// Thawed, the node finds its session ended and stands by.
	streaming.Signal(t, syscall.SIGCONT)
	streaming.WaitLog(t, captureStoppedMsg, 10*time.Second)
	streaming.WaitLog(t, slotStandingByMsg, 20*time.Second)
	time.Sleep(500 * time.Millisecond) // rows committed after the takeover
	w.stop()
	c.expectEachRowOnce(w.last())
}

// TestStandbyFencesAFrozenWatcher freezes the node watching the directory
// while files come and go: the standby must fence it and log the changes
// within the bound, while the node is still frozen, and the node, once it
// runs again, must give the directory up; each change is logged once.
func TestStandbyFencesAFrozenWatcher(t *testing.T) {
	s := newStorage(t)
	watcher, standby := s.startPair()
	before := numbered("before", 10)
	s.write(before...)
	s.expect(events("FILE_CREATE", before...))

	watcher.Signal(t, syscall.SIGSTOP)
	frozen := time.Now()
	during := numbered("during", 20)
	s.write(during...)
	s.remove(before[0])
	standby.WaitLog(t, watchingMsg, 20*time.Second)
	took := time.Since(frozen)
	t.Logf("the standby watched the directory %s after the watcher froze", took.Round(time.Millisecond))
	if took > takeoverBound {
		t.Errorf("the standby took %s to take over, more than %s", took, takeoverBound)
	}
	if !standby.Logs(fencedDirMsg) {
		t.Errorf("the standby did not log %q", fencedDirMsg)
	}
	want := append(events("FILE_CREATE", append(before, during...)...), events("FILE_DELETE", before[0])...)
	s.expect(want)

	// Thawed, the node finds its lock gone and stands by; what it saw
	// meanwhile is not logged again.
	watcher.Signal(t, syscall.SIGCONT)
	watcher.WaitLog(t, watchingStoppedMsg, 10*time.Second)
	watcher.WaitLog(t, standingByMsg, 20*time.Second)
	after := numbered("after", 5)
	s.write(after...)
	s.expect(append(want, events("FILE_CREATE", after...)...))
}

// TestSlowHolderIsNotFenced runs two nodes, each capturing a database and
// watching a directory; one holds both. It pauses that node for less than
// the bound, and then holds its commits to the store for longer than the
// bound: a node that is slow but live keeps its sources, and every change
// is logged once.
func TestSlowHolderIsNotFenced(t *testing.T) {
	ctx := context.Background()
	s := newStorage(t)
	c := newCapture(t)
	c.storeURL, c.schema = s.url, s.schema // one store for both sources
	config := func(node string) string {
		return nodetest.WriteProjectConfig(t, node, s.url, s.schema,
			fmt.Sprintf("    storage:\n      uploads: {path: %q, settle: 100ms}\n", s.dir)+c.databases(),
			fmt.Sprintf("      - {name: created, type: FILE_CREATE, url: %q}\n      - {name: items, type: DB_INSERT, url: %q, options: {db: app, col: items}}\n",
				s.hook.URL, c.hook.URL))
	}
	holder := nodetest.Start(t, config("node-a"))
	holder.WaitLog(t, watchingMsg, 30*time.Second)
	c.waitWalsender(30 * time.Second)
	standby := nodetest.Start(t, config("node-b"))
	standby.WaitLog(t, standingByMsg, 30*time.Second)
	standby.WaitLog(t, slotStandingByMsg, 30*time.Second)
	w := c.startWriter()

	holder.Signal(t, syscall.SIGSTOP)
	paused := numbered("paused", 5)
	s.write(paused...)
	time.Sleep(store.FenceAfter / 2) // frozen, for less than the bound
	holder.Signal(t, syscall.SIGCONT)
	s.expect(events("FILE_CREATE", paused...))

	locker := connect(t, s.url)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE `+s.table("file_index")+`, `+s.table("event_logs")+` IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	held := numbered("held", 5)
	s.write(held...)
	time.Sleep(store.FenceAfter + time.Second) // commits held, for longer than the bound
	var waiting int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = 'triggerd' AND $1::int = ANY (pg_blocking_pids(pid))`, locker.PgConn().PID()).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	if waiting < 2 {
		t.Errorf("%d writes waited on the store, want the file index's and the row changes'", waiting)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(events("FILE_CREATE", append(paused, held...)...))
	w.stop()
	c.expectEachRowOnce(w.last())
	for _, msg := range []string{fencedDirMsg, fencedSlotMsg, tookOverMsg, watchingMsg, "took over the slot"} {
		if standby.Logs(msg) {
			t.Errorf("the standby logged %q", msg)
		}
	}
	for _, msg := range []string{watchingStoppedMsg, captureStoppedMsg} {
		if holder.Logs(msg) {
			t.Errorf("the holder logged %q", msg)
		}
	}
}
