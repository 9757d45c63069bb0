package dispatch_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/dispatch"
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
	if err := n.d.Ingest(ctx, []dispatch.Change{change}); err != nil {
		t.Fatal(err)
	}
	first := a.next(t, 5*time.Second)
	// A replay after a crash: same key, same rows, so nothing new.
	if err := n.d.Ingest(ctx, []dispatch.Change{change}); err != nil {
		t.Fatal(err)
	}
	other := change
	other.Key = "p/app/0/16B3748/1"
	if err := n.d.Ingest(ctx, []dispatch.Change{other}); err != nil {
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
	if err := n.d.Ingest(ctx, []dispatch.Change{bad}); err == nil || !strings.Contains(err.Error(), `no trigger "nope"`) {
		t.Fatalf("unknown trigger: %v", err)
	}
	if recent, _ := n.st.Recent(ctx, store.Filter{}, 100); len(recent) != 2 {
		t.Errorf("a refused change left rows: %d", len(recent))
	}
}
