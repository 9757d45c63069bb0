package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// BenchmarkMillionRowTxnRSS measures the peak resident memory of a real
// node process (the test binary re-executed to run a node, see TestMain)
// while it captures one 1,000,000-row INSERT transaction from a
// source database and delivers the 1,000,000 DB_INSERT events to a local
// webhook (trigger concurrency 64), every event logged in event_logs and
// every attempt in invocation_logs. The figure is the child's VmHWM from
// /proc, so it counts triggerd alone, not this process with its Postgres
// clients and receiver. It also reports the RSS before the transaction,
// how long after the commit every event was logged (polled every 2 s) and
// delivered, and the child's CPU time. Each op is one such transaction:
//
//	go test -run '^$' -bench BenchmarkMillionRowTxnRSS -benchtime 1x -timeout 60m ./node
//
// TRIGGERD_BENCH_ROWS sets another row count.
func BenchmarkMillionRowTxnRSS(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("reads the child's peak RSS from /proc/<pid>/status (Linux)")
	}
	rows := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TRIGGERD_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	const warm = 10
	ctx := context.Background()
	src := pgtest.Database(b)
	storeURL, schema := pgtest.Schema(b)
	srcConn, err := pgx.Connect(ctx, src)
	if err != nil {
		b.Fatal(err)
	}
	defer srcConn.Close(ctx)
	rssExec := func(sql string, args ...any) {
		b.Helper()
		if _, err := srcConn.Exec(ctx, sql, args...); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	rssExec(`CREATE TABLE orders (
		id bigint PRIMARY KEY,
		customer text NOT NULL,
		amount numeric(10,2) NOT NULL,
		placed_at timestamptz NOT NULL DEFAULT now())`)

	var delivered atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		delivered.Add(1)
	}))
	b.Cleanup(hook.Close)

	cfg := nodetest.WriteProjectConfig(b, "rss", storeURL, schema, fmt.Sprintf("    databases: {app: {url: %q}}\n", src),
		fmt.Sprintf("      - {name: ins, type: DB_INSERT, url: %q, concurrency: 64, options: {col: orders}}\n", hook.URL))
	node := nodetest.Start(b, cfg)
	pid := node.Cmd.Process.Pid
	rssWait(b, "the slot streamed", 30*time.Second, func() bool {
		streaming, err := cdc.Streaming(ctx, srcConn, "triggerd_demo_app")
		return err == nil && streaming
	})

	// Warm up, so that the idle figure includes the connections and caches.
	rssExec(fmt.Sprintf(`INSERT INTO orders (id, customer, amount) SELECT -g, 'warm', 0 FROM generate_series(1, %d) g`, warm))
	rssWait(b, "warm-up deliveries", time.Minute, func() bool { return delivered.Load() >= warm })
	idle := rssStatus(b, pid, "VmRSS")

	storeConn, err := pgx.Connect(ctx, storeURL)
	if err != nil {
		b.Fatal(err)
	}
	defer storeConn.Close(ctx)
	logs := pgx.Identifier{schema, "event_logs"}.Sanitize()

	var loggedIn, deliveredIn time.Duration
	cpu0 := rssCPU(b, pid)
	b.ResetTimer()
	for i := range b.N {
		want := int64(warm + (i+1)*rows)
		began := time.Now()
		rssExec(`INSERT INTO orders (id, customer, amount)
			SELECT g, 'customer-' || g, (g % 100000) / 100.0 FROM generate_series($1::bigint, $2::bigint) g`,
			int64(i*rows+1), int64((i+1)*rows))
		committed := time.Now()
		b.Logf("the %d-row INSERT took %s", rows, committed.Sub(began).Round(time.Millisecond))
		rssWait(b, "rows logged", 30*time.Minute, func() bool {
			var n int64
			if err := storeConn.QueryRow(ctx, `SELECT count(*) FROM `+logs).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n < want {
				time.Sleep(2 * time.Second) // counting is costly: look every 2s
			}
			return n >= want
		})
		loggedIn += time.Since(committed)
		b.Logf("all logged %s after the commit; peak RSS so far %.1f MB", time.Since(committed).Round(time.Second),
			float64(rssStatus(b, pid, "VmHWM"))/1024)
		progress := time.Now()
		rssWait(b, "deliveries", 60*time.Minute, func() bool {
			if delivered.Load() >= want {
				return true
			}
			if time.Since(progress) > 30*time.Second {
				progress = time.Now()
				fmt.Fprintf(os.Stderr, "%s after the commit: %d of %d delivered, RSS %.1f MB, peak %.1f MB\n",
					time.Since(committed).Round(time.Second), delivered.Load(), want,
					float64(rssStatus(b, pid, "VmRSS"))/1024, float64(rssStatus(b, pid, "VmHWM"))/1024)
			}
			return false
		})
		deliveredIn += time.Since(committed)
	}
	b.StopTimer()
	peak := rssStatus(b, pid, "VmHWM")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MB")
	b.ReportMetric(float64(idle)/1024, "idle-RSS-MB")
	b.ReportMetric(loggedIn.Seconds()/float64(b.N), "logged-s")
	b.ReportMetric(deliveredIn.Seconds()/float64(b.N), "delivered-s")
	b.ReportMetric(float64(rows*b.N)/deliveredIn.Seconds(), "events/s")
	b.ReportMetric((rssCPU(b, pid)-cpu0)/float64(b.N), "child-cpu-s")
}

// rssWait polls done until it reports true, failing after within.
func rssWait(b *testing.B, what string, within time.Duration, done func() bool) {
	b.Helper()
	waittest.For(b, within, func() error {
		if !done() {
			return fmt.Errorf("%s: not yet", what)
		}
		return nil
	})
}

// rssStatus reads a kB field of /proc/<pid>/status, such as VmHWM (the
// peak resident set) or VmRSS.
func rssStatus(b *testing.B, pid int, field string) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("%s: %q: %v", field, line, err)
			}
			return kb
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// rssCPU returns the user and system CPU seconds a process has used.
func rssCPU(b *testing.B, pid int) float64 {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}
