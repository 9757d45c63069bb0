package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/triggerd/triggerd/store"
)

// TestHeartbeatReportsSources writes the sources two nodes hold with their
// heartbeats: one row per source, of the node that reported it last, with
// the figures of its kind; a report that has no last change or rescan yet
// (a node that just took the source over) keeps the one before.
func TestHeartbeatReportsSources(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	changed := time.Date(2026, 11, 30, 8, 0, 0, 123000, time.UTC)
	rescanned := changed.Add(time.Minute)
	if err := st.Heartbeat(ctx, "a", "v1", time.Now(), 0,
		store.SourceState{Kind: store.SourceDatabase, Project: "p", Alias: "app", LastChange: changed, Indexed: 9, Watches: 9},
		store.SourceState{Kind: store.SourceStorage, Project: "p", Alias: "uploads", Indexed: 3, Watches: 2, LastRescan: rescanned},
	); err != nil {
		t.Fatal(err)
	}
	// Node b takes the database over, and has seen no change yet.
	if err := st.Heartbeat(ctx, "b", "v1", time.Now(), 0, store.SourceState{Kind: store.SourceDatabase, Project: "p", Alias: "app"}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Sources(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("sources: %+v, %v; want the database and the directory", got, err)
	}
	db, dir := got[0], got[1]
	if db.Kind != store.SourceDatabase || db.Project != "p" || db.Alias != "app" || db.Node != "b" ||
		!db.LastChange.Equal(changed) || db.Indexed != 0 || db.Watches != 0 || !db.LastRescan.IsZero() || db.Age < 0 || db.Age > 5*time.Second {
		t.Errorf("the database reads as %+v; want held by b, a's last change kept, no directory figures", db)
	}
	if dir.Kind != store.SourceStorage || dir.Alias != "uploads" || dir.Node != "a" || dir.Indexed != 3 || dir.Watches != 2 ||
		!dir.LastRescan.Equal(rescanned) || !dir.LastChange.IsZero() {
		t.Errorf("the directory reads as %+v", dir)
	}
	nodes, err := st.Nodes(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes: %+v, %v; want a and b", nodes, err)
	}
}
