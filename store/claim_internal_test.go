package store

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/store/pgtest"
)

// TestClaimUsesTheDueIndex checks that with a long history and many staged
// rows, claims and next-due lookups read the partial index of staged rows,
// and stop at the rows they need: no full scan per claim, with statistics
// fresh or stale.
func TestClaimUsesTheDueIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openMigrated(t)
	_, err := st.pool.Exec(ctx, `
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at, status, due_at)
		SELECT gen_random_uuid(), gen_random_uuid(), 'p', 't' || (i % 20), 'x', now(), now(),
		       CASE WHEN i % 10 = 0 THEN 'staged' ELSE 'processed' END,
		       CASE WHEN i % 10 = 0 THEN now() + (i || ' seconds')::interval END
		FROM generate_series(1, 50000) i`)
	if err != nil {
		t.Fatal(err)
	}
	for _, stats := range []string{"stale", "fresh"} {
		if stats == "fresh" {
			if _, err := st.pool.Exec(ctx, "ANALYZE event_logs"); err != nil {
				t.Fatal(err)
			}
		}
		for name, q := range map[string]string{"claim": dueRowsSQL, "next due": nextDueSQL} {
			args := []any{"p", "t3", 100}[:strings.Count(q, "$")]
			rows, err := st.pool.Query(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+q, args...)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			text := strings.Join(plan, "\n")
			// The trigger has 2,500 staged rows, none of them due yet: a good
			// plan reads the index and at most one row.
			if !strings.Contains(text, `"Index Name": "event_logs_due"`) || strings.Contains(text, "Seq Scan") ||
				maxRows(text) > 1 {
				t.Errorf("%s with %s statistics does not read event_logs_due sparingly:\n%s", name, stats, text)
			}
		}
	}
}

// TestUpdatesByIDUseThePrimaryKey checks that outcomes, renewals and
// releases look their rows up by primary key: with statistics taken before
// many rows were staged, and when a generic plan was cached while the
// table was small. Each runs after the setting it runs after in a write:
// outcomes after indexPlanSQL (their generic plans are used), renewals
// and releases after customPlanSQL.
func TestUpdatesByIDUseThePrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openMigrated(t)
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	statements := map[string]struct{ sql, args, setting string }{
		"outcome": {applyOutcomeSQL, `gen_random_uuid(), 'n', 'processed', 1, NULL, NULL, NULL, NULL`, indexPlanSQL},
		"renew":   {renewSQL, `'n', '{}', '{}'`, customPlanSQL},
		"release": {releaseSQL, `'n', '{}', '{}'`, customPlanSQL},
	}
	// inTx runs sql in a transaction, after the statement's setting when
	// withSetting.
	inTx := func(name string, withSetting bool, sql string) []string {
		t.Helper()
		var out []string
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if withSetting {
				if _, err := tx.Exec(ctx, statements[name].setting); err != nil {
					return err
				}
			}
			rows, err := tx.Query(ctx, sql)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	// check explains each statement's plan, after its setting when
	// settings, and an outcome's always (a write always sets it).
	check := func(when string, settings bool) {
		t.Helper()
		for name, c := range statements {
			var plan []string
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if settings || c.setting == indexPlanSQL {
					if _, err := tx.Exec(ctx, c.setting); err != nil {
						return err
					}
				}
				rows, err := tx.Query(ctx, "EXPLAIN (FORMAT JSON) EXECUTE by_id_"+name+"("+c.args+")")
				if err != nil {
					return err
				}
				plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, `"Index Name": "event_logs_pkey"`) || strings.Contains(text, "event_logs_due") {
				t.Errorf("%s: %s does not look rows up by primary key:\n%s", when, name, text)
			}
		}
	}
	insert := func(n int, status string) {
		exec(fmt.Sprintf(`INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at, status, due_at, claimed_by)
			SELECT gen_random_uuid(), gen_random_uuid(), 'p', 't', 'x', now(), now(), '%[1]s',
			       CASE '%[1]s' WHEN 'staged' THEN now() + interval '1 hour' END, CASE '%[1]s' WHEN 'staged' THEN 'n' END
			FROM generate_series(1, %[2]d)`, status, n))
	}

	// The generic plans Postgres caches are made while the table is small,
	// and outlive its growth (inserts do not invalidate them).
	// An outcome's is made after indexPlanSQL, as in a write; the others'
	// before the setting that keeps them from being used.
	insert(50, "staged")
	exec("ANALYZE event_logs") // one page: reading it whole is the cheapest plan
	exec("SET plan_cache_mode = force_generic_plan")
	for name, c := range statements {
		exec("PREPARE by_id_" + name + " AS " + c.sql)
		inTx(name, c.setting == indexPlanSQL, "EXPLAIN EXECUTE by_id_"+name+"("+c.args+")")
	}
	insert(20000, "staged")
	check("a generic plan cached while the table was small", true)

	// A long history, analyzed, then many rows staged since: even a plan
	// made now must not take event_logs_due for the rows' status.
	exec("UPDATE event_logs SET status = 'processed', due_at = NULL, claimed_by = NULL")
	insert(60000, "processed")
	exec("ANALYZE event_logs")
	insert(20000, "staged")
	exec("DISCARD PLANS")
	check("statistics from before the rows were staged", false)
}

// openMigrated opens a store in a fresh schema, migrated.
func openMigrated(t *testing.T) *Store {
	t.Helper()
	url, schema := pgtest.Schema(t)
	st, err := Open(context.Background(), Options{URL: url, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

// maxRows is the largest "Actual Rows" of a JSON plan.
func maxRows(plan string) int { return maxOf(plan, "Actual Rows") }

// maxOf is the largest value of a numeric field in a JSON plan.
func maxOf(plan, field string) int {
	most := 0
	for _, m := range regexp.MustCompile(`"`+field+`": (\d+)`).FindAllStringSubmatch(plan, -1) {
		n, _ := strconv.Atoi(m[1])
		most = max(most, n)
	}
	return most
}

// The batch inserts make their rows with one unnest per column in the
// select list (a ProjectSet), never with unnest in FROM (a Function Scan),
// which keeps each array in a store of its own: see eventUnnest.
func TestBatchInsertsUnnestInTheSelectList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openMigrated(t)
	var events eventColumns
	var invocations invocationColumns
	statements := map[string]struct {
		sql  string
		args []any
	}{
		"events":      {insertEventsSQL, events.args()},
		"events once": {insertEventsOnceSQL, events.args()},
		"invocations": {insertInvocationsSQL, invocations.args()},
		"files": {applyFilesSQL, append(events.args(), "p", "s", []int32{}, []string{}, []string{},
			[]int64{}, []time.Time{}, []bool{}, []int32{}, []string{})},
	}
	for name, c := range statements {
		rows, err := st.pool.Query(ctx, "EXPLAIN "+c.sql, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "Function Scan") || !strings.Contains(text, "ProjectSet") {
			t.Errorf("%s: want the rows made by a ProjectSet, not a Function Scan:\n%s", name, text)
		}
	}
}
