package store

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/store/pgtest"
)

// TestClaimUsesTheDueIndex checks that with a long history and many staged
// rows, claims and next-due lookups read the partial index of staged rows,
// and stop at the rows they need: no full scan per claim, with statistics
// fresh or stale.
func TestClaimUsesTheDueIndex(t *testing.T) {
	url, schema := pgtest.Schema(t)
	ctx := context.Background()
	st, err := Open(ctx, Options{URL: url, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = st.pool.Exec(ctx, `
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
// releases look their rows up by primary key, even in the generic plans
// that cached statements end up with, and with statistics taken before
// many rows were staged.
func TestUpdatesByIDUseThePrimaryKey(t *testing.T) {
	url, schema := pgtest.Schema(t)
	ctx := context.Background()
	st, err := Open(ctx, Options{URL: url, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	_, err = conn.Exec(ctx, `
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at, status)
		SELECT gen_random_uuid(), gen_random_uuid(), 'p', 't', 'x', now(), now(), 'processed' FROM generate_series(1, 60000);
		ANALYZE event_logs;
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at, due_at, claimed_by)
		SELECT gen_random_uuid(), gen_random_uuid(), 'p', 't', 'x', now(), now(), now() + interval '1 hour', 'n' FROM generate_series(1, 20000);
		SET plan_cache_mode = force_generic_plan`)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ sql, args string }{
		"outcomes": {applyOutcomesSQL, `'{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'`},
		"renew":    {renewSQL, `'n', '{}', '10 seconds'`},
		"release":  {releaseSQL, `'n', '{}', '{}'`},
	} {
		stmt := "by_id_" + strings.Fields(name)[0]
		if _, err := conn.Exec(ctx, "PREPARE "+stmt+" AS "+c.sql); err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, "EXPLAIN (FORMAT JSON) EXECUTE "+stmt+"("+c.args+")")
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if !strings.Contains(text, `"Index Name": "event_logs_pkey"`) || strings.Contains(text, "event_logs_due") {
			t.Errorf("%s does not look rows up by primary key:\n%s", name, text)
		}
	}
}

// maxRows is the largest "Actual Rows" of a JSON plan.
func maxRows(plan string) int {
	most := 0
	for _, m := range regexp.MustCompile(`"Actual Rows": (\d+)`).FindAllStringSubmatch(plan, -1) {
		n, _ := strconv.Atoi(m[1])
		most = max(most, n)
	}
	return most
}
