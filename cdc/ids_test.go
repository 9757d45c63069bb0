package cdc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
)

// TestIDsSortInCommitOrder checks that row-change ids sort as the changes
// were committed: a transaction's changes in the order they were made
// (so a parent's insert before its children's, although all share one
// commit time), and transactions committed in the same millisecond in
// commit order. That holds for the event ids (batch_id) and for the row
// ids of each trigger.
func TestIDsSortInCommitOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE parents (id int PRIMARY KEY);
		CREATE TABLE children (id int PRIMARY KEY, parent int REFERENCES parents)`)
	r.mustStart(r.config("n1", `
- {name: rows, type: DB_INSERT, url: "{hook}/rows", options: {col: "parents, children"}}
- {name: kids, type: DB_INSERT, url: "{hook}/kids", options: {col: children}}
`, ""), cdc.Options{})
	r.waitStreaming()
	r.exec(`BEGIN;
		INSERT INTO parents VALUES (1);
		INSERT INTO children SELECT i, 1 FROM generate_series(1, 50) i;
		INSERT INTO parents VALUES (2);
		INSERT INTO children SELECT i, 2 FROM generate_series(51, 100) i;
		COMMIT`)
	// Small transactions, one after the other: several commit in one
	// millisecond.
	var batch strings.Builder
	for i := 3; i < 200; i++ {
		fmt.Fprintf(&batch, "BEGIN; INSERT INTO parents VALUES (%d); INSERT INTO children VALUES (%d, %[1]d); COMMIT;", i, 1000+i)
	}
	r.exec(batch.String())
	const changes = 102 + 2*197
	r.hook.Wait(t, changes+100+197, 20*time.Second)

	ctx := context.Background()
	rows, err := r.connect(r.storeURL).Query(ctx, `SELECT trigger_name, id::text, batch_id::text, payload->>'lsn', payload->>'xid'
		FROM `+pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Trigger, ID, Batch, LSN, XID string }
	logged, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	lsn := func(r row) pglogrepl.LSN {
		l, err := pglogrepl.ParseLSN(r.LSN)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// Changes committed one after the other from one session: commit
	// order is WAL order, and so is each transaction's order.
	sameMillisecond := 0 // neighbours from two transactions committed in one millisecond
	for _, trigger := range []string{"rows", "kids"} {
		var ofTrigger []row
		for _, r := range logged {
			if r.Trigger == trigger {
				ofTrigger = append(ofTrigger, r)
			}
		}
		for i := 1; i < len(ofTrigger); i++ {
			prev, cur := ofTrigger[i-1], ofTrigger[i]
			if lsn(prev) >= lsn(cur) {
				t.Fatalf("trigger %s: row %s (lsn %s) sorts before row %s (lsn %s)", trigger, prev.ID, prev.LSN, cur.ID, cur.LSN)
			}
			if prev.XID != cur.XID && prev.Batch[:13] == cur.Batch[:13] { // the commit time's millisecond
				sameMillisecond++
			}
		}
	}
	batches := make(map[string]pglogrepl.LSN)
	for _, r := range logged {
		batches[r.Batch] = lsn(r)
	}
	ids := make([]string, 0, len(batches))
	for id := range batches {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i := 1; i < len(ids); i++ {
		if batches[ids[i-1]] >= batches[ids[i]] {
			t.Fatalf("event %s (lsn %s) sorts before event %s (lsn %s)", ids[i-1], batches[ids[i-1]], ids[i], batches[ids[i]])
		}
	}
	if len(ids) != changes {
		t.Errorf("%d events, want %d", len(ids), changes)
	}
	t.Logf("%d neighbours come from two transactions committed in one millisecond", sameMillisecond)
	if sameMillisecond == 0 {
		t.Errorf("no transactions committed in one millisecond: the test shows nothing of their order")
	}
}
