package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// benchRows is how many event_logs rows the admin benchmarks fill.
const benchRows = 1_000_000

// fillHistory fills event_logs with n rows in one statement: ids in time
// order, one a second back from now (UUIDv7 layout), over 2 projects and
// 20 triggers; 98% processed, 1% failed (with a remark), 0.9% cancelled,
// 0.1% staged; and one attempt per row in invocation_logs, four per
// failed row. Then it analyzes both tables, as autovacuum would.
func fillHistory(b *testing.B, st *store.Store, n int) time.Time {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	first := time.Now().Add(-time.Duration(n) * time.Second).Truncate(time.Second)
	_, err := st.Pool().Exec(ctx, `
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
		b.Fatal(err)
	}
	_, err = st.Pool().Exec(ctx, `
		INSERT INTO invocation_logs (id, event_id, attempt, node_id, started_at, duration_ms, request_body, response_status, error)
		SELECT gen_random_uuid(), e.id, a, 'n1', e.event_time, 1.5, '{"n":1}',
		       CASE WHEN e.status = 'failed' THEN 503 ELSE 200 END, CASE WHEN e.status = 'failed' THEN 'HTTP 503' END
		FROM event_logs e, generate_series(1, e.attempts) a`)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `VACUUM ANALYZE event_logs`); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `VACUUM ANALYZE invocation_logs`); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d rows in %s", n, time.Since(start).Round(time.Millisecond))
	return first
}

// explain logs the plan Postgres runs for a page of q, with what it read.
func explain(b *testing.B, st *store.Store, q store.EventQuery, before *uuid.UUID, limit int) string {
	b.Helper()
	sql, args := st.ListEventsSQL(q, before, limit)
	rows, err := st.Pool().Query(context.Background(), "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+sql, args...)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			b.Fatal(err)
		}
		plan = append(plan, line)
	}
	return strings.Join(plan, "\n")
}

// BenchmarkListEvents measures a page of 50 events (with their attempts)
// for the filters a console uses, with 1,000,000 rows in event_logs, and
// logs each query's plan. The aim is under 50 ms a page.
func BenchmarkListEvents(b *testing.B) {
	st := open(b)
	first := fillHistory(b, st, benchRows)
	ctx := context.Background()
	page, err := st.ListEvents(ctx, store.EventQuery{}, nil, 50)
	if err != nil {
		b.Fatal(err)
	}
	middle := page.Events[0].ID
	deep := first.Add(benchRows / 2 * time.Second)
	cases := []struct {
		name   string
		q      store.EventQuery
		before *uuid.UUID
	}{
		{"newest", store.EventQuery{}, nil},
		{"page-2", store.EventQuery{}, page.Next},
		{"project", store.EventQuery{Project: "p1"}, nil},
		{"trigger", store.EventQuery{Project: "p1", Trigger: "t7"}, nil},
		{"type", store.EventQuery{Project: "p0", Type: "type4"}, nil},
		{"failed", store.EventQuery{Status: store.StatusFailed}, nil},
		{"trigger-failed", store.EventQuery{Project: "p1", Trigger: "t3", Status: store.StatusFailed}, nil},
		{"trigger-failed-none", store.EventQuery{Project: "p1", Trigger: "t7", Status: store.StatusFailed}, nil},
		{"trigger-none", store.EventQuery{Project: "p1", Trigger: "nobody"}, nil},
		{"staged", store.EventQuery{Status: store.StatusStaged}, nil},
		{"trigger-staged", store.EventQuery{Project: "p1", Trigger: "t7", Status: store.StatusStaged}, nil},
		{"cancelled", store.EventQuery{Status: store.StatusCancelled}, nil},
		{"hour-long-ago", store.EventQuery{Since: deep, Until: deep.Add(time.Hour)}, nil},
		{"trigger-hour-long-ago", store.EventQuery{Project: "p1", Trigger: "t7", Since: deep, Until: deep.Add(time.Hour)}, nil},
		{"id", store.EventQuery{ID: middle}, nil},
		{"batch", store.EventQuery{BatchID: middle}, nil},
		{"remark", store.EventQuery{Remark: "503"}, nil},
		{"remark-rare-in-a-day", store.EventQuery{Remark: "cancelled by", Since: time.Now().Add(-24 * time.Hour)}, nil},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.Logf("%s:\n%s", c.name, explain(b, st, c.q, c.before, 50))
			for b.Loop() {
				if _, err := st.ListEvents(ctx, c.q, c.before, 50); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/page")
		})
	}
}

// BenchmarkCounts measures the counts by trigger and status with
// 1,000,000 rows in event_logs: over the last day (the console's
// overview), and over all rows.
func BenchmarkCounts(b *testing.B) {
	st := open(b)
	fillHistory(b, st, benchRows)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		since time.Time
	}{{"day", time.Now().Add(-24 * time.Hour)}, {"all", time.Time{}}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := st.Counts(ctx, "", c.since); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkRedeliver100k redelivers 100,000 failed rows of one trigger, in
// a table of 1,000,000, while another trigger's rows are inserted and
// claimed as a node would, one every 5 ms: it reports how long the
// redelivery took, and the median and slowest insert-and-claim of the
// other trigger during it and during as long a time before it.
func BenchmarkRedeliver100k(b *testing.B) {
	st := open(b)
	fillHistory(b, st, benchRows)
	ctx := context.Background()
	// other inserts and claims rows of another trigger until stop closes,
	// and returns how long each took.
	other := func(stop <-chan struct{}) []time.Duration {
		var took []time.Duration
		for {
			select {
			case <-stop:
				return took
			default:
			}
			t0 := time.Now()
			row := staged(time.Now(), "")
			row.Project, row.Trigger = "p9", "other"
			if err := st.Insert(ctx, []store.EventLog{row}); err != nil {
				b.Error(err)
				return took
			}
			if _, err := st.Claim(ctx, "n1", "p9", "other", 10, time.Minute); err != nil {
				b.Error(err)
				return took
			}
			took = append(took, time.Since(t0))
			time.Sleep(5 * time.Millisecond)
		}
	}
	summary := func(took []time.Duration) string {
		if len(took) == 0 {
			return "none"
		}
		slices.Sort(took)
		return fmt.Sprintf("%d, median %s, slowest %s", len(took), took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond))
	}
	for b.Loop() {
		b.StopTimer()
		// The newest 100,000 rows of project p1 become failed rows of
		// trigger bulk.
		_, err := st.Pool().Exec(ctx, `UPDATE event_logs SET status = 'failed', trigger_name = 'bulk', due_at = NULL, claimed_by = NULL,
			remark = 'failed' WHERE id IN (SELECT id FROM event_logs WHERE project = 'p1' ORDER BY id DESC LIMIT 100000)`)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Pool().Exec(ctx, `VACUUM ANALYZE event_logs`); err != nil {
			b.Fatal(err)
		}
		var took, wait time.Duration
		var done store.Changed
		var before, during []time.Duration
		for _, phase := range []string{"before", "during"} {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var got []time.Duration
			wg.Go(func() { got = other(stop) })
			if phase == "before" {
				wait = max(took, 5*time.Second) // the last redelivery's time
				time.Sleep(wait)
			} else {
				b.StartTimer()
				t0 := time.Now()
				done, err = st.Redeliver(ctx, store.EventQuery{Project: "p1", Trigger: "bulk", Status: store.StatusFailed}, "redelivered by bench")
				took = time.Since(t0)
				b.StopTimer()
			}
			close(stop)
			wg.Wait()
			if err != nil {
				b.Fatal(err)
			}
			if phase == "before" {
				before = got
			} else {
				during = got
			}
		}
		b.Logf("redelivered %d rows in %s (%.0f rows/s); another trigger's inserts and claims during it: %s; during %s before it: %s",
			done.Rows, took.Round(time.Millisecond), float64(done.Rows)/took.Seconds(), summary(during), wait.Round(time.Second), summary(before))
		b.ReportMetric(took.Seconds()*1000, "ms/redelivery")
		b.StartTimer()
	}
}
