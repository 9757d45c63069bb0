package filewatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/fsnotify/fsnotify"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// session takes the directory's lock, compares the directory with the
// index, and then logs what the kernel reports until ctx ends or something
// breaks.
func (s *Source) session(ctx context.Context) error {
	if err := s.Check(ctx); err != nil {
		return err
	}
	lock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Release()
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("%s: start watching: %w", s.where(), err)
	}
	in := listen(fw, queueLimit())
	defer func() {
		if fw.Close() == nil {
			<-in.done // fsnotify has closed its channels
		}
	}()
	w, err := s.startWatcher(ctx, fw)
	if err != nil {
		return err
	}
	s.watching.Store(true)
	defer s.watching.Store(false)
	return w.run(ctx, in, lock)
}

// startWatcher reads the index and compares the directory with it,
// watching its folders with fw.
func (s *Source) startWatcher(ctx context.Context, fw *fsnotify.Watcher) (*watcher, error) {
	known, err := s.store.Files(ctx, s.project, s.alias)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.where(), err)
	}
	w := &watcher{
		s:       s,
		fw:      fw,
		known:   known,
		pending: make(map[string]time.Time),
		watched: make(map[string]fileID),
		byID:    make(map[fileID]string),
	}
	for _, e := range known {
		if e.Type == store.FileTypeFile {
			w.files++
		}
	}
	if err := w.rescan(ctx, "start-up"); err != nil {
		return nil, err
	}
	s.log.Info("watching", "indexed", len(w.known), "settling", len(w.pending), "folders", len(w.watched))
	return w, nil
}

// run logs what the kernel reports, the files whose writes have settled,
// and what rescans find while folders are unwatched, until ctx ends or
// something breaks: a write, the directory, or the lock, checked every
// second.
func (w *watcher) run(ctx context.Context, in *inbox, lock *store.Lock) error {
	tick := time.NewTicker(max(w.s.dir.Settle.Std()/5, 10*time.Millisecond))
	defer tick.Stop()
	lockCheck := time.NewTicker(time.Second)
	defer lockCheck.Stop()
	var rescan <-chan time.Time
	for {
		if w.unwatched && rescan == nil {
			rescan = time.After(w.s.opts.Rescan)
		}
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-in.ready:
			err = w.receive(ctx, in)
		case <-rescan:
			rescan = nil
			err = w.rescan(ctx, "unwatched folders")
		case <-tick.C:
			w.settle(time.Now())
		case <-lockCheck.C:
			if err = lock.Check(); err != nil {
				err = fmt.Errorf("%s: %w", w.s.where(), err)
			}
		}
		if err == nil {
			err = w.flush(ctx)
		}
		if err != nil {
			return err
		}
		w.report()
	}
}

// report publishes the session's figures for Source.State.
func (w *watcher) report() {
	w.s.indexed.Store(int64(w.files))
	w.s.watches.Store(int64(len(w.watched)))
}

// receive handles what the inbox holds, at most a write's worth of
// events at a time, and compares the directory with the index when events
// were lost after them.
func (w *watcher) receive(ctx context.Context, in *inbox) error {
	events, lost, err := in.take(w.s.opts.Batch)
	if err != nil {
		return fmt.Errorf("%s: watch: %w", w.s.where(), err)
	}
	for _, ev := range events {
		if err := w.handle(ev); err != nil {
			return err
		}
		if len(w.out) >= w.s.opts.Batch {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
	}
	if lost == "" {
		return nil
	}
	w.s.overflows.Add(1)
	w.s.log.Warn("the event queue overflowed; comparing the directory with the index",
		"queue", lost, "hint", "raise fs.inotify.max_queued_events")
	return w.rescan(ctx, "queue overflow")
}

// watcher is one session's view of the directory.
type watcher struct {
	s  *Source
	fw *fsnotify.Watcher
	// known is the index as this session has logged it, by relative path;
	// files counts its files.
	known map[string]store.FileEntry
	files int
	// pending are files new or written to, waiting for their writes to
	// settle, with the time of their last write; queue holds them in the
	// order they were last written to (with stale entries left behind).
	pending map[string]time.Time
	queue   []queued
	// watched are the folders with a kernel watch, by relative path, with
	// the folder's identity once known (where the platform tells); byID
	// are the paths of those identities.
	watched map[string]fileID
	byID    map[fileID]string
	// unwatched says a folder could not be watched: rescans stand in for it.
	unwatched bool
	// out are the changes to log in the next write.
	out []dirChange
}

// queued is a file written to at a time.
type queued struct {
	rel string
	at  time.Time
}

// touch records a write to a new or changed file at a time.
func (w *watcher) touch(rel string, at time.Time) {
	w.pending[rel] = at
	w.queue = append(w.queue, queued{rel, at})
}

// rel returns the path of an absolute name relative to the directory, and
// whether it is inside it and not ignored.
func (w *watcher) rel(name string) (string, bool) {
	r, err := filepath.Rel(w.s.dir.Path, name)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return "", false
	}
	r = filepath.ToSlash(r)
	if !utf8.ValidString(r) {
		// Postgres text and JSON strings hold UTF-8 only.
		w.s.log.Warn("a path is not valid UTF-8; it is left out", "name", strconv.Quote(r))
		return "", false
	}
	return r, r == "." || !w.s.ignored(r)
}

// abs is the absolute name of a relative path.
func (w *watcher) abs(rel string) string {
	return filepath.Join(w.s.dir.Path, filepath.FromSlash(rel))
}

// handle takes one kernel event.
func (w *watcher) handle(ev fsnotify.Event) error {
	rel, ok := w.rel(ev.Name)
	if !ok {
		return nil
	}
	if rel == "." {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return fmt.Errorf("%s: the directory %s was removed or moved", w.s.where(), w.s.dir.Path)
		}
		return nil
	}
	switch {
	case ev.Has(fsnotify.Create):
		return w.appeared(rel)
	case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
		w.vanished(rel)
	case ev.Has(fsnotify.Write):
		if _, waiting := w.pending[rel]; waiting {
			w.touch(rel, time.Now())
		} else if e, ok := w.known[rel]; ok && e.Type == store.FileTypeFile {
			w.touch(rel, time.Now())
		}
	}
	return nil
}

// appeared takes a path that was created or moved in: a folder is watched
// and walked at once, a file waits until its writes settle. Anything else
// (a symbolic link moved over a file) is left out, and what was there is
// gone.
func (w *watcher) appeared(rel string) error {
	fi, err := os.Lstat(w.abs(rel))
	if err != nil {
		return nil // gone already: its removal follows
	}
	switch {
	case fi.IsDir():
		return w.walk(rel, nil)
	case fi.Mode().IsRegular():
		if e, ok := w.known[rel]; ok && e.Type == store.FileTypeDir {
			w.vanished(rel)
		}
		w.touch(rel, time.Now())
	default:
		w.vanished(rel)
	}
	return nil
}

// vanished logs the removal of a path and of everything indexed under it,
// deepest first.
func (w *watcher) vanished(rel string) {
	delete(w.pending, rel)
	prefix := rel + "/"
	for p := range w.pending {
		if strings.HasPrefix(p, prefix) {
			delete(w.pending, p)
		}
	}
	var gone []string
	if e, ok := w.known[rel]; ok {
		gone = append(gone, rel)
		if e.Type == store.FileTypeDir {
			for p := range w.known {
				if strings.HasPrefix(p, prefix) {
					gone = append(gone, p)
				}
			}
		}
	}
	for p := range w.watched {
		if p == rel || strings.HasPrefix(p, prefix) {
			w.unwatch(p)
		}
	}
	slices.SortFunc(gone, func(a, b string) int { return strings.Compare(b, a) }) // children sort after parents
	for _, p := range gone {
		w.remove(w.known[p], true)
	}
}

// walk watches and lists the folder rel (the directory itself for ".") and
// everything under it: folders are logged at once, files wait to settle.
// With seen set, it records every path it finds there.
func (w *watcher) walk(rel string, seen map[string]bool) error {
	return filepath.WalkDir(w.abs(rel), func(name string, d fs.DirEntry, err error) error {
		r, ok := w.rel(name)
		if !ok {
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // removed, or replaced by a file, while walked: the kernel reports it
			}
			if r == "." {
				return fmt.Errorf("%s: list %s: %w", w.s.where(), name, err)
			}
			w.s.log.Warn("cannot read a path; it is left out until it can be", "name", r, "err", err)
			return nil
		}
		if d.IsDir() {
			if !w.folder(r, d, seen) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // left out: a path known here is gone
		}
		if seen != nil {
			seen[r] = true
		}
		e, ok := w.known[r]
		if ok && e.Type != store.FileTypeFile {
			w.vanished(r) // a folder that became a file
			ok = false
		}
		if !ok {
			if _, waiting := w.pending[r]; !waiting {
				w.touch(r, time.Time{}) // settles at once unless written to
			}
			return nil
		}
		// A known file: refresh its size and time, which logs nothing.
		if fi, err := d.Info(); err == nil {
			if now := entryOf(r, fi); now.Size != e.Size || !now.Modified.Equal(e.Modified) {
				w.put(now, nil)
			}
		}
		return nil
	})
}

// folder takes a folder of a walk, rel, listed as d: it watches the
// folder and logs it when new, and reports whether to list it. A folder
// removed, or replaced by a file, since it was listed is left alone: the
// kernel reports what became of it. With seen set, folder records there
// the folders it takes.
func (w *watcher) folder(rel string, d fs.DirEntry, seen map[string]bool) bool {
	if e, ok := w.known[rel]; ok && e.Type != store.FileTypeDir {
		w.vanished(rel) // a file that became a folder; before the watch, which this would remove
	}
	// Watch before listing, so that nothing created in between is missed.
	there := w.watch(rel)
	if rel == "." {
		if seen != nil {
			seen[rel] = true
		}
		return true // gone or not, listing it says
	}
	if !there {
		return false
	}
	fi, err := d.Info() // now, after the watch
	if err != nil || !fi.IsDir() {
		w.unwatch(rel) // the kernel watches what is there now, or nothing
		return false
	}
	if id, ok := identity(fi); ok {
		w.identify(rel, id)
	}
	if seen != nil {
		seen[rel] = true
	}
	if _, ok := w.known[rel]; ok {
		return true // known: a folder's own size and time are not worth a write
	}
	w.put(entryOf(rel, fi), fi)
	return true
}

// watch adds a kernel watch on the folder rel, and reports whether rel
// is there to watch: a folder removed since it was listed is not. When the
// kernel refuses (the inotify watch limit), the folder is left to periodic
// rescans.
func (w *watcher) watch(rel string) bool {
	if _, ok := w.watched[rel]; ok {
		return true
	}
	err := w.fw.Add(w.abs(rel))
	switch {
	case err == nil:
		w.watched[rel] = fileID{}
		return true
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return false // gone, or a folder it was in is
	}
	hint := ""
	if errors.Is(err, syscall.ENOSPC) {
		hint = "raise fs.inotify.max_user_watches (see the README)"
	}
	w.s.log.Warn("cannot watch a folder; comparing the directory with the index every rescan period instead",
		"folder", rel, "err", err, "rescan", w.s.opts.Rescan, "hint", hint)
	w.unwatched = true
	return true
}

// identify records that the folder watched at rel is id, the folder there
// now. The kernel keeps one watch a folder, which fsnotify keeps under the
// path it was first added with, and removes when the folder moves: when
// rel held another folder before, or this folder was watched under another
// path (it was moved, and the events of the move are not handled yet), the
// watch is made again, under rel.
func (w *watcher) identify(rel string, id fileID) {
	was, watched := w.watched[rel]
	if !watched {
		return // the kernel refused
	}
	other, known := w.byID[id]
	if (was == fileID{} || was == id) && (!known || other == rel) {
		w.watched[rel] = id
		w.byID[id] = rel
		return
	}
	if known && other != rel {
		w.unwatch(other)
	}
	w.unwatch(rel)
	w.watch(rel)
	if _, ok := w.watched[rel]; ok {
		w.watched[rel] = id
		w.byID[id] = rel
	}
}

// unwatch removes the kernel watch of the folder rel, which the kernel may
// have dropped already.
func (w *watcher) unwatch(rel string) {
	_ = w.fw.Remove(w.abs(rel))
	if id, ok := w.watched[rel]; ok && w.byID[id] == rel {
		delete(w.byID, id)
	}
	delete(w.watched, rel)
}

// rescan compares the whole directory with the index and logs what differs.
func (w *watcher) rescan(ctx context.Context, why string) error {
	began := time.Now()
	w.unwatched = false
	w.reconcile()
	seen := make(map[string]bool)
	if err := w.walk(".", seen); err != nil {
		return err
	}
	var gone []string
	for p := range w.known {
		if !seen[p] {
			gone = append(gone, p)
		}
	}
	slices.SortFunc(gone, func(a, b string) int { return strings.Compare(b, a) })
	for _, p := range gone {
		// A path now ignored leaves the index without an event.
		w.remove(w.known[p], !w.s.ignored(p))
	}
	for p := range w.pending {
		if !seen[p] {
			delete(w.pending, p)
		}
	}
	for p := range w.watched {
		if !seen[p] {
			w.unwatch(p)
		}
	}
	w.s.log.Info("compared the directory with the index", "why", why, "entries", len(seen)-1,
		"removed", len(gone), "took", time.Since(began).Round(time.Millisecond))
	if err := w.flush(ctx); err != nil {
		return err
	}
	w.s.lastRescan.Store(time.Now().UnixNano())
	w.s.rescans.Add(1)
	w.report()
	return nil
}

// reconcile makes the watches this session knows of those fsnotify has:
// fsnotify drops the watch of a folder that moves, and when the events
// that told of it were lost, the session still counts on it. The walk that
// follows watches again what is left out here.
func (w *watcher) reconcile() {
	kept := make(map[string]bool)
	for _, name := range w.fw.WatchList() {
		kept[name] = true
	}
	for rel := range w.watched {
		if !kept[w.abs(rel)] {
			w.unwatch(rel)
		}
		delete(kept, w.abs(rel))
	}
	for name := range kept {
		_ = w.fw.Remove(name) // a watch the session lost track of
	}
}

// settle logs the pending files whose writes have been quiet for the
// settle time. A file modified within it (by writes whose events are still
// queued) waits on, and so does one that a process still has open for
// writing, where the platform tells.
func (w *watcher) settle(now time.Time) {
	quiet := w.s.dir.Settle.Std()
	for len(w.queue) > 0 && now.Sub(w.queue[0].at) >= quiet {
		q := w.queue[0]
		w.queue = w.queue[1:]
		if last, ok := w.pending[q.rel]; !ok || !last.Equal(q.at) {
			continue // written to since, or gone
		}
		rel := q.rel
		fi, err := os.Lstat(w.abs(rel))
		if err != nil || !fi.Mode().IsRegular() {
			delete(w.pending, rel) // its removal or replacement is reported
			continue
		}
		if age := now.Sub(fi.ModTime()); age >= 0 && age < quiet {
			w.touch(rel, now)
			continue
		}
		if open, _ := openForWriting(w.abs(rel)); open {
			w.touch(rel, now) // its writer may only be pausing: wait for the close
			continue
		}
		delete(w.pending, rel)
		e := entryOf(rel, fi)
		if k, ok := w.known[rel]; ok && k.Type == store.FileTypeFile {
			if k.Size != e.Size || !k.Modified.Equal(e.Modified) {
				w.put(e, nil) // a rewrite: not a create
			}
			continue
		}
		w.put(e, fi)
	}
	if len(w.queue) == 0 {
		w.queue = nil // let the backing array go
	}
}

// put logs that rel is in the directory as e. The events of a path the index
// does not know are attached; the store logs them only if it is news there
// too. fi, for a new file, gives its content's hash.
func (w *watcher) put(e store.FileEntry, fi fs.FileInfo) {
	k, ok := w.known[e.Path]
	w.known[e.Path] = e
	w.countFile(k, ok, -1)
	w.countFile(e, true, 1)
	c := dirChange{index: store.IndexChange{Entry: e}}
	if !ok || k.Type != e.Type {
		w.s.event(&c, config.TypeFileCreate, e, func() meta { return w.meta(e, fi) })
	}
	w.out = append(w.out, c)
}

// remove logs that e's path is gone; with announce, as a FILE_DELETE.
func (w *watcher) remove(e store.FileEntry, announce bool) {
	k, ok := w.known[e.Path]
	delete(w.known, e.Path)
	w.countFile(k, ok, -1)
	c := dirChange{index: store.IndexChange{Entry: e, Removed: true}}
	if announce {
		w.s.event(&c, config.TypeFileDelete, e, func() meta { return w.meta(e, nil) })
	}
	w.out = append(w.out, c)
}

// countFile adds by to the count of files when e, which is in the index
// if ok, is a file.
func (w *watcher) countFile(e store.FileEntry, ok bool, by int) {
	if ok && e.Type == store.FileTypeFile {
		w.files += by
	}
}

// meta describes e for an event, with the mode and hash of a file read from
// disk when fi is set.
func (w *watcher) meta(e store.FileEntry, fi fs.FileInfo) meta {
	m := meta{Size: e.Size, Modified: e.Modified.UTC().Format(time.RFC3339Nano)}
	if fi == nil {
		return m
	}
	m.Mode = fmt.Sprintf("%04o", fi.Mode().Perm())
	if e.Type == store.FileTypeFile && w.s.dir.HashLimit > 0 && e.Size <= w.s.dir.HashLimit {
		sum, err := hashFile(w.abs(e.Path), e.Size)
		switch {
		case err == nil:
			m.SHA256 = sum
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errReplaced): // removed or replaced since it settled: its FILE_DELETE follows
			w.s.log.Warn("cannot hash a file; its event has no sha256", "file", e.Path, "err", err)
		}
	}
	return m
}

// flush logs the queued changes in writes of at most Batch changes.
func (w *watcher) flush(ctx context.Context) error {
	for len(w.out) > 0 {
		n := min(len(w.out), w.s.opts.Batch)
		if err := w.s.commit(ctx, w.out[:n]); err != nil {
			return fmt.Errorf("%s: %w", w.s.where(), err)
		}
		w.out = w.out[n:]
	}
	w.out = nil
	return nil
}

// entryOf is the index entry of a path as fi describes it.
func entryOf(rel string, fi fs.FileInfo) store.FileEntry {
	e := store.FileEntry{Path: path.Clean(rel), Type: store.FileTypeFile, Size: fi.Size(), Modified: fi.ModTime()}
	if fi.IsDir() {
		e.Type = store.FileTypeDir
	}
	return e
}
