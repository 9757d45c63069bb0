package store_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/sql"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open returns a migrated store in a fresh schema.
func open(t testing.TB) *store.Store {
	t.Helper()
	url, schema := pgtest.Schema(t)
	st, err := store.Open(context.Background(), store.Options{URL: url, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

// staged builds a staged row of trigger "t" in project "p", due at due.
func staged(due time.Time, claimedBy string) store.EventLog {
	id := uuid.Must(uuid.NewV7())
	return store.EventLog{
		ID: id, BatchID: id, Project: "p", Trigger: "t", Type: "x", Payload: json.RawMessage(`{"a":1}`),
		EventTime: due, FireAt: due, Status: store.StatusStaged, DueAt: due, ClaimedBy: claimedBy,
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	_, err := store.Open(context.Background(), store.Options{URL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"})
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), "store.url") {
		t.Fatalf("want an unreachable error that names store.url, got %v", err)
	}
	_, err = store.Open(context.Background(), store.Options{URL: "postgres://x:y@host:notaport/db"})
	if err == nil || !strings.Contains(err.Error(), "store url") {
		t.Fatalf("want a bad url error, got %v", err)
	}
}

func TestMigrateOnceAndReady(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{URL: url, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ready(ctx); err == nil {
		t.Fatal("Ready before Migrate: want an error")
	}
	// Nodes starting together migrate concurrently; each migration applies once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- st.Migrate(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if err := st.Ready(ctx); err != nil {
		t.Fatalf("Ready after Migrate: %v", err)
	}
	var n int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	files, err := fs.ReadDir(sql.Migrations, ".")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files) {
		t.Fatalf("schema_migrations has %d rows, want one per migration (%d)", n, len(files))
	}
	// Change capture skips exactly the tables the migrations made.
	rows, err := st.Pool().Query(ctx, `SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(tables, slices.Sorted(slices.Values(store.Tables()))) {
		t.Fatalf("the schema has tables %v, store.Tables says %v (%v)", tables, store.Tables(), err)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	if _, err := st.Pool().Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (999, '999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	err := st.Migrate(ctx)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("want a newer-schema error, got %v", err)
	}
	if err := st.Ready(ctx); err == nil {
		t.Fatal("Ready with a newer schema: want an error")
	}
}

func TestInsertNotifiesFollowers(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	l, err := st.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	row := staged(time.Now(), "")
	row.Payload = json.RawMessage(`{"b": [1, 2],  "a": "<&>"}`)
	if err := st.Insert(ctx, []store.EventLog{row}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := l.Next(wctx)
	if err != nil || len(ids) != 1 || ids[0] != row.ID {
		t.Fatalf("notification: %v %v", ids, err)
	}
	got, err := st.Events(ctx, []uuid.UUID{row.ID}, store.Filter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("read back: %v %v", got, err)
	}
	if string(got[0].Payload) != string(row.Payload) {
		t.Fatalf("payload changed: %s", got[0].Payload)
	}
}

// TestRefusedInsertWritesNothing commits many inserts concurrently, some of
// them refused: each refused call fails alone and leaves none of its rows,
// and every other call's rows are there.
func TestRefusedInsertWritesNothing(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	existing := staged(time.Now(), "")
	if err := st.Insert(ctx, []store.EventLog{existing}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var good, bad []uuid.UUID
	for i := range 50 {
		wg.Go(func() {
			fresh := staged(time.Now(), "")
			rows := []store.EventLog{fresh}
			if i%5 == 0 {
				rows = append(rows, existing) // a duplicate id: the whole call must fail
			}
			err := st.Insert(ctx, rows)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case i%5 == 0 && err == nil:
				t.Errorf("insert %d with a duplicate id succeeded", i)
			case i%5 == 0:
				bad = append(bad, fresh.ID)
			case err != nil:
				t.Errorf("insert %d failed beside a refused one: %v", i, err)
			default:
				good = append(good, fresh.ID)
			}
		})
	}
	wg.Wait()
	if got, _ := st.Events(ctx, bad, store.Filter{}); len(got) != 0 {
		t.Errorf("refused calls left %d rows", len(got))
	}
	if got, _ := st.Events(ctx, good, store.Filter{}); len(got) != len(good) {
		t.Errorf("%d of %d accepted rows are there", len(got), len(good))
	}
}

func TestInsertOnceSkipsExistingIDs(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	a, b := staged(time.Now(), ""), staged(time.Now(), "")
	inserted, err := st.InsertOnce(ctx, []store.EventLog{a})
	if err != nil || !inserted[a.ID] {
		t.Fatalf("first insert: %v %v", inserted, err)
	}
	// A replay of a beside a new row, concurrent with a plain insert that
	// shares the group commit: only b is new, and nobody fails.
	c := staged(time.Now(), "")
	done := make(chan error, 1)
	go func() { done <- st.Insert(ctx, []store.EventLog{c}) }()
	replay := a
	replay.Payload = json.RawMessage(`{"a":2}`)
	inserted, err = st.InsertOnce(ctx, []store.EventLog{replay, b})
	if err != nil || inserted[a.ID] || !inserted[b.ID] {
		t.Fatalf("replay: %v %v", inserted, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := st.Events(ctx, []uuid.UUID{a.ID, b.ID, c.ID}, store.Filter{})
	if err != nil || len(got) != 3 {
		t.Fatalf("rows: %d %v", len(got), err)
	}
	for _, e := range got {
		if e.ID == a.ID && string(e.Payload) != `{"a":1}` {
			t.Errorf("the replay overwrote the first write: %s", e.Payload)
		}
	}
}

func TestClaimSkipsHeldAndFutureRows(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	now := time.Now()
	due := staged(now.Add(-time.Second), "")
	future := staged(now.Add(time.Hour), "")
	heldByB := staged(now.Add(time.Minute), "b") // B's lease runs for another minute
	expired := staged(now.Add(-time.Minute), "dead")
	if err := st.Insert(ctx, []store.EventLog{due, future, heldByB, expired}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Claim(ctx, "a", "p", "t", 10, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uuid.UUID]bool{}
	for _, e := range got {
		ids[e.ID] = true
		if e.ClaimedBy != "a" || time.Until(e.DueAt) < 4*time.Second {
			t.Fatalf("claimed row not leased to a: %+v", e)
		}
	}
	if len(got) != 2 || !ids[due.ID] || !ids[expired.ID] {
		t.Fatalf("claimed %v, want the due row and the expired lease", ids)
	}
	if again, _ := st.Claim(ctx, "b", "p", "t", 10, 5*time.Second); len(again) != 0 {
		t.Fatalf("rows leased to a were claimed again: %v", again)
	}
	wait, ok, err := st.NextDue(ctx, "p", "t")
	if err != nil || !ok || wait < 4*time.Second || wait > 5*time.Second {
		t.Fatalf("next due: %v %v %v; want a's lease in about 5s", wait, ok, err)
	}
	if _, ok, _ := st.NextDue(ctx, "p", "other"); ok {
		t.Fatal("a trigger without rows has a next due row")
	}
}

func TestConcurrentClaimsTakeEachRowOnce(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	rows := make([]store.EventLog, 500)
	for i := range rows {
		rows[i] = staged(time.Now().Add(-time.Second), "")
	}
	if err := st.Insert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[uuid.UUID]int{}
	var wg sync.WaitGroup
	for n := range 8 {
		wg.Go(func() {
			for {
				got, err := st.Claim(ctx, "node"+string(rune('a'+n)), "p", "t", 7, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, e := range got {
					seen[e.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != len(rows) {
		t.Fatalf("claimed %d distinct rows, want %d", len(seen), len(rows))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("row %s claimed %d times", id, n)
		}
	}
}

func TestRecordAppliesOnlyToHeldRows(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	mine := staged(time.Now().Add(time.Minute), "a")
	theirs := staged(time.Now().Add(time.Minute), "b")
	if err := st.Insert(ctx, []store.EventLog{mine, theirs}); err != nil {
		t.Fatal(err)
	}
	inv := func(id uuid.UUID) *store.Invocation {
		return &store.Invocation{ID: uuid.Must(uuid.NewV7()), EventID: id, Attempt: 1, NodeID: "a",
			StartedAt: time.Now(), Duration: 1500 * time.Microsecond, RequestBody: []byte(`{}`), ResponseStatus: 200,
			ResponseBody: `{"response":{"ok":true}}`}
	}
	applied, err := st.Record(ctx, "a", []store.Outcome{
		{EventID: mine.ID, Status: store.StatusProcessed, Attempts: 1, Response: json.RawMessage(`{"ok":true}`), Invocation: inv(mine.ID)},
		{EventID: theirs.ID, Status: store.StatusProcessed, Attempts: 1, Invocation: inv(theirs.ID)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !applied[mine.ID] || applied[theirs.ID] {
		t.Fatalf("applied %v: want only the row a holds", applied)
	}
	got, err := st.Events(ctx, []uuid.UUID{mine.ID, theirs.ID}, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[uuid.UUID]store.EventLog{got[0].ID: got[0], got[1].ID: got[1]}
	if e := byID[mine.ID]; e.Status != store.StatusProcessed || e.Attempts != 1 || string(e.Response) != `{"ok":true}` || !e.DueAt.IsZero() {
		t.Fatalf("row a held: %+v", e)
	}
	if e := byID[theirs.ID]; e.Status != store.StatusStaged || e.ClaimedBy != "b" {
		t.Fatalf("row b holds was changed: %+v", e)
	}
	// Both attempts happened, so both are logged.
	for _, id := range []uuid.UUID{mine.ID, theirs.ID} {
		invs, err := st.Invocations(ctx, id)
		if err != nil || len(invs) != 1 || invs[0].ResponseStatus != 200 || invs[0].Duration != 1500*time.Microsecond {
			t.Fatalf("invocations of %s: %+v %v", id, invs, err)
		}
	}
}

func TestRecordRetryReleasesOrKeeps(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	released := staged(time.Now().Add(time.Minute), "a")
	kept := staged(time.Now().Add(time.Minute), "a")
	if err := st.Insert(ctx, []store.EventLog{released, kept}); err != nil {
		t.Fatal(err)
	}
	retryAt := time.Now().Add(30 * time.Second).Truncate(time.Microsecond)
	_, err := st.Record(ctx, "a", []store.Outcome{
		{EventID: released.ID, Status: store.StatusStaged, Attempts: 1, DueAt: retryAt, Remark: "attempt 1 failed"},
		{EventID: kept.ID, Status: store.StatusStaged, Attempts: 1, DueAt: retryAt, Keep: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := st.Events(ctx, []uuid.UUID{released.ID, kept.ID}, store.Filter{})
	for _, e := range got {
		if !e.DueAt.Equal(retryAt) || e.Attempts != 1 {
			t.Fatalf("retry row: %+v", e)
		}
		if e.ID == released.ID && e.ClaimedBy != "" {
			t.Fatalf("released row still claimed: %+v", e)
		}
		if e.ID == kept.ID && e.ClaimedBy != "a" {
			t.Fatalf("kept row not claimed by a: %+v", e)
		}
	}
}

func TestRenewAndRelease(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	mine := staged(time.Now().Add(time.Second), "a")
	longer := staged(time.Now().Add(time.Second), "a")
	lost := staged(time.Now().Add(time.Second), "b")
	if err := st.Insert(ctx, []store.EventLog{mine, longer, lost}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	kept, err := st.Renew(ctx, "a", []uuid.UUID{mine.ID, longer.ID, lost.ID}, []time.Duration{time.Minute, time.Hour, time.Hour})
	if err != nil || !kept[mine.ID] || !kept[longer.ID] || kept[lost.ID] {
		t.Fatalf("renew: %v %v", kept, err)
	}
	// Each row's lease is its own length.
	renewed, _ := st.Events(ctx, []uuid.UUID{mine.ID, longer.ID}, store.Filter{})
	for _, r := range renewed {
		want := map[uuid.UUID]time.Duration{mine.ID: time.Minute, longer.ID: time.Hour}[r.ID]
		if got := r.DueAt.Sub(before); got < want-5*time.Second || got > want+5*time.Second {
			t.Errorf("row renewed for %s is due in %s", want, got)
		}
	}
	later := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	if err := st.Release(ctx, "a", []uuid.UUID{mine.ID}, []time.Time{later}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Events(ctx, []uuid.UUID{mine.ID}, store.Filter{})
	if got[0].ClaimedBy != "" || !got[0].DueAt.Equal(later) {
		t.Fatalf("released row: %+v", got[0])
	}
}

func TestCancelOrphans(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	known := staged(time.Now().Add(-time.Hour), "")
	orphan := staged(time.Now().Add(-time.Hour), "")
	orphan.Trigger = "removed"
	notYet := staged(time.Now().Add(time.Hour), "")
	notYet.Trigger = "removed"
	justDue := staged(time.Now().Add(-time.Second), "") // perhaps a newer node's trigger
	justDue.Trigger = "added"
	if err := st.Insert(ctx, []store.EventLog{known, orphan, notYet, justDue}); err != nil {
		t.Fatal(err)
	}
	n, err := st.CancelOrphans(ctx, []store.Trigger{{Project: "p", Name: "t"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n[store.Trigger{Project: "p", Name: "removed"}] != 1 || len(n) != 1 {
		t.Fatalf("cancelled %v", n)
	}
	got, _ := st.Events(ctx, []uuid.UUID{known.ID, orphan.ID, notYet.ID, justDue.ID}, store.Filter{Status: store.StatusCancelled})
	if len(got) != 1 || got[0].ID != orphan.ID || !strings.Contains(got[0].Remark, "removed") {
		t.Fatalf("cancelled rows: %+v", got)
	}
}

func TestRecentFiltersAndOrders(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	var rows []store.EventLog
	for i := range 5 {
		r := staged(time.Now(), "")
		if i%2 == 1 {
			r.Type = "y"
		}
		rows = append(rows, r)
	}
	if err := st.Insert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, err := st.Recent(ctx, store.Filter{Type: "x"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != rows[2].ID || got[1].ID != rows[4].ID {
		t.Fatalf("recent x rows, oldest first: got %v", got)
	}
}
