package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TestIndexChangesLookUpTheirPaths checks that a write of index changes reads
// the index rows of its own paths only, even when a generic plan was cached
// while the index was small (Postgres keeps using it as the index grows): a
// write must not cost in proportion to the size of the directory.
func TestIndexChangesLookUpTheirPaths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openMigrated(t)
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// One round of ten changes, each path removed and put again.
	var changes []IndexChange
	for i := range 20 {
		id := uuid.Must(uuid.NewV7())
		changes = append(changes, IndexChange{
			Entry:   FileEntry{Path: fmt.Sprintf("f%d", i%10), Type: FileTypeFile, Size: 1, Modified: time.Now()},
			Removed: i < 10,
			Events:  []EventLog{{ID: id, BatchID: id, Project: "p", Trigger: "t", Type: "x", EventTime: time.Now(), FireAt: time.Now()}},
		})
	}
	b := &pgx.Batch{}
	(&indexWrite{project: "p", alias: "up", changes: changes[:10]}).queue(b, nil)
	q := b.QueuedQueries[0]

	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	sd, err := conn.Conn().Prepare(ctx, "apply_files", q.SQL)
	if err != nil {
		t.Fatal(err)
	}
	// EXPLAIN EXECUTE takes literals: let Postgres write them.
	var args []string
	for i, oid := range sd.ParamOIDs {
		var typ, lit string
		if err := conn.QueryRow(ctx, `SELECT format_type($1, NULL)`, oid).Scan(&typ); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT quote_literal(($1::`+typ+`)::text)`, q.Arguments[i]).Scan(&lit); err != nil {
			t.Fatal(err)
		}
		args = append(args, lit+"::"+typ)
	}
	execute := "EXECUTE apply_files(" + strings.Join(args, ", ") + ")"
	// The generic plan is cached at the first execution, while the index is small.
	if _, err := conn.Exec(ctx, "EXPLAIN "+execute); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO file_index SELECT 'p', 'up', 'g' || i, 'file', 1, now() FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	var plan []string
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, customPlanSQL); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+execute)
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		return errRollback
	})
	if err != nil && !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if read := maxRows(text) + maxOf(text, "Rows Removed by Filter") + maxOf(text, "Rows Removed by Join Filter"); read > 100 {
		t.Errorf("a write of 10 changes reads %d rows:\n%s", read, text)
	}
}

// errRollback ends a transaction that must leave nothing behind.
var errRollback = fmt.Errorf("roll back")
