package dispatch_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// liveTrigger checks a trigger as the admin API does, against project p
// of n's config.
func liveTrigger(t *testing.T, n *node, text string) *config.Trigger {
	t.Helper()
	tr, err := config.ParseTrigger("trigger", []byte(text), &n.cfg.Projects[0])
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// update gives project p of n the triggers, and returns those removed.
func update(t *testing.T, n *node, ts ...*config.Trigger) []store.Trigger {
	t.Helper()
	removed, err := n.d.Update(map[string][]*config.Trigger{"p": ts})
	if err != nil {
		t.Fatal(err)
	}
	return removed
}

// TestUpdateAddsAndChangesTriggers adds a trigger to a running
// dispatcher, then changes its URL while a row waits for its retry: the
// retry goes to the new URL.
func TestUpdateAddsAndChangesTriggers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	second := newHook(t, nil)
	n := e.start("node-1", trigger("a", "x", first.URL, ""), dispatch.Options{})
	ctx := context.Background()

	if _, rows, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "y"}); err != nil || rows != 0 {
		t.Fatalf("before the trigger exists: %d rows, %v", rows, err)
	}
	a := &n.cfg.Projects[0].Triggers[0]
	b := liveTrigger(t, n, `{name: b, type: y, url: "`+first.URL+`/b", retries: 3, retry_backoff: {initial: 500ms, max: 500ms}}`)
	if removed := update(t, n, a, b); len(removed) != 0 {
		t.Fatalf("adding a trigger removed %v", removed)
	}
	id, rows, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "y"})
	if err != nil || rows != 1 {
		t.Fatalf("after the trigger was added: %d rows, %v", rows, err)
	}
	if d := first.next(t, 5*time.Second); d.event.ID == "" || d.event.Type != "y" {
		t.Fatalf("first attempt: %+v", d.event)
	}
	// The retry is 500ms away: change the URL now.
	changed := liveTrigger(t, n, `{name: b, type: y, url: "`+second.URL+`/b", retries: 3, retry_backoff: {initial: 500ms, max: 500ms}}`)
	update(t, n, a, changed)
	second.next(t, 5*time.Second)
	got := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
	if got[0].Attempts != 2 || len(first.deliveries()) != 1 {
		t.Fatalf("row %+v, %d attempts at the old url; want 2 attempts, 1 at the old url", got[0], len(first.deliveries()))
	}
}

// heldHook is a hook that signals inFlight when an attempt arrives, and
// answers it 500 once release is closed.
func heldHook(t *testing.T) (h *hook, inFlight <-chan struct{}, release chan struct{}) {
	release = make(chan struct{})
	arrived := make(chan struct{}, 1)
	h = newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusInternalServerError)
	})
	return h, arrived, release
}

// TestUpdateRemovesTriggers removes two triggers: one whose row waits for
// a later time, and one whose row is in flight. Once their rows are
// cancelled (as deleting a stored trigger does), the row in flight
// finishes its attempt and stays cancelled, and no attempt follows.
func TestUpdateRemovesTriggers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	slow, inFlight, release := heldHook(t)
	later := newHook(t, nil)
	n := e.start("node-1", trigger("slow", "s", slow.URL, "retries: 5, retry_backoff: {initial: 100ms, max: 100ms}")+
		trigger("later", "l", later.URL, "")+trigger("kept", "k", later.URL, ""), dispatch.Options{})
	ctx := context.Background()
	flying, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "s"})
	if err != nil {
		t.Fatal(err)
	}
	waiting, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "l", FireAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	<-inFlight
	removed := update(t, n, &n.cfg.Projects[0].Triggers[2])
	slices.SortFunc(removed, func(a, b store.Trigger) int { return len(a.Name) - len(b.Name) })
	if len(removed) != 2 || removed[0].Name != "slow" || removed[1].Name != "later" {
		t.Fatalf("removed %v, want slow and later", removed)
	}
	for _, r := range removed {
		if _, err := n.st.CancelDeleted(ctx, r.Project, r.Name); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	for _, batch := range []struct {
		id    uuid.UUID
		label string
	}{{flying, "in flight"}, {waiting, "waiting"}} {
		rows := n.waitStatus(t, batch.id, store.StatusCancelled, 5*time.Second)
		if rows[0].Remark != store.DeletedRemark {
			t.Errorf("the %s row's remark is %q", batch.label, rows[0].Remark)
		}
	}
	time.Sleep(500 * time.Millisecond) // the retry would have come by now
	if got := len(slow.deliveries()); got != 1 {
		t.Fatalf("the removed trigger's hook got %d attempts, want the 1 in flight", got)
	}
	rows := n.rows(t, flying)
	if rows[0].Status != store.StatusCancelled {
		t.Fatalf("the row in flight became %s after its attempt", rows[0].Status)
	}
	inv, err := n.st.Invocations(ctx, rows[0].ID)
	if err != nil || len(inv) != 1 {
		t.Fatalf("the attempt in flight left %d invocations (%v), want 1", len(inv), err)
	}
	if _, rows, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "s"}); err != nil || rows != 0 {
		t.Fatalf("a removed trigger still takes events: %d rows, %v", rows, err)
	}
}

// TestRemovedTriggerAnswersAWaitingCaller removes the trigger of a
// synchronous call whose attempt is in flight: the caller is told the row
// was cancelled, not left waiting, and not told the webhook was down.
func TestRemovedTriggerAnswersAWaitingCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	slow, inFlight, release := heldHook(t)
	n := e.start("node-1", trigger("slow", "s", slow.URL, "retries: 5, retry_backoff: {initial: 100ms, max: 100ms}"), dispatch.Options{})
	ctx := context.Background()
	answered := make(chan error, 1)
	go func() {
		_, err := n.d.Call(ctx, dispatch.Event{Project: "p", Type: "s"})
		answered <- err
	}()
	<-inFlight
	for _, r := range update(t, n) {
		if _, err := n.st.CancelDeleted(ctx, r.Project, r.Name); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	select {
	case err := <-answered:
		var failed *dispatch.FailedError
		if !errors.As(err, &failed) || !strings.Contains(failed.Reason, "removed") {
			t.Fatalf("the caller was told %v, want that the trigger was removed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the caller of a removed trigger is still waiting")
	}
}
