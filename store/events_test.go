package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// rowAt builds a staged row of project p and trigger t whose id begins
// with time at (as UUIDv7 ids do).
func rowAt(t *testing.T, at time.Time, project, trigger string) store.EventLog {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	ms := uint64(at.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (8 * (5 - i)))
	}
	return store.EventLog{ID: id, BatchID: id, Project: project, Trigger: trigger, Type: "x",
		EventTime: at, FireAt: at.Add(time.Hour), Status: store.StatusStaged, DueAt: at.Add(time.Hour)}
}

// setStatus sets rows' status (and a remark) as outcomes would.
func setStatus(t *testing.T, st *store.Store, status store.Status, remark string, ids ...uuid.UUID) {
	t.Helper()
	_, err := st.Pool().Exec(context.Background(), `UPDATE event_logs SET status = $1, remark = $2, due_at = NULL
		WHERE id = ANY($3)`, status, remark, ids)
	if err != nil {
		t.Fatal(err)
	}
}

// ids lists the ids of a page.
func ids(events []store.EventWithAttempts) []uuid.UUID {
	out := make([]uuid.UUID, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// TestListEventsFiltersAndPages lists rows with each filter, and pages
// through them with the cursor: every row once, newest first.
func TestListEventsFiltersAndPages(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	var rows []store.EventLog
	for i := range 30 {
		project, trigger := "p", fmt.Sprintf("t%d", i%3)
		if i%5 == 0 {
			project = "q"
		}
		rows = append(rows, rowAt(t, base.Add(time.Duration(i)*time.Minute), project, trigger))
	}
	rows[7].BatchID = rows[6].ID
	if err := st.Insert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	setStatus(t, st, store.StatusFailed, "failed after 4 attempt(s): HTTP 503 Service Unavailable", rows[3].ID, rows[4].ID)
	setStatus(t, st, store.StatusProcessed, "", rows[10].ID)

	newestFirst := func(keep func(i int) bool) []uuid.UUID {
		var out []uuid.UUID
		for i := len(rows) - 1; i >= 0; i-- {
			if keep(i) {
				out = append(out, rows[i].ID)
			}
		}
		return out
	}
	cases := []struct {
		name string
		q    store.EventQuery
		want []uuid.UUID
	}{
		{"all", store.EventQuery{}, newestFirst(func(int) bool { return true })},
		{"project", store.EventQuery{Project: "q"}, newestFirst(func(i int) bool { return i%5 == 0 })},
		{"trigger", store.EventQuery{Project: "p", Trigger: "t1"}, newestFirst(func(i int) bool { return i%3 == 1 && i%5 != 0 })},
		{"status", store.EventQuery{Status: store.StatusFailed}, []uuid.UUID{rows[4].ID, rows[3].ID}},
		{"type", store.EventQuery{Type: "y"}, nil},
		{"time range", store.EventQuery{Since: base.Add(5 * time.Minute), Until: base.Add(8 * time.Minute)}, []uuid.UUID{rows[7].ID, rows[6].ID, rows[5].ID}},
		{"id", store.EventQuery{ID: rows[12].ID}, []uuid.UUID{rows[12].ID}},
		{"batch", store.EventQuery{BatchID: rows[6].ID}, []uuid.UUID{rows[7].ID, rows[6].ID}},
		{"remark in another case", store.EventQuery{Remark: "service UNAVAILABLE"}, []uuid.UUID{rows[4].ID, rows[3].ID}},
		{"remark with LIKE's wildcards", store.EventQuery{Remark: "%"}, nil},
	}
	for _, c := range cases {
		page, err := st.ListEvents(ctx, c.q, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(page.Events); !slices.Equal(got, c.want) || page.Next != nil {
			t.Errorf("%s: got %v (next %v), want %v", c.name, got, page.Next, c.want)
		}
	}

	// Pages of 7 through 30 rows, newest first, each row once.
	var all []uuid.UUID
	var before *uuid.UUID
	for pages := 1; ; pages++ {
		page, err := st.ListEvents(ctx, store.EventQuery{}, before, 7)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ids(page.Events)...)
		if page.Next == nil {
			if pages != 5 {
				t.Errorf("30 rows came in %d pages of 7, want 5", pages)
			}
			break
		}
		before = page.Next
	}
	if want := newestFirst(func(int) bool { return true }); !slices.Equal(all, want) {
		t.Fatalf("paging gave %v, want %v", all, want)
	}
}

// TestRedeliverNumbersAttemptsAfterTheOld redelivers a failed row: it keeps
// its id, is due now, and starts a fresh retry budget after its last
// attempt; a row cancelled while a node held it reserves the number of
// that node's attempt in flight. Staged rows are left alone.
func TestRedeliverNumbersAttemptsAfterTheOld(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	// inFlight is claimed by n1, its lease not over.
	failed, inFlight, stagedRow := staged(time.Now(), "n1"), staged(time.Now().Add(time.Minute), "n1"), staged(time.Now().Add(time.Hour), "")
	if err := st.Insert(ctx, []store.EventLog{failed, inFlight, stagedRow}); err != nil {
		t.Fatal(err)
	}
	// Four attempts end in failed, the fourth logged but not counted by
	// the row (an outcome refused, say).
	for n := 1; n <= 4; n++ {
		out := store.Outcome{EventID: failed.ID, Status: store.StatusStaged, Attempts: n, DueAt: time.Now(), Keep: true,
			Invocation: &store.Invocation{ID: uuid.Must(uuid.NewV7()), EventID: failed.ID, Attempt: n, NodeID: "n1", StartedAt: time.Now(), Error: "HTTP 500"}}
		if n == 4 {
			out.Status = store.StatusFailed
			out.Attempts = 3
		}
		if _, err := st.Record(ctx, "n1", []store.Outcome{out}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Cancel(ctx, store.EventQuery{ID: inFlight.ID}, "cancelled by ops"); err != nil {
		t.Fatal(err)
	}

	done, err := st.Redeliver(ctx, store.EventQuery{Project: "p"}, "redelivered by ops")
	if err != nil {
		t.Fatal(err)
	}
	if done.Rows != 2 || done.Triggers[store.Trigger{Project: "p", Name: "t"}] != 2 {
		t.Fatalf("redelivered %+v, want the failed and the cancelled row of p/t", done)
	}
	rows, err := st.Events(ctx, []uuid.UUID{failed.ID, inFlight.ID, stagedRow.ID}, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		want := map[uuid.UUID]struct{ attempts, base int }{failed.ID: {4, 4}, inFlight.ID: {1, 1}, stagedRow.ID: {0, 0}}[r.ID]
		if r.Status != store.StatusStaged || r.Attempts != want.attempts || r.RetryBase != want.base {
			t.Errorf("row %s: %s, attempts %d, retry base %d; want staged, %d and %d", r.ID, r.Status, r.Attempts, r.RetryBase, want.attempts, want.base)
		}
		if r.ID != stagedRow.ID && (r.ClaimedBy != "" || time.Until(r.DueAt) > time.Second || r.Remark != "redelivered by ops") {
			t.Errorf("row %s: claimed by %q, due in %s, remark %q; want free, due now, the remark given", r.ID, r.ClaimedBy, time.Until(r.DueAt), r.Remark)
		}
	}
}

// TestCancelledRowStaysCancelled cancels a row a node holds: the node's
// outcome for it is not applied (its attempt is logged), and the row stays
// cancelled. Rows not staged are not cancelled.
func TestCancelledRowStaysCancelled(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	held, done := staged(time.Now(), "n1"), staged(time.Now(), "")
	if err := st.Insert(ctx, []store.EventLog{held, done}); err != nil {
		t.Fatal(err)
	}
	setStatus(t, st, store.StatusProcessed, "", done.ID)
	changed, err := st.Cancel(ctx, store.EventQuery{Project: "p"}, "cancelled by ops")
	if err != nil || changed.Rows != 1 {
		t.Fatalf("cancel: %+v, %v; want the staged row alone", changed, err)
	}
	applied, err := st.Record(ctx, "n1", []store.Outcome{{EventID: held.ID, Status: store.StatusProcessed, Attempts: 1,
		Invocation: &store.Invocation{ID: uuid.Must(uuid.NewV7()), EventID: held.ID, Attempt: 1, NodeID: "n1", StartedAt: time.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	if applied[held.ID] {
		t.Fatal("the outcome of an attempt on a cancelled row was applied")
	}
	e, err := st.Event(ctx, held.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != store.StatusCancelled || e.Remark != "cancelled by ops" || len(e.Invocations) != 1 || e.ClaimedBy != "n1" {
		t.Fatalf("after the attempt: %s %q, %d attempts logged, claimed by %q; want cancelled, the remark, 1, n1", e.Status, e.Remark, len(e.Invocations), e.ClaimedBy)
	}
}

// TestBulkChangesGoInBatches redelivers and cancels more rows than one
// batch holds: every matching row changes, and no other.
func TestBulkChangesGoInBatches(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	const n = 4500
	_, err := st.Pool().Exec(ctx, `
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at, status, attempts)
		SELECT id, id, 'p', CASE WHEN g % 10 = 0 THEN 'other' ELSE 't' END, 'x', now(), now(), 'failed', 2
		FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, $1) g) s`, n)
	if err != nil {
		t.Fatal(err)
	}
	done, err := st.Redeliver(ctx, store.EventQuery{Trigger: "t", Status: store.StatusFailed}, "redelivered by ops")
	if err != nil || done.Rows != n*9/10 {
		t.Fatalf("redelivered %+v, %v; want %d rows", done, err, n*9/10)
	}
	done, err = st.Cancel(ctx, store.EventQuery{Project: "p"}, "cancelled by ops")
	if err != nil || done.Rows != n*9/10 {
		t.Fatalf("cancelled %+v, %v; want %d rows", done, err, n*9/10)
	}
	var failed int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM event_logs WHERE status = 'failed' AND trigger_name = 'other'`).Scan(&failed); err != nil || failed != n/10 {
		t.Fatalf("%d rows of the other trigger still failed (%v), want %d", failed, err, n/10)
	}
}

// TestCounts counts rows by trigger and status: every staged row, and the
// others since the time given.
func TestCounts(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	now := time.Now()
	old, recent, pending := rowAt(t, now.Add(-48*time.Hour), "p", "t"), rowAt(t, now, "p", "t"), rowAt(t, now.Add(-48*time.Hour), "p", "u")
	if err := st.Insert(ctx, []store.EventLog{old, recent, pending}); err != nil {
		t.Fatal(err)
	}
	setStatus(t, st, store.StatusFailed, "", old.ID, recent.ID)
	counts, err := st.Counts(ctx, "p", now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Count{{Project: "p", Trigger: "t", Status: store.StatusFailed, Rows: 1}, {Project: "p", Trigger: "u", Status: store.StatusStaged, Rows: 1}}
	if !slices.Equal(counts, want) {
		t.Fatalf("counts since a day ago: %+v, want %+v", counts, want)
	}
	if counts, err = st.Counts(ctx, "", time.Time{}); err != nil || counts[0].Rows != 2 {
		t.Fatalf("counts of all time: %+v, %v; want 2 failed rows of p/t", counts, err)
	}
}

// TestCountsOfManyTriggers counts rows of several projects and triggers
// (names that sort next to each other), in every status, inside and
// outside the window, and checks every count, with and without a project,
// against the rows themselves.
func TestCountsOfManyTriggers(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	now := time.Now()
	since := now.Add(-24 * time.Hour)
	type key struct {
		project, trigger string
		status           store.Status
	}
	inWindow := map[key]int64{}
	var rows []store.EventLog
	byStatus := map[store.Status][]uuid.UUID{}
	statuses := []store.Status{store.StatusStaged, store.StatusProcessed, store.StatusFailed, store.StatusCancelled}
	i := 0
	for _, project := range []string{"p", "p2", "q"} {
		for _, trigger := range []string{"t", "t2", "u"} {
			if project == "q" && trigger == "t2" {
				continue // a trigger with no rows at all
			}
			for _, status := range statuses {
				for _, at := range []time.Time{now.Add(-48 * time.Hour), now.Add(-time.Hour)} {
					if project == "p2" && trigger == "u" && at.After(since) && status != store.StatusStaged {
						continue // a trigger whose outcomes are all older than the window
					}
					i++
					for range 1 + i%3 {
						r := rowAt(t, at, project, trigger)
						rows = append(rows, r)
						byStatus[status] = append(byStatus[status], r.ID)
						if status == store.StatusStaged || at.After(since) {
							inWindow[key{project, trigger, status}]++
						}
					}
				}
			}
		}
	}
	if err := st.Insert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	for _, status := range statuses[1:] {
		setStatus(t, st, status, "", byStatus[status]...)
	}
	for _, project := range []string{"", "p", "p2", "q", "none"} {
		var want []store.Count
		for k, n := range inWindow {
			if project == "" || k.project == project {
				want = append(want, store.Count{Project: k.project, Trigger: k.trigger, Status: k.status, Rows: n})
			}
		}
		slices.SortFunc(want, func(a, b store.Count) int {
			return strings.Compare(a.Project+"/"+a.Trigger+"/"+string(a.Status), b.Project+"/"+b.Trigger+"/"+string(b.Status))
		})
		got, err := st.Counts(ctx, project, since)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("counts of project %q since a day ago:\n got %+v\nwant %+v", project, got, want)
		}
	}
}

// TestNodesHeartbeat registers a node and beats: one row per node, with
// the latest count of rows held and the time by the store's clock.
func TestNodesHeartbeat(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	started := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	for _, held := range []int{3, 7} {
		if err := st.Heartbeat(ctx, "n1", "v1", started, held); err != nil {
			t.Fatal(err)
		}
	}
	nodes, err := st.Nodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes: %+v, %v; want n1 alone", nodes, err)
	}
	if n := nodes[0]; n.ID != "n1" || n.Version != "v1" || !n.StartedAt.Equal(started) || n.RowsHeld != 7 || n.Age < 0 || n.Age > 5*time.Second {
		t.Fatalf("node read as %+v", n)
	}
}

// TestListEventsReadsABoundedPartAPage: a filter that no index serves
// reads at most ListScan rows a page, so a page may hold fewer rows than
// asked, even none, with a cursor to go on; following the cursors still
// gives every matching row once, newest first, and ends.
func TestListEventsReadsABoundedPartAPage(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{URL: url, Schema: schema, ListScan: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	var rows []store.EventLog
	var rare []uuid.UUID // newest first
	for i := range 25 {
		trigger := "common"
		if i == 3 || i == 17 {
			trigger = "rare"
		}
		rows = append(rows, rowAt(t, base.Add(time.Duration(i)*time.Minute), "p", trigger))
		if trigger == "rare" {
			rare = append([]uuid.UUID{rows[i].ID}, rare...)
		}
	}
	if err := st.Insert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		q     store.EventQuery
		want  []uuid.UUID
		pages int
	}{
		{store.EventQuery{Trigger: "rare"}, rare, 3},      // windows of 10, 10 and 5 rows
		{store.EventQuery{Trigger: "nobody"}, nil, 3},     // pages with no row, and an end
		{store.EventQuery{BatchID: rare[1]}, rare[1:], 1}, // an index serves it: no bound
	} {
		var got []uuid.UUID
		var before *uuid.UUID
		pages := 0
		for {
			page, err := st.ListEvents(ctx, c.q, before, 100)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, e := range page.Events {
				got = append(got, e.ID)
			}
			if page.Next == nil || pages > 10 {
				break
			}
			before = page.Next
		}
		if !slices.Equal(got, c.want) || pages != c.pages {
			t.Errorf("%+v: %d pages with rows %v, want %d pages with %v", c.q, pages, got, c.pages, c.want)
		}
	}
}
