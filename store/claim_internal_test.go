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

// maxRows is the largest "Actual Rows" of a JSON plan.
func maxRows(plan string) int {
	most := 0
	for _, m := range regexp.MustCompile(`"Actual Rows": (\d+)`).FindAllStringSubmatch(plan, -1) {
		n, _ := strconv.Atoi(m[1])
		most = max(most, n)
	}
	return most
}
