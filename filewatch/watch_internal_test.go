package filewatch

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/store"
)

// testWatcher is a session's watcher of the storage dir, with nothing
// known and nothing watched yet, and its source's logs.
func testWatcher(t *testing.T, dir config.Storage) (*watcher, *dispatchtest.Buffer) {
	t.Helper()
	logs := &dispatchtest.Buffer{}
	p := &config.Project{ID: "p", Storage: map[string]config.Storage{"up": dir}}
	s, err := New(p, "up", nil, nil, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	return &watcher{s: s, fw: fw, known: make(map[string]store.FileEntry), pending: make(map[string]time.Time), watched: make(map[string]fileID), byID: make(map[fileID]string)}, logs
}

// TestAFolderGoneWhileWalkedIsLeftAlone walks folders that were removed, or
// replaced by a file, after their folder was listed: they are simply gone,
// and what became of them is reported by the kernel.
func TestAFolderGoneWhileWalkedIsLeftAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"removed", "now-a-file", "kept"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	listed, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "removed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "now-a-file")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "now-a-file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	w, logs := testWatcher(t, config.Storage{Path: dir})
	seen := make(map[string]bool)
	for _, d := range listed {
		if list := w.folder(d.Name(), d, seen); list != (d.Name() == "kept") {
			t.Errorf("folder %s: list it %v", d.Name(), list)
		}
	}
	if logs.String() != "" {
		t.Errorf("logs:\n%s", logs)
	}
	if w.unwatched {
		t.Error("rescans stand in for a folder that is gone")
	}
	if _, watched := w.watched["kept"]; !seen["kept"] || len(seen) != 1 || !watched || len(w.watched) != 1 || len(w.fw.WatchList()) != 1 {
		t.Errorf("seen %v, watched %v, kernel watches %q; want kept alone", seen, w.watched, w.fw.WatchList())
	}
	if len(w.out) != 1 || w.out[0].index.Entry.Path != "kept" || w.out[0].index.Entry.Type != store.FileTypeDir {
		t.Errorf("logged %+v; want the folder kept alone", w.out)
	}
}

// TestAFileGoneOnceSettledIsNotHashed describes a file that was removed
// after it settled: its event has no hash, and no warning is logged, since
// its FILE_DELETE follows.
func TestAFileGoneOnceSettledIsNotHashed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	name := filepath.Join(dir, "brief.txt")
	if err := os.WriteFile(name, []byte("brief"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	w, logs := testWatcher(t, config.Storage{Path: dir, HashLimit: 1 << 20})
	if m := w.meta(entryOf("brief.txt", fi), fi); m.SHA256 != "" || m.Size != 5 || m.Mode != "0644" {
		t.Errorf("meta %+v", m)
	}
	if logs.String() != "" {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestAFolderWalkedUnderItsNewNameStaysWatched walks a watched folder
// moved since, before the events of the move are handled: so does the walk
// of a new folder that a folder was moved into at once, or a rescan. The
// kernel keeps one watch a folder, which fsnotify kept under the old name,
// and removed with it when the events of the move came. The folder stays
// watched under its new name.
func TestAFolderWalkedUnderItsNewNameStaysWatched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "old", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, logs := testWatcher(t, config.Storage{Path: dir})
	in := listen(w.fw, 1000)
	if err := w.walk(".", nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "old"), filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	if err := w.walk(".", nil); err != nil { // before the rename's events
		t.Fatal(err)
	}
	if handleAll(t, w, in) == 0 {
		t.Fatal("no event of the rename")
	}
	for _, f := range []string{"new/a.txt", "new/sub/b.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if !created(t, in, filepath.Join(dir, f)) {
			t.Errorf("no event for %s: watches %q", f, w.fw.WatchList())
		}
	}
	if logs.String() != "" {
		t.Errorf("logs:\n%s", logs)
	}
}

// created waits up to a second for the inbox to hold the creation of name,
// and reports whether it did.
func created(t *testing.T, in *inbox, name string) bool {
	t.Helper()
	timeout := time.After(time.Second)
	for {
		select {
		case <-in.ready:
		case <-timeout:
			return false
		}
		events, _, err := in.take(100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if ev.Name == name && ev.Has(fsnotify.Create) {
				return true
			}
		}
	}
}

// handleAll handles the inbox's events until none comes for 300ms, and
// returns how many it handled.
func handleAll(t *testing.T, w *watcher, in *inbox) int {
	t.Helper()
	n := 0
	for {
		select {
		case <-in.ready:
		case <-time.After(300 * time.Millisecond):
			return n
		}
		events, _, err := in.take(100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if err := w.handle(ev); err != nil {
				t.Fatal(err)
			}
		}
		n += len(events)
	}
}

// TestAFolderMovedAndBackWhileEventsWereLostStaysWatched moves a watched
// folder away and back while the events that tell of it are lost, as when
// a queue overflows: fsnotify dropped the folder's watch on its move, and
// the comparison that follows the loss watches it again.
func TestAFolderMovedAndBackWhileEventsWereLostStaysWatched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, logs := testWatcher(t, config.Storage{Path: dir})
	in := listen(w.fw, 1000)
	if err := w.walk(".", nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.out { // logged
		w.known[c.index.Entry.Path] = c.index.Entry
	}
	w.out = nil
	for _, mv := range [][2]string{{"a", "b"}, {"b", "a"}} {
		if err := os.Rename(filepath.Join(dir, mv[0]), filepath.Join(dir, mv[1])); err != nil {
			t.Fatal(err)
		}
	}
	loseAll(t, in)
	if err := w.rescan(t.Context(), "events lost"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "x.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !created(t, in, filepath.Join(dir, "a", "x.txt")) {
		t.Errorf("no event for a/x.txt: watches %q", w.fw.WatchList())
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("logs:\n%s", logs)
	}
}

// loseAll takes the inbox's events, without handling them, until none
// comes for 300ms.
func loseAll(t *testing.T, in *inbox) {
	t.Helper()
	for {
		select {
		case <-in.ready:
		case <-time.After(300 * time.Millisecond):
			return
		}
		if _, _, err := in.take(100); err != nil {
			t.Fatal(err)
		}
	}
}
