package filewatch_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/internal/waittest"
)

var (
	randomSeed  = flag.Uint64("seed", 0, "TestRandomFileOperations: the first seed to run (0: the seeds CI runs)")
	randomSeeds = flag.Int("seeds", 1, "TestRandomFileOperations: how many seeds to run, from -seed on")
	randomOps   = flag.Int("ops", 400, "TestRandomFileOperations: file operations a seed")
)

// ciSeeds are the seeds TestRandomFileOperations runs without -seed.
var ciSeeds = []uint64{1, 2, 3}

// TestRandomFileOperations makes random changes to a watched directory
// (files and folders created, written to, renamed, removed, moved in and
// out, under odd names, folders renamed and removed at once) and then
// checks that the events logged, replayed in order, give the tree on disk,
// that the index equals it, and that a new file is still delivered. CI
// runs a few seeds of 400 operations. A seed's operations replay exactly,
// their timing against the watcher's does not: run a failing seed a few
// times, with
//
//	go test -run TestRandomFileOperations ./filewatch -seed N -ops M
//
// and many seeds with -seed 1 -seeds 200 (the flags are this package's:
// name it alone). A watcher that stops for good hangs the test's cleanup
// until go test's -timeout, after the test has printed its goroutines.
func TestRandomFileOperations(t *testing.T) {
	t.Parallel()
	seeds := ciSeeds
	if *randomSeed != 0 {
		seeds = nil
		for i := range *randomSeeds {
			seeds = append(seeds, *randomSeed+uint64(i))
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("replay: go test -run 'TestRandomFileOperations' ./filewatch -seed %d -ops %d", seed, *randomOps)
				}
			})
			randomRun(t, seed, *randomOps)
		})
	}
}

// randomRun is one seed of TestRandomFileOperations.
func randomRun(t *testing.T, seed uint64, ops int) {
	r := newRig(t)
	g := &gen{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), root: r.dir, outside: t.TempDir(), tree: map[string]bool{".": true}}
	for range 15 { // some of the tree is there before the node starts
		g.step(false)
	}
	r.start(r.config("n1", `ignore: ["*.tmp"]`, `
- {name: created, type: FILE_CREATE, url: "{hook}/created", concurrency: 16}
- {name: deleted, type: FILE_DELETE, url: "{hook}/deleted", concurrency: 16}`), filewatch.Options{}, false)
	for range ops {
		g.step(true)
	}
	t.Logf("seed %d: %d operations: %v", seed, ops, g.done)

	if diff := r.caughtUp(20 * time.Second); len(diff) > 0 {
		t.Errorf("20s after the last change, the watcher has not caught up:\n  %s", strings.Join(head(diff, 40), "\n  "))
	}

	// The watcher still watches: a file in the directory and one in its
	// deepest folder are delivered.
	deepest := "."
	for _, p := range slices.Sorted(maps.Keys(g.tree)) {
		if g.tree[p] && strings.Count(p, "/") > strings.Count(deepest, "/") && inIndex(p) {
			deepest = p
		}
	}
	want := []string{"created file sentinel.txt"}
	r.write("sentinel.txt", "s")
	if deepest != "." {
		r.write(deepest+"/sentinel.txt", "s")
		want = append(want, "created file "+deepest+"/sentinel.txt")
	}
	if err := waittest.Until(20*time.Second, func() error {
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool {
			return slices.ContainsFunc(r.hook.Receipts(), func(rc dispatchtest.Receipt) bool { return seen(rc) == w })
		})
		if len(missing) > 0 {
			return fmt.Errorf("not delivered: %q", missing)
		}
		return nil
	}); err != nil {
		t.Errorf("%v; the watcher's goroutines:\n%s", err, stacks())
	}

	// Nothing was logged late, such as a stale event's.
	if diff := r.caughtUp(0); len(diff) > 0 {
		t.Errorf("once the new files were delivered, the events and the index differ from the disk:\n  %s", strings.Join(head(diff, 40), "\n  "))
	}

	// Nothing else went wrong on the way.
	for _, d := range r.repeatedKeys() {
		t.Errorf("a log line names a key twice: %s", d)
	}
	for line := range strings.Lines(r.logs.String()) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			if !strings.Contains(line, "is not valid UTF-8") && !strings.Contains(line, "overflowed") {
				t.Errorf("unexpected log: %s", line)
			}
		}
	}
	if t.Failed() {
		t.Logf("the node's log:\n%s", r.logs.String())
		t.Logf("the operations:\n%s", strings.Join(g.trace, "\n"))
	}
}

// caughtUp waits up to within until the index and the events agree with
// the disk, and returns how they differ.
func (r *rig) caughtUp(within time.Duration) []string {
	r.t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		disk := diskTree(r.t, r.dir)
		diff := append(r.replayDiff(disk), r.indexDiff(disk)...)
		if len(diff) == 0 || time.Now().After(deadline) {
			return diff
		}
	}
}

// inIndex reports whether a path is one the watcher indexes: valid UTF-8 and
// not under the ignore glob of TestRandomFileOperations.
func inIndex(rel string) bool {
	if !utf8.ValidString(rel) {
		return false
	}
	for name := range strings.SplitSeq(rel, "/") {
		if ok, _ := doublestar.Match("*.tmp", name); ok {
			return false
		}
	}
	return true
}

// entry is a path's type and, for a file, size.
type entry struct {
	typ  string
	size int64
}

// diskTree lists what the watcher should index under dir.
func diskTree(t testing.TB, dir string) map[string]entry {
	t.Helper()
	out := make(map[string]entry)
	err := filepath.WalkDir(dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, name)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if !inIndex(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
			out[rel] = entry{typ: "dir"}
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			out[rel] = entry{typ: "file", size: fi.Size()}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list the directory: %v", err)
	}
	return out
}

// indexDiff lists how the index differs from the tree on disk.
func (r *rig) indexDiff(disk map[string]entry) []string {
	r.t.Helper()
	ctx := context.Background()
	rows, err := r.db().Query(ctx, `SELECT path, type, size FROM `+pgx.Identifier{r.schema, "file_index"}.Sanitize())
	r.must(err)
	index := make(map[string]entry)
	for rows.Next() {
		var p string
		var e entry
		r.must(rows.Scan(&p, &e.typ, &e.size))
		if e.typ == "dir" {
			e.size = 0
		}
		index[p] = e
	}
	r.must(rows.Err())
	return treeDiff("index", index, disk)
}

// treeDiff lists how the tree got differs from the tree on disk, got
// naming it.
func treeDiff(got string, have, disk map[string]entry) []string {
	var out []string
	for p, e := range disk {
		if h, ok := have[p]; !ok {
			out = append(out, fmt.Sprintf("%s lacks %s %q", got, e.typ, p))
		} else if h != e {
			out = append(out, fmt.Sprintf("%s has %s %q of %d bytes, the disk %s of %d", got, h.typ, p, h.size, e.typ, e.size))
		}
	}
	for p, h := range have {
		if _, ok := disk[p]; !ok {
			out = append(out, fmt.Sprintf("%s has %s %q, gone from the disk", got, h.typ, p))
		}
	}
	slices.Sort(out)
	return out
}

// logged is an event of the log.
type logged struct {
	kind, path, typ string
	at              time.Time
}

// replayDiff replays the events logged, in order, from an empty directory,
// and lists what is wrong with them and how the tree they give differs from
// the tree on disk (types only: a rewrite has no event).
func (r *rig) replayDiff(disk map[string]entry) []string {
	r.t.Helper()
	ctx := context.Background()
	rows, err := r.db().Query(ctx, `SELECT type, payload->>'path', payload->>'type', event_time FROM `+
		pgx.Identifier{r.schema, "event_logs"}.Sanitize()+` ORDER BY event_time`)
	r.must(err)
	var events []logged
	for rows.Next() {
		var e logged
		r.must(rows.Scan(&e.kind, &e.path, &e.typ, &e.at))
		events = append(events, e)
	}
	r.must(rows.Err())
	// The store keeps times in microseconds: of events logged within one,
	// deletes come first (deepest first), then creates (parents first), as
	// the watcher makes them.
	slices.SortStableFunc(events, func(a, b logged) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		if a.kind != b.kind {
			return strings.Compare(b.kind, a.kind) // FILE_DELETE before FILE_CREATE
		}
		if a.kind == "FILE_DELETE" {
			return strings.Compare(b.path, a.path)
		}
		return strings.Compare(a.path, b.path)
	})
	var problems []string
	tree := make(map[string]entry)
	for i, e := range events {
		switch e.kind {
		case "FILE_CREATE":
			if h, ok := tree[e.path]; ok {
				problems = append(problems, fmt.Sprintf("event %d: FILE_CREATE of %s %q, which is there as a %s", i, e.typ, e.path, h.typ))
			}
			if p := parentOf(e.path); p != "." && tree[p].typ != "dir" {
				problems = append(problems, fmt.Sprintf("event %d: FILE_CREATE of %s %q before its folder's", i, e.typ, e.path))
			}
			tree[e.path] = entry{typ: e.typ}
		case "FILE_DELETE":
			if h, ok := tree[e.path]; !ok || h.typ != e.typ {
				problems = append(problems, fmt.Sprintf("event %d: FILE_DELETE of %s %q, which is not there", i, e.typ, e.path))
			}
			if e.typ == "dir" {
				for p := range tree {
					if strings.HasPrefix(p, e.path+"/") {
						problems = append(problems, fmt.Sprintf("event %d: FILE_DELETE of folder %q before that of %q in it", i, e.path, p))
					}
				}
			}
			delete(tree, e.path)
		}
	}
	types := make(map[string]entry, len(disk))
	for p, e := range disk {
		types[p] = entry{typ: e.typ}
	}
	return append(problems, treeDiff("the events replayed", tree, types)...)
}

// parentOf is the folder of a relative path, "." at the top.
func parentOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return "."
}

// head is the first n of lines, saying how many more there are.
func head(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	return append(slices.Clip(lines[:n]), fmt.Sprintf("... and %d more", len(lines)-n))
}

// stacks returns the stacks of the goroutines in filewatch and fsnotify.
func stacks() string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("fsnotify")) || bytes.Contains(g, []byte("filewatch.")) {
			out = append(out, string(g))
		}
	}
	return strings.Join(out, "\n\n")
}

// gen makes random changes to a directory, keeping a model of its tree to
// pick from.
type gen struct {
	t       *testing.T
	rng     *rand.Rand
	root    string
	outside string // a folder outside the directory, to move things in from and out to
	n       int    // names made outside so far
	// tree holds every path under root by relative path, with whether it is
	// a folder; "." is root itself.
	tree  map[string]bool
	done  map[string]int // operations done, by name
	trace []string       // the operations done, described
}

// step makes one random change; with pauses, it sometimes waits a while.
func (g *gen) step(pauses bool) {
	if g.done == nil {
		g.done = make(map[string]int)
	}
	ops := []struct {
		name   string
		weight int
		do     func() string
	}{
		{"create", 16, g.createFile},
		{"append", 8, g.appendFile},
		{"rename-file", 8, g.renameFile},
		{"rename-folder", 7, g.renameFolder},
		{"remove-file", 6, g.removeFile},
		{"remove-tree", 4, g.removeTree},
		{"mkdir", 9, g.mkdirNested},
		{"move-in", 5, g.moveIn},
		{"move-out", 4, g.moveOut},
		{"rename-remove-folder", 6, g.renameRemoveFolder},
		{"swap-type", 3, g.swapType},
		{"symlink", 2, g.symlink},
		{"pause", 4, func() string {
			if !pauses {
				return ""
			}
			d := time.Duration(g.rng.IntN(300)) * time.Millisecond
			time.Sleep(d)
			return fmt.Sprintf("pause %s", d)
		}},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	n := g.rng.IntN(total)
	for _, o := range ops {
		if n < o.weight {
			if did := o.do(); did != "" {
				g.done[o.name]++
				g.trace = append(g.trace, did)
			}
			return
		}
		n -= o.weight
	}
}

// name makes a name: mostly from a small set, so that names meet again;
// some odd.
func (g *gen) name() string {
	i := g.rng.IntN(8)
	switch n := g.rng.IntN(100); {
	case n < 55:
		return fmt.Sprintf("n%d", i)
	case n < 62:
		return fmt.Sprintf("with space %d", i)
	case n < 68:
		return fmt.Sprintf("été-日本-🗂-%d", i)
	case n < 73:
		return fmt.Sprintf(".dot%d", i)
	case n < 78:
		return fmt.Sprintf("partial%d.tmp", i) // ignored
	case n < 82:
		return fmt.Sprintf("%d", i) + strings.Repeat("L", 200+g.rng.IntN(55)) // up to NAME_MAX
	case n < 86:
		return fmt.Sprintf(`glob*?[%d]{a,b}\'"$`, i)
	case n < 89:
		return fmt.Sprintf("line\nbreak\t%d", i)
	case n < 91:
		return fmt.Sprintf("bad-\xff-%d", i) // not UTF-8: left out
	case n < 95:
		return fmt.Sprintf(" lead and trail %d ", i)
	default:
		return fmt.Sprintf("-%d#%%", i)
	}
}

// pick returns a random path of the tree that is a folder (with "." among
// them) or a file, and false when there is none.
func (g *gen) pick(dir bool) (string, bool) {
	var all []string
	for p, d := range g.tree {
		if d == dir && (!dir || strings.Count(p, "/") < 4) {
			all = append(all, p)
		}
	}
	if len(all) == 0 {
		return "", false
	}
	slices.Sort(all) // map order is not the seed's
	return all[g.rng.IntN(len(all))], true
}

// pickOther is pick(true) without "." (a folder that can be moved).
func (g *gen) pickFolder() (string, bool) {
	for range 5 {
		if p, ok := g.pick(true); ok && p != "." {
			return p, true
		}
	}
	return "", false
}

// abs is the absolute name of a path of the tree.
func (g *gen) abs(rel string) string { return filepath.Join(g.root, filepath.FromSlash(rel)) }

// join is the path of name in the folder dir of the tree.
func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// content is size bytes of data for a new file.
func (g *gen) content() []byte {
	var size int
	switch n := g.rng.IntN(10); {
	case n < 2:
		size = 0
	case n < 7:
		size = 1 + g.rng.IntN(100)
	case n < 9:
		size = 1 + g.rng.IntN(8192)
	default:
		size = 64<<10 + g.rng.IntN(192<<10)
	}
	return bytes.Repeat([]byte{'a' + byte(g.rng.IntN(26))}, size)
}

func (g *gen) createFile() string {
	dir, _ := g.pick(true)
	p := join(dir, g.name())
	if os.WriteFile(g.abs(p), g.content(), 0o644) != nil {
		return ""
	}
	g.tree[p] = false
	return fmt.Sprintf("create %q", p)
}

func (g *gen) appendFile() string {
	p, ok := g.pick(false)
	if !ok {
		return ""
	}
	f, err := os.OpenFile(g.abs(p), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Write(g.content()); err != nil {
		return ""
	}
	return fmt.Sprintf("append to %q", p)
}

// move renames from to to in the tree, as os.Rename did on disk.
func (g *gen) move(from, to string) {
	for p := range g.tree {
		if p == to || strings.HasPrefix(p, to+"/") {
			delete(g.tree, p) // replaced
		}
	}
	for p, d := range g.tree {
		if p == from || strings.HasPrefix(p, from+"/") {
			delete(g.tree, p)
			g.tree[to+strings.TrimPrefix(p, from)] = d
		}
	}
}

// drop removes p and everything under it from the tree.
func (g *gen) drop(p string) {
	for q := range g.tree {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(g.tree, q)
		}
	}
}

func (g *gen) renameFile() string {
	p, ok := g.pick(false)
	if !ok {
		return ""
	}
	dir, _ := g.pick(true)
	to := join(dir, g.name())
	if os.Rename(g.abs(p), g.abs(to)) != nil {
		return ""
	}
	g.move(p, to)
	return fmt.Sprintf("rename file %q to %q", p, to)
}

func (g *gen) renameFolder() string {
	p, ok := g.pickFolder()
	if !ok {
		return ""
	}
	dir, _ := g.pick(true)
	to := join(dir, g.name())
	if to == p || strings.HasPrefix(to, p+"/") || os.Rename(g.abs(p), g.abs(to)) != nil {
		return ""
	}
	g.move(p, to)
	return fmt.Sprintf("rename folder %q to %q", p, to)
}

func (g *gen) removeFile() string {
	p, ok := g.pick(false)
	if !ok || os.Remove(g.abs(p)) != nil {
		return ""
	}
	g.drop(p)
	return fmt.Sprintf("remove file %q", p)
}

func (g *gen) removeTree() string {
	p, ok := g.pickFolder()
	if !ok || os.RemoveAll(g.abs(p)) != nil {
		return ""
	}
	g.drop(p)
	return fmt.Sprintf("remove tree %q", p)
}

// mkdirNested makes one to three nested folders, sometimes with a file in
// the deepest.
func (g *gen) mkdirNested() string {
	p, _ := g.pick(true)
	var made []string
	for range 1 + g.rng.IntN(3) {
		p = join(p, g.name())
		made = append(made, p)
	}
	if os.MkdirAll(g.abs(p), 0o755) != nil {
		return ""
	}
	for _, m := range made {
		if _, ok := g.tree[m]; !ok {
			g.tree[m] = true
		}
	}
	if g.rng.IntN(2) == 0 {
		f := join(p, g.name())
		if os.WriteFile(g.abs(f), g.content(), 0o644) == nil {
			g.tree[f] = false
		}
	}
	return fmt.Sprintf("mkdir %q", made)
}

// moveIn makes a file, or a folder with files and a subfolder, outside the
// directory and moves it in.
func (g *gen) moveIn() string {
	g.n++
	src := filepath.Join(g.outside, fmt.Sprintf("in-%d", g.n))
	made := map[string]bool{"": g.rng.IntN(2) == 0}
	if made[""] {
		for _, rel := range []string{"", "/sub"} {
			if err := os.Mkdir(src+rel, 0o755); err != nil {
				g.t.Fatal(err)
			}
			made[rel] = true
			for range g.rng.IntN(3) {
				name := "/" + g.name()
				if os.WriteFile(src+rel+name, g.content(), 0o644) == nil {
					made[rel+name] = false
				}
			}
		}
	} else if err := os.WriteFile(src, g.content(), 0o644); err != nil {
		g.t.Fatal(err)
	}
	dir, _ := g.pick(true)
	to := join(dir, g.name())
	if os.Rename(src, g.abs(to)) != nil {
		_ = os.RemoveAll(src)
		return ""
	}
	g.drop(to)
	for rel, d := range made {
		g.tree[to+rel] = d
	}
	return fmt.Sprintf("move in %q", to)
}

func (g *gen) moveOut() string {
	p, ok := g.pick(g.rng.IntN(2) == 0)
	if !ok || p == "." {
		return ""
	}
	g.n++
	if os.Rename(g.abs(p), filepath.Join(g.outside, fmt.Sprintf("out-%d", g.n))) != nil {
		return ""
	}
	g.drop(p)
	return fmt.Sprintf("move out %q", p)
}

// renameRemoveFolder renames a folder (in its folder, into an ignored one,
// which is not watched, or out of the directory) and removes it at once;
// half of the time the folder is new, made a moment before, with a file
// in it.
func (g *gen) renameRemoveFolder() string {
	var p string
	if g.rng.IntN(2) == 0 {
		dir, _ := g.pick(true)
		p = join(dir, g.name())
		if os.Mkdir(g.abs(p), 0o755) != nil {
			return ""
		}
		_ = os.WriteFile(g.abs(p+"/f"), nil, 0o644)
		time.Sleep(time.Duration(g.rng.IntN(3000)) * time.Microsecond) // watched by then, or not
	} else {
		var ok bool
		if p, ok = g.pickFolder(); !ok {
			return ""
		}
	}
	to := g.abs(join(parentOf(p), g.name()))
	switch g.rng.IntN(4) {
	case 0:
		g.n++
		to = filepath.Join(g.outside, fmt.Sprintf("away-%d", g.n))
	case 1:
		ignored := join(parentOf(p), "folder.tmp")
		if os.MkdirAll(g.abs(ignored), 0o755) != nil {
			return ""
		}
		g.tree[ignored] = true
		to = g.abs(join(ignored, g.name()))
	}
	if to == g.abs(p) || os.Rename(g.abs(p), to) != nil {
		_ = os.RemoveAll(g.abs(p))
		g.drop(p)
		return ""
	}
	g.drop(p)
	if rel, err := filepath.Rel(g.root, to); err == nil && !strings.HasPrefix(rel, "..") {
		g.drop(filepath.ToSlash(rel))
	}
	if os.RemoveAll(to) != nil {
		return ""
	}
	return fmt.Sprintf("rename folder %q to %q and remove it", p, to)
}

// swapType replaces a file by a folder or a folder by a file.
func (g *gen) swapType() string {
	p, ok := g.pick(g.rng.IntN(2) == 0)
	if !ok || p == "." || os.RemoveAll(g.abs(p)) != nil {
		return ""
	}
	wasDir := g.tree[p]
	g.drop(p)
	if wasDir {
		if os.WriteFile(g.abs(p), g.content(), 0o644) == nil {
			g.tree[p] = false
		}
	} else if os.Mkdir(g.abs(p), 0o755) == nil {
		g.tree[p] = true
	}
	return fmt.Sprintf("swap type of %q", p)
}

// symlink makes a symbolic link, which is left out, to a folder or file.
func (g *gen) symlink() string {
	target, _ := g.pick(g.rng.IntN(2) == 0)
	dir, _ := g.pick(true)
	p := join(dir, g.name())
	if os.Symlink(g.abs(target), g.abs(p)) != nil {
		return ""
	}
	g.tree[p] = false // a name taken, like a file's
	return fmt.Sprintf("symlink %q", p)
}
