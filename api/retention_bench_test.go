package api_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// historyRows is how many rows of history the retention benchmark starts
// with, all of them expired but the last hour's and the staged ones.
const historyRows = 2_000_000

// BenchmarkDeliveryWhileSweeping measures delivery, as
// BenchmarkQueueAsync/delivered does (32 clients, events due at once, a
// local receiver), over a store holding 2,000,000 rows of history, in
// alternating phases of b.N/(2*cycles) events: without a sweep, then while
// the retention sweep deletes the expired rows (store.DeleteExpired with
// the node's batches and pauses), cycles times. It reports the end-to-end
// delivered/s of each kind of phase (the mean of its cycles), and the
// sweep's rows/s, and logs each cycle's pair. Run it with -benchtime
// 320000x (8 pairs of 20,000-event phases): a run of b.N 1 (Go's first
// probe) fills nothing and measures nothing.
func BenchmarkDeliveryWhileSweeping(b *testing.B) {
	if b.N == 1 {
		return
	}
	receiverURL, received := benchReceiver(b)
	dbURL, schema := pgtest.Schema(b)
	base, st := startNode(b, fmt.Sprintf(`
node_id: bench
store: {url: %q, schema: %s, max_conns: 32}
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: bench-secret-0123456789abcdef0123}]
    rules: {default: allow}
    triggers:
      - {name: bench, type: bench, url: %q, concurrency: 64}
`, dbURL, schema, receiverURL), nil)
	url := base + "/v1/api/demo/event-triggers/queue"
	pool := pgtest.Pool(b, dbURL, schema)
	pgtest.FillHistory(b, pool, historyRows)
	// What the history takes on disk, indexes and TOAST included, per
	// million events (rows of event_logs).
	var eventBytes, attemptBytes, attempts float64
	if err := pool.QueryRow(context.Background(), `SELECT pg_total_relation_size('event_logs'),
		pg_total_relation_size('invocation_logs'), (SELECT count(*) FROM invocation_logs)`).Scan(&eventBytes, &attemptBytes, &attempts); err != nil {
		b.Fatal(err)
	}
	// Rows an hour old expire: the history's, not the benchmark's own.
	hour := store.Window{Default: time.Hour}
	retention := store.Retention{store.StatusProcessed: hour, store.StatusFailed: hour, store.StatusCancelled: hour}
	hc := client()
	body := []byte(`{"type":"bench","data":{"to":"user1@email.com","subject":"hello"}}`)
	for range 200 { // warm connections and statement caches
		post(b, hc, url, body)
	}
	const cycles = 8
	perPhase := b.N / (2 * cycles)
	clients := max(32, runtime.GOMAXPROCS(0))
	// phase posts perPhase events from 32 clients and returns the
	// delivered/s from its first post to its last delivery.
	phase := func() float64 {
		want := received.Load() + int64(perPhase)
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for next.Add(1) <= int64(perPhase) {
					post(b, hc, url, body)
				}
			})
		}
		wg.Wait()
		deadline := time.Now().Add(2 * time.Minute)
		for received.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d events delivered after 2 minutes", received.Load()-want+int64(perPhase), perPhase)
			}
			time.Sleep(time.Millisecond)
		}
		return float64(perPhase) / time.Since(start).Seconds()
	}
	var idle, sweeping, deleted float64
	var swept time.Duration
	b.ResetTimer()
	for i := range cycles {
		without := phase()
		idle += without / cycles
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int)
		start := time.Now()
		go func() {
			n, _ := st.DeleteExpired(ctx, retention, time.Now(), store.Deleting{})
			done <- n
		}()
		with := phase()
		sweeping += with / cycles
		cancel()
		b.Logf("cycle %d: %.0f delivered/s without the sweep, %.0f with it (%+.1f%%)", i+1, without, with, 100*(with/without-1))
		deleted += float64(<-done)
		swept += time.Since(start)
	}
	b.StopTimer()
	var left int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*) FROM event_logs WHERE updated_at < now() - interval '1 hour' AND status <> 'staged'`).Scan(&left); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(idle, "idle-delivered/s")
	b.ReportMetric(sweeping, "sweeping-delivered/s")
	b.ReportMetric(100*(sweeping/idle-1), "change-%")
	b.ReportMetric(deleted/swept.Seconds(), "swept-rows/s")
	b.ReportMetric(deleted, "swept-rows")
	b.ReportMetric(float64(left), "expired-left")
	const million = 1e6
	b.ReportMetric(eventBytes/historyRows*million/(1<<20), "event_logs-MiB/M")
	b.ReportMetric(attemptBytes/historyRows*million/(1<<20), "invocation_logs-MiB/M")
	b.ReportMetric(attempts/historyRows, "attempts/event")
}
