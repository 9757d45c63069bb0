package filewatch_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/internal/waittest"
)

func TestCreateCarriesTheFilesMeta(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	before := time.Now()
	r.write("a.txt", "hello")
	got := r.expect("created file a.txt")
	var d fileData
	r.must(json.Unmarshal(got[0].Data, &d))
	sum := sha256.Sum256([]byte("hello"))
	fi, err := os.Stat(r.path("a.txt"))
	r.must(err)
	if d.Store != "up" || d.Meta.Size != 5 || d.Meta.Mode != "0644" || d.Meta.SHA256 != hex.EncodeToString(sum[:]) ||
		d.Meta.Modified != fi.ModTime().UTC().Format(time.RFC3339Nano) {
		t.Errorf("data %s", got[0].Data)
	}
	seenAt, err := time.Parse(time.RFC3339Nano, got[0].Time)
	r.must(err)
	if seenAt.Before(before) || seenAt.After(got[0].At) {
		t.Errorf("event time %s is not when the file was seen (between %s and %s)", got[0].Time, before, got[0].At)
	}
	if idx := r.indexed(); len(idx) != 1 || idx[0] != "file a.txt 5" {
		t.Errorf("index %q", idx)
	}
}

func TestSlowWriterIsLoggedOnceDone(t *testing.T) {
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	f, err := os.Create(r.path("slow.bin"))
	r.must(err)
	chunk := make([]byte, 1000)
	for range 8 { // 1.2 s of writes, each within the 250 ms settle time of the last
		_, err := f.Write(chunk)
		r.must(err)
		time.Sleep(150 * time.Millisecond)
		if n := r.hook.Count(); n != 0 {
			t.Fatalf("%d deliveries while the file was still being written", n)
		}
	}
	r.must(f.Close())
	got := r.expect("created file slow.bin")
	var d fileData
	r.must(json.Unmarshal(got[0].Data, &d))
	if d.Meta.Size != 8000 {
		t.Errorf("the event describes %d bytes, want the whole file's 8000", d.Meta.Size)
	}

	// A writer that pauses for longer than the settle time, with the file
	// still open: Linux tells that it is open for writing.
	if runtime.GOOS == "linux" {
		r.reset()
		f, err := os.Create(r.path("paused.bin"))
		r.must(err)
		_, err = f.Write(chunk)
		r.must(err)
		time.Sleep(800 * time.Millisecond)
		if n := r.hook.Count(); n != 0 {
			t.Fatalf("%d deliveries while the file was still open for writing", n)
		}
		_, err = f.Write(chunk)
		r.must(err)
		r.must(f.Close())
		got := r.expect("created file paused.bin")
		r.must(json.Unmarshal(got[0].Data, &d))
		if d.Meta.Size != 2000 {
			t.Errorf("the event describes %d bytes, want the whole file's 2000", d.Meta.Size)
		}
	}

	// A file created and removed before it settled was never complete:
	// nothing is logged for it.
	r.reset()
	r.write("brief.tmp", "x")
	r.must(os.Remove(r.path("brief.tmp")))
	r.expect()
}

func TestFoldersNestedAndMovedInWithFiles(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("a/b/c/deep.txt", "deep")
	r.expect("created dir a", "created dir a/b", "created dir a/b/c", "created file a/b/c/deep.txt")

	// A folder made elsewhere with files and a subfolder, moved in at once.
	r.reset()
	outside := t.TempDir()
	r.must(os.MkdirAll(filepath.Join(outside, "batch", "sub"), 0o755))
	for _, name := range []string{"batch/1.txt", "batch/2.txt", "batch/sub/3.txt"} {
		r.must(os.WriteFile(filepath.Join(outside, filepath.FromSlash(name)), []byte(name), 0o644))
	}
	r.must(os.Rename(filepath.Join(outside, "batch"), r.path("batch")))
	r.expect("created dir batch", "created dir batch/sub", "created file batch/1.txt", "created file batch/2.txt", "created file batch/sub/3.txt")

	// A file moved in from outside is a create.
	r.reset()
	r.must(os.WriteFile(filepath.Join(outside, "in.txt"), []byte("in"), 0o644))
	r.must(os.Rename(filepath.Join(outside, "in.txt"), r.path("a/in.txt")))
	r.expect("created file a/in.txt")
}

func TestRenamesAndMovesOut(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("x.txt", "x")
	r.write("d/f.txt", "f")
	r.write("d/e/g.txt", "g")
	r.expect("created file x.txt", "created dir d", "created file d/f.txt", "created dir d/e", "created file d/e/g.txt")

	r.reset()
	r.must(os.Rename(r.path("x.txt"), r.path("y.txt")))
	r.expect("deleted file x.txt", "created file y.txt")

	r.reset()
	r.must(os.Rename(r.path("d"), r.path("renamed")))
	r.expect("deleted dir d", "deleted file d/f.txt", "deleted dir d/e", "deleted file d/e/g.txt",
		"created dir renamed", "created file renamed/f.txt", "created dir renamed/e", "created file renamed/e/g.txt")
	// The renamed folder is watched under its new name.
	r.reset()
	r.write("renamed/e/h.txt", "h")
	r.expect("created file renamed/e/h.txt")

	// Moves out are deletes; what happens afterwards out there is not ours.
	r.reset()
	outside := t.TempDir()
	r.must(os.Rename(r.path("y.txt"), filepath.Join(outside, "y.txt")))
	r.must(os.Rename(r.path("renamed"), filepath.Join(outside, "renamed")))
	r.expect("deleted file y.txt", "deleted dir renamed", "deleted file renamed/f.txt", "deleted dir renamed/e",
		"deleted file renamed/e/g.txt", "deleted file renamed/e/h.txt")
	r.reset()
	r.must(os.WriteFile(filepath.Join(outside, "renamed", "later.txt"), []byte("l"), 0o644))
	r.expect()
	if idx := r.indexed(); len(idx) != 0 {
		t.Errorf("index after everything moved out: %q", idx)
	}
}

func TestDeletesOfFilesAndFolders(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("keep.txt", "k")
	r.write("gone.txt", "g")
	r.write("tree/a.txt", "a")
	r.write("tree/sub/b.txt", "b")
	r.expect("created file keep.txt", "created file gone.txt", "created dir tree", "created file tree/a.txt",
		"created dir tree/sub", "created file tree/sub/b.txt")
	r.reset()
	r.must(os.Remove(r.path("gone.txt")))
	r.must(os.RemoveAll(r.path("tree")))
	got := r.expect("deleted file gone.txt", "deleted dir tree", "deleted file tree/a.txt", "deleted dir tree/sub", "deleted file tree/sub/b.txt")
	for _, rc := range got {
		var d fileData
		r.must(json.Unmarshal(rc.Data, &d))
		if d.Path == "tree/sub/b.txt" && d.Meta.Size != 1 {
			t.Errorf("a delete carries the size the index knew: %s", rc.Data)
		}
	}
	if idx := r.indexed(); len(idx) != 1 || idx[0] != "file keep.txt 1" {
		t.Errorf("index %q", idx)
	}
}

func TestRewriteIsNotACreate(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("a.txt", "one")
	r.expect("created file a.txt")
	r.reset()
	r.write("a.txt", "three")
	r.expect()
	waittest.For(t, 5*time.Second, func() error {
		if idx := r.indexed(); len(idx) != 1 || idx[0] != "file a.txt 5" {
			return fmt.Errorf("the index does not follow the rewrite: %q", idx)
		}
		return nil
	})
}

func TestIgnoreGlobs(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", `ignore: ["*.tmp", ".*", "cache/**"]`, both), filewatch.Options{}, false)
	r.write("upload.bin.tmp", "partial")
	r.write(".hidden", "h")
	r.write(".git/objects/x", "x")
	r.write("cache/thumbs/y.png", "y")
	r.write("sub/z.tmp", "z")
	r.write("sub/ok.txt", "ok")
	r.write("not-utf8-\xff.txt", "names Postgres cannot hold are left out")
	r.expect("created dir sub", "created file sub/ok.txt")

	// A download renamed to its final name is a create.
	r.reset()
	r.must(os.Rename(r.path("upload.bin.tmp"), r.path("upload.bin")))
	r.expect("created file upload.bin")
	if idx := r.indexed(); len(idx) != 3 {
		t.Errorf("the index holds ignored paths: %q", idx)
	}
}

func TestPathGlobsChooseTriggers(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", `
- {name: thumb, type: FILE_CREATE, url: "{hook}/thumb", options: {path: "images/**/*.png"}}
- {name: created, type: FILE_CREATE, url: "{hook}/created", options: {store: up}}
- {name: docs-gone, type: FILE_DELETE, url: "{hook}/docs-gone", options: {path: "docs/*"}}`), filewatch.Options{}, false)
	r.write("images/2026/cat.png", "png")
	r.write("images/notes.txt", "txt")
	r.write("docs/a.md", "a")
	r.expect("thumb file images/2026/cat.png",
		"created dir images", "created dir images/2026", "created file images/2026/cat.png", "created file images/notes.txt",
		"created dir docs", "created file docs/a.md")
	r.reset()
	r.must(os.Remove(r.path("docs/a.md")))
	r.must(os.Remove(r.path("images/notes.txt")))
	r.expect("docs-gone file docs/a.md")
}

func TestChangesWhileStoppedAreLoggedAtStart(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	cfg := r.config("n1", "", both)
	n := r.start(cfg, filewatch.Options{}, false)
	r.write("stays.txt", "s")
	r.write("grows.txt", "g")
	r.write("goes.txt", "x")
	r.write("old/inner.txt", "i")
	r.write("was-dir/inner.txt", "w")
	r.expect("created file stays.txt", "created file grows.txt", "created file goes.txt", "created dir old", "created file old/inner.txt",
		"created dir was-dir", "created file was-dir/inner.txt")
	n.stop()

	r.reset()
	r.must(os.Remove(r.path("goes.txt")))
	r.must(os.RemoveAll(r.path("old")))
	r.write("grows.txt", "grown while stopped") // a change, not a create
	r.write("new.txt", "n")
	r.write("fresh/deeper/f.txt", "f")
	r.must(os.RemoveAll(r.path("was-dir")))
	r.write("was-dir", "now a file")
	r.must(os.Chtimes(r.path("stays.txt"), time.Now(), time.Now().Add(-time.Hour)))
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.expect("deleted file goes.txt", "deleted dir old", "deleted file old/inner.txt",
		"created file new.txt", "created dir fresh", "created dir fresh/deeper", "created file fresh/deeper/f.txt",
		"deleted dir was-dir", "deleted file was-dir/inner.txt", "created file was-dir")
	idx := r.indexed()
	if !slices.Contains(idx, "file grows.txt 19") {
		t.Errorf("the index does not follow a change made while stopped: %q", idx)
	}
}

func TestOverflowLeadsToARescan(t *testing.T) {
	limit, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skipf("no inotify queue limit to overflow: %v", err)
	}
	queue, err := strconv.Atoi(strings.TrimSpace(string(limit)))
	if err != nil || queue > 100_000 {
		t.Skipf("the inotify queue holds %s events: too many to overflow in a test", limit)
	}
	r := newRig(t)
	r.start(r.config("n1", "settle: 50ms", `- {name: created, type: FILE_CREATE, url: "{hook}/created", concurrency: 64}`), filewatch.Options{}, false)

	// Hold the watcher in its first write, so the queue of events fills up.
	release := r.holdIndex("first.txt")

	// In a folder already watched: the kernel queues an event for each.
	n := queue + queue/4
	for i := range n {
		f, err := os.Create(r.path(fmt.Sprintf("burst-%06d", i)))
		r.must(err)
		r.must(f.Close())
	}
	release()

	ctx := context.Background()
	conn := r.db()
	// 4s alone without -race, 26s with it, and over 60s with -race beside
	// three other packages' tests on 2 cores.
	deadline := time.Now().Add(120 * time.Second)
	want := n + 1 // first.txt too
	for {
		var logged, paths int
		r.must(conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT payload->>'path') FROM `+
			pgx.Identifier{r.schema, "event_logs"}.Sanitize()).Scan(&logged, &paths))
		if logged == want && paths == want {
			break
		}
		if logged > want || time.Now().After(deadline) {
			t.Fatalf("%d events for %d paths logged, want %d", logged, paths, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(r.logs.String(), "overflowed") {
		t.Errorf("the event queue (%d events) did not overflow with %d files; the rescan was not tested:\n%s", queue, n, r.logs.String())
	}
}

// holdIndex locks the store's file_index and writes the file rel, and
// returns when the watcher waits for the lock to log it; release lets it
// go on.
func (r *rig) holdIndex(rel string) (release func()) {
	r.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.storeURL)
	r.must(err)
	tx, err := conn.Begin(ctx)
	r.must(err)
	release = sync.OnceFunc(func() {
		r.must(tx.Rollback(ctx))
		r.must(conn.Close(ctx))
	})
	r.t.Cleanup(release)
	table := pgx.Identifier{r.schema, "file_index"}.Sanitize()
	_, err = tx.Exec(ctx, `LOCK TABLE `+table+` IN ACCESS EXCLUSIVE MODE`)
	r.must(err)
	r.write(rel, "1")
	waittest.For(r.t, 10*time.Second, func() error {
		var waiting bool
		r.must(r.db().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND relation = $1::regclass)`, table).Scan(&waiting))
		if !waiting {
			return errors.New("the watcher did not try to log")
		}
		return nil
	})
	return release
}

func TestStandbyTakesOverAndCatchesUp(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.start(r.config("a", "", both), filewatch.Options{LockRetry: 100 * time.Millisecond}, false)
	b := r.start(r.config("b", "", both), filewatch.Options{LockRetry: 100 * time.Millisecond}, true)
	r.write("one.txt", "1")
	r.expect("created file one.txt")
	if b.sources[0].Watching() {
		t.Fatal("both nodes watch the directory")
	}
	a.stop()
	r.reset()
	r.write("two.txt", "2")
	r.must(os.Remove(r.path("one.txt")))
	b.waitWatching(t)
	r.expect("created file two.txt", "deleted file one.txt")
}

func TestFileReplacedByAFolder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("thing", "a file")
	r.expect("created file thing")
	r.reset()
	r.must(os.Remove(r.path("thing")))
	r.write("thing/inside.txt", "now a folder")
	r.expect("deleted file thing", "created dir thing", "created file thing/inside.txt")
}

func TestCheckExplainsABadPath(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.write("plain-file", "x")
	for _, c := range []struct{ path, want string }{
		{r.path("missing"), "does not exist: create it, or fix storage.up.path"},
		{r.path("plain-file"), "is not a directory: fix storage.up.path"},
	} {
		cfg := r.config("n1", "", both)
		p := cfg.Projects[0].Storage["up"]
		p.Path = c.path
		cfg.Projects[0].Storage["up"] = p
		srcs, err := filewatch.Sources(cfg, nil, nil, filewatch.Options{})
		r.must(err)
		if err := srcs[0].Check(context.Background()); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("Check of %s: %v, want it to name the path and say %q", c.path, err, c.want)
		}
	}
}

func TestDirectoryRemovedAndBack(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("old.txt", "o")
	r.expect("created file old.txt")
	r.reset()
	r.must(os.RemoveAll(r.dir))
	time.Sleep(300 * time.Millisecond) // a session or two finds it missing
	r.must(os.Mkdir(r.dir, 0o755))
	r.write("new.txt", "n")
	r.expect("deleted file old.txt", "created file new.txt")
	if !strings.Contains(r.logs.String(), "does not exist") {
		t.Errorf("the missing directory was not reported:\n%s", r.logs.String())
	}
}

func TestHashLimit(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "hash_limit: 4", `- {name: created, type: FILE_CREATE, url: "{hook}/created"}`), filewatch.Options{}, false)
	r.write("small.txt", "hey")
	r.write("large.txt", "hello")
	got := r.expect("created file small.txt", "created file large.txt")
	for _, rc := range got {
		var d fileData
		r.must(json.Unmarshal(rc.Data, &d))
		if hashed := d.Meta.SHA256 != ""; hashed != (d.Path == "small.txt") {
			t.Errorf("with hash_limit 4, %s (%d bytes) has sha256 %q", d.Path, d.Meta.Size, d.Meta.SHA256)
		}
	}
}

func TestFoldersMovedOutAndRemovedAtOnce(t *testing.T) {
	t.Parallel()
	// The kernel reports a folder moved out to its parent's watch, then to
	// the folder's own watch, which it has dropped when fsnotify reads that
	// (the folder is removed). fsnotify fails to remove the watch, and
	// reports it holding the lock that Remove takes, while the watcher
	// removes the folder's watch on the first report: it goes on watching.
	r := newRig(t)
	r.start(r.config("n1", `ignore: ["*.tmp"]`, both), filewatch.Options{}, false)
	outside := t.TempDir()
	var want []string
	for i := range 100 {
		r.must(os.Mkdir(r.path(fmt.Sprintf("d%d", i)), 0o755))
		want = append(want, fmt.Sprintf("created dir d%d", i), fmt.Sprintf("deleted dir d%d", i))
	}
	r.hook.Wait(t, 100, 15*time.Second) // watched
	// The kernel queues it all while the watcher waits for the store. An
	// event the watcher leaves out comes before each move, so that the
	// watcher waits for the next event when fsnotify hands the move over.
	release := r.holdIndex("first.txt")
	for i := range 100 {
		r.write("ignored.tmp", "i") // an event before each move
		away := filepath.Join(outside, fmt.Sprintf("d%d", i))
		r.must(os.Rename(r.path(fmt.Sprintf("d%d", i)), away))
		r.must(os.Remove(away))
	}
	release()
	r.write("after.txt", "a")
	r.expect(append(want, "created file first.txt", "created file after.txt")...)
	if strings.Contains(r.logs.String(), "watching stopped") {
		t.Errorf("the watcher restarted:\n%s", r.logs.String())
	}
}

func TestAPathLeftOutIsNamedOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("not-utf8-\xff.txt", "x")
	r.write("ok.txt", "o")
	r.expect("created file ok.txt")
	logs := r.logs.String()
	if !strings.Contains(logs, `msg="a path is not valid UTF-8; it is left out"`) || !strings.Contains(logs, `not-utf8-\\xff.txt`) {
		t.Errorf("no warning names the path that is not UTF-8:\n%s", logs)
	}
	if dups := r.repeatedKeys(); len(dups) > 0 {
		t.Errorf("log lines with a key twice:\n%s", strings.Join(dups, "\n"))
	}
}

func TestAFileThatBecameAFolderWhileStoppedIsWatched(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	n := r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("thing", "a file")
	r.expect("created file thing")
	n.stop()
	r.reset()
	r.must(os.Remove(r.path("thing")))
	r.write("thing/in.txt", "now a folder")
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.expect("deleted file thing", "created dir thing", "created file thing/in.txt")
	r.reset()
	r.write("thing/later.txt", "l")
	r.expect("created file thing/later.txt")
}

func TestAPathThatBecameASymlinkIsADelete(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	n := r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.write("live.txt", "l")
	r.write("stopped.txt", "s")
	r.write("target.txt", "t")
	r.expect("created file live.txt", "created file stopped.txt", "created file target.txt")

	// A symbolic link moved over a file: the kernel tells of the move only.
	r.reset()
	r.must(os.Symlink(r.path("target.txt"), r.path("link")))
	r.must(os.Rename(r.path("link"), r.path("live.txt")))
	r.expect("deleted file live.txt")

	// The same while no node watched.
	n.stop()
	r.reset()
	r.must(os.Symlink(r.path("target.txt"), r.path("link")))
	r.must(os.Rename(r.path("link"), r.path("stopped.txt")))
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	r.expect("deleted file stopped.txt")
	if idx := r.indexed(); !slices.Equal(idx, []string{"file target.txt 1"}) {
		t.Errorf("index %q, want target.txt alone", idx)
	}
}
