package pgtest

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// FillHistory fills a store's event_logs, through pool, with n rows in one
// statement, as a busy node leaves them: ids in time order, one a second
// back from now (UUIDv7 layout), over 2 projects (p0, p1) and 20 triggers
// (t0 to t19, the even ones in p0) with types type0 to type19; 98%
// processed, 1% failed (with a remark), 0.9% cancelled, 0.1% staged (due a
// day after their event); and one attempt per row in invocation_logs, four
// per failed row. Then it analyzes both tables, as autovacuum would. It
// returns the time of the oldest row.
func FillHistory(tb testing.TB, pool *pgxpool.Pool, n int) time.Time {
	tb.Helper()
	ctx := tb.Context()
	start := time.Now()
	first := time.Now().Add(-time.Duration(n) * time.Second).Truncate(time.Second)
	_, err := pool.Exec(ctx, `
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, payload, event_time, fire_at, status, attempts,
		                        remark, due_at, created_at, updated_at)
		SELECT id, id, 'p' || (g % 2), 't' || (g % 20), 'type' || (g % 20), '{"n":1}', at, at, st,
		       CASE st WHEN 'failed' THEN 4 WHEN 'processed' THEN 1 ELSE 0 END,
		       CASE st WHEN 'failed' THEN 'failed after 4 attempt(s): HTTP 503 Service Unavailable'
		               WHEN 'cancelled' THEN 'cancelled by ops' END,
		       CASE st WHEN 'staged' THEN at + interval '1 day' END, at, at
		FROM (SELECT g, to_timestamp($2::float8 + g) AS at,
		             (lpad(to_hex(($2::bigint + g) * 1000), 12, '0') || '7' || lpad(to_hex(g % 4096), 3, '0') || '8' ||
		              substr(md5(g::text), 1, 15))::uuid AS id,
		             CASE WHEN g % 1000 = 7 THEN 'staged' WHEN g % 100 = 3 THEN 'failed'
		                  WHEN g % 1000 < 9 AND g % 100 <> 3 THEN 'cancelled' ELSE 'processed' END AS st
		      FROM generate_series(1, $1) g) s`, n, first.Unix())
	if err != nil {
		tb.Fatalf("pgtest: fill event_logs: %v", err)
	}
	_, err = pool.Exec(ctx, `
		INSERT INTO invocation_logs (id, event_id, attempt, node_id, started_at, duration_ms, request_body, response_status, error)
		SELECT gen_random_uuid(), e.id, a, 'n1', e.event_time, 1.5, '{"n":1}',
		       CASE WHEN e.status = 'failed' THEN 503 ELSE 200 END, CASE WHEN e.status = 'failed' THEN 'HTTP 503' END
		FROM event_logs e, generate_series(1, e.attempts) a`)
	if err != nil {
		tb.Fatalf("pgtest: fill invocation_logs: %v", err)
	}
	for _, table := range []string{"event_logs", "invocation_logs"} {
		if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+table); err != nil {
			tb.Fatalf("pgtest: analyze %s: %v", table, err)
		}
	}
	tb.Logf("filled %d rows in %s", n, time.Since(start).Round(time.Millisecond))
	return first
}
