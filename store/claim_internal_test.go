package store

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/store/pgtest"
)

// TestClaimUsesTheDueIndex checks that with a long history and many staged
// rows, a claim reads the partial index of staged rows, not the table.
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
		FROM generate_series(1, 50000) i;
		ANALYZE event_logs`)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := st.pool.Query(ctx, "EXPLAIN "+dueRowsSQL, "p", "t3", 100)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "event_logs_due") || strings.Contains(text, "Seq Scan") {
		t.Fatalf("claim plan does not use event_logs_due:\n%s", text)
	}
}
