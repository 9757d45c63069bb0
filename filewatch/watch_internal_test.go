package filewatch

import (
	"log/slog"
	"os"
	"path/filepath"
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
	return &watcher{s: s, fw: fw, known: make(map[string]store.FileEntry), pending: make(map[string]time.Time), watched: make(map[string]bool)}, logs
}

// TestAFolderGoneWhileWalkedIsLeftAlone walks folders that were removed, or
// replaced by a file, after their folder was listed: they are simply gone,
// and what became of them is reported by the kernel.
func TestAFolderGoneWhileWalkedIsLeftAlone(t *testing.T) {
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
	if !seen["kept"] || len(seen) != 1 || !w.watched["kept"] || len(w.watched) != 1 || len(w.fw.WatchList()) != 1 {
		t.Errorf("seen %v, watched %v, kernel watches %q; want kept alone", seen, w.watched, w.fw.WatchList())
	}
	if len(w.out) != 1 || w.out[0].Index.Entry.Path != "kept" || w.out[0].Index.Entry.Type != store.FileTypeDir {
		t.Errorf("logged %+v; want the folder kept alone", w.out)
	}
}

// TestAFileGoneOnceSettledIsNotHashed describes a file that was removed
// after it settled: its event has no hash, and no warning is logged, since
// its FILE_DELETE follows.
func TestAFileGoneOnceSettledIsNotHashed(t *testing.T) {
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
