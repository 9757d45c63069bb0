//go:build unix

package filewatch

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// TestAFileReplacedBeforeItIsHashedIsLeftAlone describes files that settled
// as regular files and were then replaced, before their hash was read, by
// a folder, a FIFO, a symlink, or a file in place of their folder: their
// events carry no sha256, nothing is logged (the events of the change
// follow), and a FIFO does not block the watcher. A file left as it was
// gets its sha256.
func TestAFileReplacedBeforeItIsHashedIsLeftAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	abs := func(rel string) string { return filepath.Join(dir, rel) }
	for _, rel := range []string{"kept", "now-a-folder", "now-a-fifo", "now-a-symlink", "gone-folder/f"} {
		must(os.MkdirAll(filepath.Dir(abs(rel)), 0o755))
		must(os.WriteFile(abs(rel), []byte("content"), 0o644))
	}
	settled := make(map[string]os.FileInfo)
	for _, rel := range []string{"kept", "now-a-folder", "now-a-fifo", "now-a-symlink", "gone-folder/f"} {
		fi, err := os.Lstat(abs(rel))
		must(err)
		settled[rel] = fi
	}
	must(os.Remove(abs("now-a-folder")))
	must(os.Mkdir(abs("now-a-folder"), 0o755))
	must(os.Remove(abs("now-a-fifo")))
	must(syscall.Mkfifo(abs("now-a-fifo"), 0o644))
	must(os.Remove(abs("now-a-symlink")))
	must(os.Symlink(abs("kept"), abs("now-a-symlink")))
	must(os.RemoveAll(abs("gone-folder")))
	must(os.WriteFile(abs("gone-folder"), []byte("x"), 0o644))

	w, logs := testWatcher(t, config.Storage{Path: dir, HashLimit: 1 << 20})
	for rel, fi := range settled {
		e := store.FileEntry{Path: rel, Type: store.FileTypeFile, Size: fi.Size(), Modified: fi.ModTime()}
		got := make(chan meta, 1)
		go func() { got <- w.meta(e, fi) }()
		select {
		case m := <-got:
			if hashed := m.SHA256 != ""; hashed != (rel == "kept") {
				t.Errorf("%s: sha256 %q", rel, m.SHA256)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: reading its hash still blocks after 5s", rel)
		}
	}
	if logs.String() != "" {
		t.Errorf("logs:\n%s", logs)
	}
}
