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
	"github.com/triggerd/triggerd/store/pgtest"
)

// benchRows is how many event_logs rows the admin benchmarks fill.
const benchRows = 1_000_000

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
	first := pgtest.FillHistory(b, st.Pool(), benchRows)
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
	pgtest.FillHistory(b, st.Pool(), benchRows)
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
	pgtest.FillHistory(b, st.Pool(), benchRows)
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
