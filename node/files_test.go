package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// The file source's log messages the tests wait for (filewatch's
// session and lock).
const (
	watchingMsg   = "watching"
	standingByMsg = "another node watches this directory; standing by to take over"
	tookOverMsg   = "took over the directory"
)

// storage is a watched directory, a store schema and a counting receiver,
// shared by a file test's nodes.
type storage struct {
	t                *testing.T
	dir, url, schema string
	hook             *nodetest.Counter
	db               *pgx.Conn // the store, to read event_logs
}

func newStorage(t *testing.T) *storage {
	s := &storage{t: t, dir: t.TempDir(), hook: nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {})}
	s.url, s.schema = pgtest.Schema(t)
	s.db = connect(t, s.url)
	return s
}

// connect opens a connection of the test's own to url.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// config writes the config of a node watching the directory as the storage
// uploads of project demo, with a FILE_CREATE and a FILE_DELETE trigger.
func (s *storage) config(node string) string {
	return nodetest.WriteProjectConfig(s.t, node, s.url, s.schema,
		fmt.Sprintf("    storage:\n      uploads: {path: %q, settle: 100ms}\n", s.dir),
		fmt.Sprintf("      - {name: created, type: FILE_CREATE, url: %q}\n      - {name: deleted, type: FILE_DELETE, url: %q}\n",
			s.hook.URL, s.hook.URL))
}

// table is the sanitized name of one of the store's tables.
func (s *storage) table(name string) string { return pgx.Identifier{s.schema, name}.Sanitize() }

// numbered names n files: prefix-000.txt, prefix-001.txt, ...
func numbered(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%03d.txt", prefix, i)
	}
	return names
}

// write creates files in the directory, each in one step.
func (s *storage) write(names ...string) {
	s.t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(s.dir, n), []byte("content of "+n+"\n"), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
}

// remove deletes a file of the directory.
func (s *storage) remove(name string) {
	s.t.Helper()
	if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
		s.t.Fatal(err)
	}
}

// events prefixes each name with an event type: "FILE_CREATE a.txt".
func events(typ string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = typ + " " + n
	}
	return out
}

// logged counts the event_logs rows of files by event, "FILE_CREATE
// a.txt", and how many are not processed yet or were never delivered.
func (s *storage) logged() (byEvent map[string]int, unfinished int) {
	s.t.Helper()
	rows, err := s.db.Query(context.Background(), `SELECT id::text, type || ' ' || coalesce(payload->>'path', '?'), status::text = 'processed'
		FROM `+s.table("event_logs")+` WHERE type LIKE 'FILE\_%'`)
	if err != nil {
		s.t.Fatal(err)
	}
	byEvent = make(map[string]int)
	var id, event string
	var processed bool
	_, err = pgx.ForEachRow(rows, []any{&id, &event, &processed}, func() error {
		byEvent[event]++
		if !processed || s.hook.Count(id) == 0 {
			unfinished++
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return byEvent, unfinished
}

// expect waits until event_logs holds each of the events want exactly
// once and nothing else, all processed and delivered, and checks that it
// still does after a quiet moment (for extras and repeats).
func (s *storage) expect(want []string) {
	s.t.Helper()
	w := make(map[string]int, len(want))
	for _, e := range want {
		w[e]++
	}
	waittest.For(s.t, 30*time.Second, func() error {
		if got, unfinished := s.logged(); !maps.Equal(got, w) || unfinished > 0 {
			return fmt.Errorf("%d rows unfinished; event_logs differs from what is expected: %q", unfinished, differences(got, w))
		}
		return nil
	})
	time.Sleep(time.Second) // several settle times, for extras and repeats to show
	if got, _ := s.logged(); !maps.Equal(got, w) {
		s.t.Fatalf("after a quiet second, event_logs differs from what is expected: %q", differences(got, w))
	}
}

// differences lists, in order, the events logged a number of times other
// than wanted: "FILE_CREATE a.txt 2 times (want 1)".
func differences(got, want map[string]int) []string {
	all := make(map[string]int)
	maps.Copy(all, got)
	maps.Copy(all, want)
	var out []string
	for _, e := range slices.Sorted(maps.Keys(all)) {
		if got[e] != want[e] {
			out = append(out, fmt.Sprintf("%s %d times (want %d)", e, got[e], want[e]))
		}
	}
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("and %d more", len(out)-12))
	}
	return out
}

// TestFileWatchSurvivesSIGKILL crashes a node with SIGKILL between seeing
// files and logging them, changes the directory while no node runs, and
// restarts it: the restart's compare of the directory with the index must
// log every file that is there exactly once, and nothing for a file that
// came and went unlogged. A second crash, once everything is logged, must
// log nothing again.
func TestFileWatchSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStorage(t)
	cfg := s.config("node-1")
	first := nodetest.Start(t, cfg)
	first.WaitLog(t, watchingMsg, 30*time.Second)

	// Hold the index, so that no write of the node commits; write files,
	// and wait until the node's write of them waits on the index.
	holder := connect(t, s.url)
	lock, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE `+s.table("file_index")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	early := numbered("early", 200)
	s.write(early...)
	var waiting []int32
	waittest.For(t, 10*time.Second, func() error {
		rows, err := s.db.Query(ctx, `SELECT pid FROM pg_stat_activity
			WHERE application_name = 'triggerd' AND $1::int = ANY (pg_blocking_pids(pid))`, holder.PgConn().PID())
		if err != nil {
			t.Fatal(err)
		}
		if waiting, err = pgx.CollectRows(rows, pgx.RowTo[int32]); err != nil {
			t.Fatal(err)
		}
		if len(waiting) == 0 {
			return errors.New("no write of the node waits on the index since files were written")
		}
		return nil
	})
	first.Kill(t)
	// The server does not notice a vanished client while a statement
	// waits on a lock, so the waiting write could still commit once the
	// index is free: end it, so that none of what the node saw is logged.
	var left int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, 5000))
		FROM pg_stat_activity WHERE pid = ANY ($1)`, waiting).Scan(&left); err != nil || left > 0 {
		t.Fatalf("end the killed node's waiting write (backends %v): %d left, %v", waiting, left, err)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.logged(); len(got) > 0 {
		t.Fatalf("events logged by the killed node: %q", differences(got, nil))
	}

	// While no node runs, more files come, and one of those seen goes.
	late := numbered("late", 20)
	s.write(late...)
	s.remove(early[0])
	second := nodetest.Start(t, cfg)
	second.WaitLog(t, watchingMsg, 30*time.Second)
	want := events("FILE_CREATE", append(early[1:], late...)...)
	s.expect(want)

	// Crash again once everything is logged: the restart finds nothing new.
	second.Kill(t)
	third := nodetest.Start(t, cfg)
	third.WaitLog(t, watchingMsg, 30*time.Second)
	s.expect(want)
}

// TestStandbyWatchesAfterAKilledNode runs two nodes on one directory: one
// watches, the other stands by. When the watcher dies of SIGKILL, the
// standby must take the directory over within seconds, and its compare
// must log what changed meanwhile exactly once. It stays serial, as it
// times the takeover.
func TestStandbyWatchesAfterAKilledNode(t *testing.T) {
	s := newStorage(t)
	watcher, standby := s.startPair()
	before := numbered("before", 10)
	s.write(before...)
	s.expect(events("FILE_CREATE", before...))

	watcher.Kill(t)
	killed := time.Now()
	after := numbered("after", 20)
	s.write(after...)
	s.remove(before[0])
	standby.WaitLog(t, watchingMsg, 15*time.Second)
	took := time.Since(killed)
	t.Logf("the standby watched the directory %s after the watcher's SIGKILL", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the standby took %s to take over", took)
	}
	if !standby.Logs(tookOverMsg) {
		t.Errorf("the standby did not log %q", tookOverMsg)
	}
	s.expect(append(events("FILE_CREATE", append(before, after...)...), events("FILE_DELETE", before[0])...))
}

// startPair starts two nodes on the directory and tells which one watches
// it and which one stands by.
func (s *storage) startPair() (watcher, standby *nodetest.Child) {
	s.t.Helper()
	a := nodetest.Start(s.t, s.config("node-a"))
	b := nodetest.Start(s.t, s.config("node-b"))
	err := waittest.Until(30*time.Second, func() error {
		switch {
		case a.Logs(watchingMsg) && b.Logs(watchingMsg):
			s.t.Fatal("both nodes watch the directory")
		case a.Logs(watchingMsg) && b.Logs(standingByMsg):
			watcher, standby = a, b
		case b.Logs(watchingMsg) && a.Logs(standingByMsg):
			watcher, standby = b, a
		default:
			return errors.New("not one node watching and one standing by")
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("%v:\n%s\n%s", err, a.LogText(), b.LogText())
	}
	return watcher, standby
}
