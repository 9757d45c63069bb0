package dispatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
)

func TestIngestLogsAReplayedChangeOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := newHook(t, nil), newHook(t, nil)
	n := e.start("n1", trigger("a", "row-change", a.URL, "")+trigger("b", "row-change", b.URL, ""), dispatch.Options{})
	ctx := context.Background()
	commit := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	change := dispatch.Change{
		Event:    dispatch.Event{Project: "p", Type: "row-change", Data: json.RawMessage(`{"n":1}`), Time: commit},
		Key:      "p/app/0/16B3748/0",
		Triggers: []string{"a"}, // b handles DB_INSERT too, but not this change
	}
	if _, err := n.d.Ingest(ctx, []dispatch.Change{change}, nil); err != nil {
		t.Fatal(err)
	}
	first := a.next(t, 5*time.Second)
	// A replay after a crash: same key, same rows, so nothing new.
	if _, err := n.d.Ingest(ctx, []dispatch.Change{change}, nil); err != nil {
		t.Fatal(err)
	}
	other := change
	other.Key = "p/app/0/16B3748/1"
	if _, err := n.d.Ingest(ctx, []dispatch.Change{other}, nil); err != nil {
		t.Fatal(err)
	}
	second := a.next(t, 5*time.Second)
	if first.event.ID == second.event.ID || first.event.Time != commit.UTC().Format(time.RFC3339Nano) {
		t.Errorf("deliveries %+v and %+v", first.event, second.event)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(a.deliveries()); got != 2 {
		t.Errorf("hook a got %d deliveries, want 2 (the replay delivered again)", got)
	}
	if got := len(b.deliveries()); got != 0 {
		t.Errorf("hook b got %d deliveries of changes not routed to it", got)
	}
	recent, err := n.st.Recent(ctx, store.Filter{}, 100)
	if err != nil || len(recent) != 2 {
		t.Fatalf("event_logs holds %d rows, want 2: %v", len(recent), err)
	}
	if recent[0].ID.Version() != 8 {
		t.Errorf("row id %s is not the stable version-8 id", recent[0].ID)
	}

	bad := change
	bad.Key, bad.Triggers = "p/app/0/16B3748/2", []string{"a", "nope"}
	if _, err := n.d.Ingest(ctx, []dispatch.Change{bad}, nil); err == nil || !strings.Contains(err.Error(), `no trigger "nope"`) {
		t.Fatalf("unknown trigger: %v", err)
	}
	if recent, _ := n.st.Recent(ctx, store.Filter{}, 100); len(recent) != 2 {
		t.Errorf("a refused change left rows: %d", len(recent))
	}
}

// TestIngestWithDeliversWhatTheWriteInserted: IngestWith hands its write
// the rows of the changes, one per trigger in order, and delivers only the
// rows the write says it inserted; a failed write stages nothing.
func TestIngestWithDeliversWhatTheWriteInserted(t *testing.T) {
	e := newEnv(t)
	a, b := newHook(t, nil), newHook(t, nil)
	n := e.start("n1", trigger("a", "x", a.URL, "")+trigger("b", "x", b.URL, ""), dispatch.Options{})
	ctx := context.Background()
	changes := []dispatch.Change{
		{Event: dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(`{"n":1}`)}, Key: "k1", Triggers: []string{"a", "b"}},
		{Event: dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(`{"n":2}`)}, Key: "k2"},
		{Event: dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(`{"n":3}`)}, Key: "k3", Triggers: []string{"b"}},
	}
	var got []string
	err := n.d.IngestWith(ctx, changes, func(ctx context.Context, rows []store.EventLog) (map[uuid.UUID]bool, error) {
		for _, r := range rows {
			got = append(got, r.Trigger+string(r.Payload))
		}
		if len(rows) != 3 {
			return nil, errors.New("unexpected rows")
		}
		// The source's own write keeps the first change's row for b out.
		return n.st.InsertOnce(ctx, []store.EventLog{rows[0], rows[2]})
	})
	if want := []string{`a{"n":1}`, `b{"n":1}`, `b{"n":3}`}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("IngestWith: %v; the write got rows %q, want %q", err, got, want)
	}
	if d := a.next(t, 5*time.Second); string(d.event.Data) != `{"n":1}` {
		t.Errorf("hook a got %s, want the first change", d.event.Data)
	}
	if d := b.next(t, 5*time.Second); string(d.event.Data) != `{"n":3}` {
		t.Errorf("hook b got %s, want the third change: the first's row for b was left out", d.event.Data)
	}
	time.Sleep(300 * time.Millisecond)
	if len(a.deliveries()) != 1 || len(b.deliveries()) != 1 {
		t.Errorf("hooks got %d and %d deliveries, want 1 each", len(a.deliveries()), len(b.deliveries()))
	}

	calls := 0
	err = n.d.IngestWith(ctx, changes[1:2], func(context.Context, []store.EventLog) (map[uuid.UUID]bool, error) {
		calls++
		return nil, errors.New("the source's write failed")
	})
	if calls != 1 || err == nil || !strings.Contains(err.Error(), "the source's write failed") {
		t.Errorf("a change without rows: write called %d times, err %v; want once, its error", calls, err)
	}
	if recent, err := n.st.Recent(ctx, store.Filter{}, 100); err != nil || len(recent) != 2 {
		t.Errorf("event_logs holds %d rows (%v), want the 2 the write inserted", len(recent), err)
	}
}

// TestIngestClaimsAsItInserts: changes from a database are staged as
// their lane frees places, so that every row is claimed as it is
// inserted, and written once more only for its outcome, never for a
// claim.
func TestIngestClaimsAsItInserts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, nil)
	// Concurrency 1: the lane holds 16 rows. It keeps up, unless the
	// machine is so loaded that 8 deliveries take longer than RoomWait:
	// 5 s, not the default 250 ms, so that this test does not depend on it.
	n := e.start("n1", trigger("t", "row-change", h.URL, "concurrency: 1"), dispatch.Options{RoomWait: 5 * time.Second})
	claims := claimLog(t, e)
	const rows = 200
	if _, err := n.d.Ingest(context.Background(), rowChanges("p/app/a", rows, "t"), nil); err != nil {
		t.Fatal(err)
	}
	waitDeliveries(t, h, rows)
	// A poll that runs as a change is staged holds the lane's free places
	// for a moment: a few rows may be claimed by a poll that way.
	if got := claims(0); got > 16 {
		t.Errorf("%d of %d rows were claimed after their insert", got, rows)
	}
}

// TestIngestDoesNotWaitBehindAHungLane: a lane that frees no place,
// because its webhook hangs, holds the changes of other triggers up for a
// moment only.
func TestIngestDoesNotWaitBehindAHungLane(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fast := newHook(t, nil)
	release := make(chan struct{})
	hung := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { <-release })
	t.Cleanup(func() { close(release) })
	n := e.start("n1", trigger("fast", "row-change", fast.URL, "concurrency: 1")+
		trigger("hung", "row-change", hung.URL, "concurrency: 1, timeout: 60000"), dispatch.Options{})
	began := time.Now()
	if _, err := n.d.Ingest(context.Background(), rowChanges("p/app/b", 100, "hung", "fast"), nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("staging 100 changes took %s behind a lane whose webhook hangs", took)
	}
	waitDeliveries(t, fast, 100)
}

// claimLog notes every claim of a row of e's event_logs from now on: an
// update that gives a free row to a node, as a poll's claim does, with
// how many attempts the row had. It returns a function that counts the
// claims of rows attempted at least after times.
func claimLog(t *testing.T, e *env) func(after int) int {
	t.Helper()
	db := e.db()
	ctx := context.Background()
	claims := pgx.Identifier{e.schema, "test_claims"}.Sanitize()
	for _, q := range []string{
		`CREATE TABLE ` + claims + ` (attempts int NOT NULL)`,
		`CREATE FUNCTION ` + pgx.Identifier{e.schema, "test_note_claim"}.Sanitize() + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.claimed_by IS NULL AND NEW.claimed_by IS NOT NULL THEN
				INSERT INTO ` + claims + ` VALUES (OLD.attempts);
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER test_note_claim BEFORE UPDATE ON ` + pgx.Identifier{e.schema, "event_logs"}.Sanitize() +
			` FOR EACH ROW EXECUTE FUNCTION ` + pgx.Identifier{e.schema, "test_note_claim"}.Sanitize() + `()`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return func(after int) int {
		t.Helper()
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM `+claims+` WHERE attempts >= $1`, after).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// TestIngestDoesNotWaitBehindASlowLane: a lane whose webhook is slower
// than the changes come, though it frees a place now and then, sets the
// pace of capture for a moment only: staging does not wait for it again
// until it has drained.
func TestIngestDoesNotWaitBehindASlowLane(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fast := newHook(t, nil)
	slow := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { time.Sleep(30 * time.Millisecond) })
	// The slow lane holds 16 rows, and frees one every 30 ms: waiting
	// for room for each part of its rows would take 30 s for 1,000.
	n := e.start("n1", trigger("fast", "row-change", fast.URL, "")+
		trigger("slow", "row-change", slow.URL, "concurrency: 1"), dispatch.Options{})
	const count = 1000
	began := time.Now()
	if _, err := n.d.Ingest(context.Background(), rowChanges("p/app/c", count, "slow", "fast"), nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("staging %d changes took %s behind a slow lane", count, took)
	}
	waitDeliveries(t, fast, count)
}

// rowChanges returns count changes of one transaction, for triggers.
func rowChanges(key string, count int, triggers ...string) []dispatch.Change {
	out := make([]dispatch.Change, count)
	for i := range out {
		out[i] = dispatch.Change{
			Event: dispatch.Event{Project: "p", Type: "row-change", Data: json.RawMessage(`{}`)},
			Key:   key, Seq: 1, Sub: uint64(i), Triggers: triggers,
		}
	}
	return out
}

// waitDeliveries waits until h has received want deliveries.
func waitDeliveries(t *testing.T, h *hook, want int) {
	waittest.For(t, 20*time.Second, func() error {
		if got := len(h.deliveries()); got != want {
			return fmt.Errorf("%d deliveries of %d", got, want)
		}
		return nil
	})
}

// TestFreshChangesAreDeliveredFirst: a fresh change's row is attempted
// before it is logged, and logged with its first outcome (here a failed
// attempt, so the row is logged staged, kept by its node, and retried);
// Logged completes then. While the source no longer streams, such a row is
// not attempted, and Logged says it was given up.
func TestFreshChangesAreDeliveredFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := make(chan struct{})
	h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 2 { // the first attempt of the fresh change
			<-release
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{}`))
	})
	// A lane's poll takes its free places while it claims, so a change
	// arriving then is logged first, for a poll (the path of any row whose
	// lane has no room). So that none comes while the change arrives, the
	// periodic poll is an hour away, and the lane's first poll, at its start,
	// is over before: a change due shortly after the start is claimed by
	// the poll its due time sets off, which comes after that one, and its
	// delivery shows both done.
	n := e.start("n1", trigger("t", "row-change", h.URL, "retries: 3, retry_backoff: {initial: 100ms}"), dispatch.Options{Poll: time.Hour})
	ctx := context.Background()
	warm := dispatch.Change{
		Event: dispatch.Event{Project: "p", Type: "row-change", Data: json.RawMessage(`{"warm":1}`),
			FireAt: time.Now().Add(100 * time.Millisecond)},
		Key: "p/app/warm", Triggers: []string{"t"},
	}
	if _, err := n.d.Ingest(ctx, []dispatch.Change{warm}, nil); err != nil {
		t.Fatal(err)
	}
	h.next(t, 5*time.Second)
	change := dispatch.Change{
		Event: dispatch.Event{Project: "p", Type: "row-change", Data: json.RawMessage(`{"n":1}`)},
		Key:   "p/app/fresh", Seq: 0x16B3748, Triggers: []string{"t"}, Fresh: true,
	}
	logged, err := n.d.Ingest(ctx, []dispatch.Change{change}, func() bool { return true })
	if err != nil || logged == nil {
		t.Fatalf("Ingest: %v, %v; want a Logged to wait for", logged, err)
	}
	first := h.next(t, 5*time.Second)
	if recent, err := n.st.Recent(ctx, store.Filter{}, 10); err != nil || len(recent) != 1 || logged.Complete() {
		t.Errorf("during the first attempt: %d rows logged (%v), complete %v; want the warm-up's alone, and not complete", len(recent), err, logged.Complete())
	}
	close(release)
	waitSettled(t, logged, "the row was not logged after its first attempt")
	if !logged.Complete() {
		t.Fatal("the row was given up after its first attempt, not logged")
	}
	if second := h.next(t, 5*time.Second); second.event.ID != first.event.ID {
		t.Errorf("the retry's id %s, want the first attempt's %s", second.event.ID, first.event.ID)
	}
	id, err := uuid.Parse(first.event.ID)
	if err != nil {
		t.Fatal(err)
	}
	waittest.For(t, 5*time.Second, func() error {
		ev, err := n.st.Event(ctx, id)
		if err != nil {
			return err
		}
		if ev.Status != store.StatusProcessed || ev.Attempts != 2 || len(ev.Invocations) != 2 {
			return fmt.Errorf("row %s, %d attempts, %d logged; want processed after 2, both logged", ev.Status, ev.Attempts, len(ev.Invocations))
		}
		return nil
	})

	gone := change
	gone.Key = "p/app/gone"
	logged, err = n.d.Ingest(ctx, []dispatch.Change{gone}, func() bool { return false })
	if err != nil || logged == nil {
		t.Fatalf("Ingest: %v, %v; want a Logged to wait for", logged, err)
	}
	waitSettled(t, logged, "a row whose source no longer streams was neither given up nor logged")
	if !logged.GivenUp() {
		t.Error("a row whose source no longer streams was not given up")
	}
	time.Sleep(200 * time.Millisecond)
	if got := len(h.deliveries()); got != 3 {
		t.Errorf("the hook got %d deliveries, want the warm-up's and the 2 of the fresh change", got)
	}
	if recent, err := n.st.Recent(ctx, store.Filter{}, 10); err != nil || len(recent) != 2 {
		t.Errorf("event_logs holds %d rows (%v), want the warm-up's and the fresh change's", len(recent), err)
	}
}

// waitSettled fails the test with why unless logged settles within 5 s.
func waitSettled(t *testing.T, logged *dispatch.Logged, why string) {
	t.Helper()
	select {
	case <-logged.Settled():
	case <-time.After(5 * time.Second):
		t.Fatal(why)
	}
}
