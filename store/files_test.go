package store_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
)

// TestApplyFilesLogsOnlyNews: an event is logged only with the index change
// it stands for, so applying a change again (a crash, a rescan, a second
// node) logs nothing more, and a path may change twice in one write.
func TestApplyFilesLogsOnlyNews(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	mod := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	file := func(p string, size int64) store.FileEntry {
		return store.FileEntry{Path: p, Type: store.FileTypeFile, Size: size, Modified: mod}
	}
	dir := func(p string) store.FileEntry {
		return store.FileEntry{Path: p, Type: store.FileTypeDir, Modified: mod}
	}
	change := func(e store.FileEntry, removed bool) (store.IndexChange, uuid.UUID) {
		ev := staged(time.Now(), "")
		return store.IndexChange{Entry: e, Removed: removed, Events: []store.EventLog{ev}}, ev.ID
	}
	apply := func(want []bool, changes ...store.IndexChange) {
		t.Helper()
		var ids []uuid.UUID
		for _, c := range changes {
			ids = append(ids, c.Events[0].ID)
		}
		inserted, err := st.ApplyFiles(ctx, "p", "up", changes)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if inserted[id] != want[i] {
				t.Errorf("change %d (%s removed=%v): logged %v, want %v", i, changes[i].Entry.Path, changes[i].Removed, inserted[id], want[i])
			}
		}
	}
	a, _ := change(file("a", 1), false)
	d, _ := change(dir("d"), false)
	apply([]bool{true, true}, a, d)
	again, _ := change(file("a", 2), false) // a rewrite, or a replay
	gone, _ := change(file("x", 0), true)   // never indexed
	apply([]bool{false, false}, again, gone)

	// d turns from a folder into a file, and a is deleted and created again,
	// all in one write.
	delD, _ := change(dir("d"), true)
	newD, _ := change(file("d", 3), false)
	delA, _ := change(file("a", 0), true)
	newA, _ := change(file("a", 4), false)
	apply([]bool{true, true, true, true}, delD, newD, delA, newA)

	// Another store's index is separate.
	other, id := change(file("a", 9), false)
	if inserted, err := st.ApplyFiles(ctx, "p", "other", []store.IndexChange{other}); err != nil || !inserted[id] {
		t.Fatalf("other store: %v %v", inserted, err)
	}
	got, err := st.Files(ctx, "p", "up")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]store.FileEntry{"a": file("a", 4), "d": file("d", 3)}
	if !maps.EqualFunc(got, want, func(x, y store.FileEntry) bool {
		return x.Path == y.Path && x.Type == y.Type && x.Size == y.Size && x.Modified.Equal(y.Modified)
	}) {
		t.Errorf("index %v, want %v", got, want)
	}
	rows, err := st.Recent(ctx, store.Filter{Project: "p"}, 100)
	if err != nil || len(rows) != 7 {
		t.Errorf("event_logs has %d rows (%v), want 7", len(rows), err)
	}
}

// TestLockIsHeldByOneSession: a second TryLock fails while the first holds
// the lock, and succeeds once it is released.
func TestLockIsHeldByOneSession(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	first, err := st.TryLock(ctx, "k")
	if err != nil || first == nil {
		t.Fatalf("first: %v %v", first, err)
	}
	if err := first.Check(); err != nil {
		t.Fatal(err)
	}
	if second, err := st.TryLock(ctx, "k"); err != nil || second != nil {
		t.Fatalf("second while held: %v %v", second, err)
	}
	if other, err := st.TryLock(ctx, "other"); err != nil || other == nil {
		t.Fatalf("another key: %v %v", other, err)
	} else {
		other.Release()
	}
	first.Release()
	second, err := st.TryLock(ctx, "k")
	if err != nil || second == nil {
		t.Fatalf("after release: %v %v", second, err)
	}
	second.Release()
}

// TestApplyFilesLogsOnceAcrossNodes: two stores (two nodes, for the moment
// one of them has not noticed it lost its directory's lock) put and remove
// the same paths at once; each change is logged by one of them only.
func TestApplyFilesLogsOnceAcrossNodes(t *testing.T) {
	t.Parallel()
	a := open(t)
	ctx := context.Background()
	b, err := store.Open(ctx, store.Options{URL: a.Pool().Config().ConnString(), Schema: a.Schema()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const paths = 200
	round := func(removed bool) {
		t.Helper()
		// Hold both writes behind a lock, so that they run together.
		tx, err := a.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE file_index IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		results := make(chan map[uuid.UUID]bool, 2)
		for _, st := range []*store.Store{a, b} {
			go func() {
				var changes []store.IndexChange
				for i := range paths {
					changes = append(changes, store.IndexChange{
						Entry:   store.FileEntry{Path: fmt.Sprintf("f%03d", i), Type: store.FileTypeFile, Size: 1, Modified: time.Now()},
						Removed: removed,
						Events:  []store.EventLog{staged(time.Now(), "")},
					})
				}
				inserted, err := st.ApplyFiles(ctx, "p", "up", changes)
				if err != nil {
					t.Error(err)
				}
				results <- inserted
			}()
		}
		waittest.For(t, 10*time.Second, func() error { // both writes wait for the lock
			var waiting int
			err := a.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks
				WHERE relation = to_regclass($1) AND NOT granted`, a.Schema()+".file_index").Scan(&waiting)
			if err == nil && waiting < 2 {
				err = fmt.Errorf("%d of 2 writes wait for the lock on file_index", waiting)
			}
			return err
		})
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		logged := 0
		for range 2 {
			for _, ok := range <-results {
				if ok {
					logged++
				}
			}
		}
		if logged != paths {
			t.Errorf("removed=%v: %d events logged for %d paths changed by two nodes at once", removed, logged, paths)
		}
	}
	round(false)
	round(true)
}
