package cdc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
)

// benchTable is the captured table of the benchmarks: a key and a few
// columns of common types, so each event carries a typical small row.
const benchTable = `CREATE TABLE orders (
	id bigint PRIMARY KEY,
	customer text NOT NULL,
	amount numeric(10,2) NOT NULL,
	placed_at timestamptz NOT NULL DEFAULT now()
)`

const insertOrder = `INSERT INTO orders (id, customer, amount) VALUES ($1, $2, $3)`

// benchConcurrency is the DB_INSERT trigger's concurrency in the benchmarks.
const benchConcurrency = 64

// benchLog keeps the sources' info lines out of the benchmarks' output.
var benchLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// benchSink is a webhook that answers 200 at once and counts deliveries; a
// waiter learns when the nth arrived. onBody, when set, sees every body.
type benchSink struct {
	*httptest.Server
	n      atomic.Int64
	mu     sync.Mutex
	marks  map[int64]chan time.Time // count → gets the arrival time of that delivery
	onBody func(body []byte, at time.Time)
}

func newBenchSink(b *testing.B, onBody func([]byte, time.Time)) *benchSink {
	s := &benchSink{marks: make(map[int64]chan time.Time), onBody: onBody}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		at := time.Now()
		if s.onBody != nil {
			s.onBody(body, at)
		}
		n := s.n.Add(1)
		s.mu.Lock()
		if c, ok := s.marks[n]; ok {
			c <- at
			delete(s.marks, n)
		}
		s.mu.Unlock()
	}))
	b.Cleanup(s.Close)
	return s
}

// mark returns a channel that gets the arrival time of the delivery that
// brings the count to n.
func (s *benchSink) mark(n int64) <-chan time.Time {
	c := make(chan time.Time, 1)
	s.mu.Lock()
	if s.n.Load() >= n {
		c <- time.Now()
	} else {
		s.marks[n] = c
	}
	s.mu.Unlock()
	return c
}

// await waits for a mark, failing the benchmark after within.
func (s *benchSink) await(b *testing.B, c <-chan time.Time, want int64, within time.Duration) time.Time {
	b.Helper()
	select {
	case at := <-c:
		return at
	case <-time.After(within):
		b.Fatalf("%d deliveries after %s, want %d", s.n.Load(), within, want)
		return time.Time{}
	}
}

// benchRig starts a node capturing the orders table for one DB_INSERT
// trigger whose webhook is the sink, and waits until it streams. Every
// change is logged in event_logs and every attempt in invocation_logs, as
// in production.
func benchRig(b *testing.B, hook *benchSink) *rig {
	r := newRig(b, benchTable)
	r.mustStart(r.config("bench", fmt.Sprintf(`
- {name: ins, type: DB_INSERT, url: %q, concurrency: %d, options: {col: orders}}
`, hook.URL, benchConcurrency), ""), cdc.Options{Logger: benchLog})
	r.waitStreaming()
	// Warm up: the relation's description, the primary key lookup, the
	// store's and the webhook's connections.
	c := hook.mark(hook.n.Load() + 20)
	r.exec(`INSERT INTO orders (id, customer, amount) SELECT -g, 'warm', 0 FROM generate_series(1, 20) g`)
	hook.await(b, c, 20, 30*time.Second)
	return r
}

// benchConns opens n connections to the rig's source database.
func benchConns(b *testing.B, r *rig, n int) []*pgx.Conn {
	b.Helper()
	ctx := context.Background()
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		c, err := pgx.Connect(ctx, r.src)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(ctx) })
		conns[i] = c
	}
	return conns
}

// benchSettled waits, off the clock, until the store has every row
// processed and an invocation for each, and fails the benchmark otherwise.
func benchSettled(b *testing.B, r *rig, want int64) {
	b.Helper()
	ctx := context.Background()
	conn := r.connect(r.storeURL)
	ev := pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()
	inv := pgx.Identifier{r.storeSchema, "invocation_logs"}.Sanitize()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var rows, processed, invocations int64
		err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'processed'), (SELECT count(*) FROM `+inv+`) FROM `+ev).
			Scan(&rows, &processed, &invocations)
		if err != nil {
			b.Fatal(err)
		}
		if rows == want && processed == want && invocations >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("store: %d rows, %d processed, %d invocations; want %d of each", rows, processed, invocations, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchStages logs where the time went between a source commit and the
// recorded outcome, from the store's own timestamps: commit_time (the
// source's commit) → created_at (the store transaction that logged the
// row) → started_at (the first attempt) → updated_at (the outcome
// written), as p50 / p99 / max in ms over the rows with a positive id.
func benchStages(b *testing.B, r *rig) {
	b.Helper()
	ctx := context.Background()
	conn := r.connect(r.storeURL)
	ev := pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()
	inv := pgx.Identifier{r.storeSchema, "invocation_logs"}.Sanitize()
	stages := []struct{ name, expr string }{
		{"commit→logged", `e.created_at - (e.payload->>'commit_time')::timestamptz`},
		{"logged→attempt", `i.started_at - e.created_at`},
		{"attempt", `make_interval(secs => i.duration_ms / 1000)`},
		{"attempt end→recorded", `e.updated_at - (i.started_at + make_interval(secs => i.duration_ms / 1000))`},
	}
	var parts []string
	for _, st := range stages {
		var p50, p99, worst float64
		err := conn.QueryRow(ctx, `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x), percentile_cont(0.99) WITHIN GROUP (ORDER BY x), max(x)
			FROM (SELECT extract(epoch FROM `+st.expr+`) * 1000 AS x
			      FROM `+ev+` e JOIN `+inv+` i ON i.event_id = e.id AND i.attempt = 1
			      WHERE (e.payload->'doc'->>'id')::bigint > 0) s`).Scan(&p50, &p99, &worst)
		if err != nil {
			b.Fatal(err)
		}
		parts = append(parts, fmt.Sprintf("%s %.1f/%.1f/%.1f", st.name, p50, p99, worst))
	}
	// Rows logged by one Ingest share their transaction's created_at.
	var rows, writes int64
	err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT created_at) FROM `+ev+` WHERE (payload->'doc'->>'id')::bigint > 0`).Scan(&rows, &writes)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("stages, p50/p99/max ms: %s; %d rows logged in %d store transactions", strings.Join(parts, ", "), rows, writes)
}

// BenchmarkCapture measures change capture end to end: from a commit in
// the source database to the webhook's 200, every change logged in
// event_logs and every attempt in invocation_logs, through a DB_INSERT
// trigger of concurrency 64 and a receiver on loopback.
//
// single-row-8-writers: each op is 20,000 single-row autocommit INSERTs,
// 2,500 from each of 8 concurrent connections. events/s counts from the
// first commit to the last delivery; commits/s is the writers' own rate,
// and lag-ms how long after the last commit the last delivery came.
//
// txn-100k: each op is one 100,000-row INSERT … SELECT generate_series.
// events/s counts from its commit (the INSERT's return) to the last of the
// 100,000 deliveries; first-ms is the wait for the first delivery, which
// pgoutput sends only once the transaction committed and is decoded.
//
// Both have a fixed size per op, so -benchtime 1x gives a whole figure:
//
//	go test -run '^$' -bench BenchmarkCapture -benchtime 1x -count 3 ./cdc
func BenchmarkCapture(b *testing.B) {
	b.Run("single-row-8-writers", func(b *testing.B) {
		const writers, perWriter = 8, 2500
		hook := newBenchSink(b, nil)
		r := benchRig(b, hook)
		conns := benchConns(b, r, writers)
		ctx := context.Background()
		var nextID atomic.Int64
		var events int64
		var total, writing, lag time.Duration
		cpu := startBenchCPU()
		b.ResetTimer()
		for range b.N {
			want := hook.n.Load() + writers*perWriter
			last := hook.mark(want)
			var wg sync.WaitGroup
			firsts := make([]time.Time, writers)
			lasts := make([]time.Time, writers)
			for w, conn := range conns {
				wg.Go(func() {
					for i := range perWriter {
						id := nextID.Add(1)
						if _, err := conn.Exec(ctx, insertOrder, id, "customer-"+strconv.FormatInt(id, 10), "12.34"); err != nil {
							b.Error(err)
							return
						}
						if i == 0 {
							firsts[w] = time.Now()
						}
					}
					lasts[w] = time.Now()
				})
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			end := hook.await(b, last, want, 5*time.Minute)
			first, lastCommit := slices.MinFunc(firsts, time.Time.Compare), slices.MaxFunc(lasts, time.Time.Compare)
			events += writers * perWriter
			total += end.Sub(first)
			writing += lastCommit.Sub(first)
			lag += end.Sub(lastCommit)
		}
		b.StopTimer()
		cpu.report(b, b.N)
		b.ReportMetric(float64(events)/total.Seconds(), "events/s")
		b.ReportMetric(float64(events)/writing.Seconds(), "commits/s")
		b.ReportMetric(float64(lag.Milliseconds())/float64(b.N), "lag-ms")
		benchSettled(b, r, events+20)
		benchStages(b, r)
	})

	b.Run("txn-100k", func(b *testing.B) {
		const rows = 100_000
		hook := newBenchSink(b, nil)
		r := benchRig(b, hook)
		conn := benchConns(b, r, 1)[0]
		ctx := context.Background()
		var total, inserting, firstWait time.Duration
		var cpu *benchCPU
		var sourceWAL uint64
		walFrom, sizeFrom := r.walLSN(), benchStoreSize(b, r)
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			base := hook.n.Load()
			first, last := hook.mark(base+1), hook.mark(base+rows)
			began := time.Now()
			insertFrom := r.walLSN()
			_, err := conn.Exec(ctx, `INSERT INTO orders (id, customer, amount)
				SELECT g, 'customer-' || g, (g % 100000) / 100.0 FROM generate_series($1::bigint, $2::bigint) g`,
				int64(i)*rows+1, int64(i+1)*rows)
			if err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			sourceWAL += r.walLSN() - insertFrom
			if cpu == nil {
				cpu = startBenchCPU()
			}
			b.StartTimer()
			firstAt := hook.await(b, first, base+1, 5*time.Minute)
			end := hook.await(b, last, base+rows, 10*time.Minute)
			b.StopTimer()
			inserting += committed.Sub(began)
			firstWait += firstAt.Sub(committed)
			total += end.Sub(committed)
		}
		cpu.report(b, b.N)
		b.ReportMetric(float64(rows*b.N)/total.Seconds(), "events/s")
		b.ReportMetric(float64(firstWait.Milliseconds())/float64(b.N), "first-ms")
		b.ReportMetric(inserting.Seconds()/float64(b.N), "insert-s")
		benchSettled(b, r, int64(rows*b.N)+20)
		// Between the inserts, the WAL is the store's: its rows, attempts and
		// outcomes (and what autovacuum does to them).
		events := float64(rows * b.N)
		b.ReportMetric(float64(r.walLSN()-walFrom-sourceWAL)/events, "store-WAL-B/event")
		b.ReportMetric(float64(benchStoreSize(b, r)-sizeFrom)/events, "store-B/event")
		benchStages(b, r)
	})
}

// benchStoreSize returns the bytes event_logs and invocation_logs take on
// disk, with their indexes and TOAST.
func benchStoreSize(b *testing.B, r *rig) int64 {
	b.Helper()
	var size int64
	err := r.connect(r.storeURL).QueryRow(context.Background(), `SELECT pg_total_relation_size($1::regclass) + pg_total_relation_size($2::regclass)`,
		pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize(), pgx.Identifier{r.storeSchema, "invocation_logs"}.Sanitize()).Scan(&size)
	if err != nil {
		b.Fatal(err)
	}
	return size
}

// BenchmarkLatency measures commit-to-delivery latency at 1,000 events a
// second: a paced writer starts a single-row INSERT every millisecond
// (on a pool of 4 connections, so a slow fsync does not hold the pace
// up), notes the time each COMMIT returned, and the receiver notes when
// each row's event arrived. It reports p50, p99 and the worst, in ms. Run
// it with a fixed count, e.g. -benchtime 5000x (5 seconds).
func BenchmarkLatency(b *testing.B) {
	const (
		interval = time.Millisecond
		conns    = 4
	)
	n := b.N
	committed := make([]time.Time, n+1) // by row id; each written by one writer
	arrived := make([]time.Time, n+1)   // by row id, under mu
	serverLate := make([]time.Duration, 0, n)
	var mu sync.Mutex
	hook := newBenchSink(b, func(body []byte, at time.Time) {
		var ev struct {
			Data struct {
				CommitTime time.Time `json:"commit_time"`
				Doc        struct {
					ID int64 `json:"id"`
				} `json:"doc"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			b.Errorf("receiver: %v", err)
			return
		}
		if id := ev.Data.Doc.ID; id > 0 && id <= int64(n) {
			mu.Lock()
			arrived[id] = at
			serverLate = append(serverLate, at.Sub(ev.Data.CommitTime))
			mu.Unlock()
		}
	})
	r := benchRig(b, hook)
	pool := benchConns(b, r, conns)
	ctx := context.Background()
	base := hook.n.Load()
	last := hook.mark(base + int64(n))
	ids := make(chan int64, n)
	var wg sync.WaitGroup
	var commitTook []time.Duration
	var ctMu sync.Mutex
	for _, conn := range pool {
		wg.Go(func() {
			var took []time.Duration
			for id := range ids {
				began := time.Now()
				if _, err := conn.Exec(ctx, insertOrder, id, "customer-"+strconv.FormatInt(id, 10), "12.34"); err != nil {
					b.Error(err)
					continue
				}
				committed[id] = time.Now()
				took = append(took, committed[id].Sub(began))
			}
			ctMu.Lock()
			commitTook = append(commitTook, took...)
			ctMu.Unlock()
		})
	}
	b.ResetTimer()
	start := time.Now()
	next := start
	for id := int64(1); id <= int64(n); id++ {
		ids <- id
		next = next.Add(interval)
		time.Sleep(time.Until(next))
	}
	close(ids)
	wg.Wait()
	paced := time.Since(start)
	hook.await(b, last, base+int64(n), 2*time.Minute)
	b.StopTimer()

	mu.Lock()
	late := make([]time.Duration, 0, n)
	for id := 1; id <= n; id++ {
		if committed[id].IsZero() || arrived[id].IsZero() {
			mu.Unlock()
			b.Fatalf("row %d: committed %v, arrived %v", id, committed[id], arrived[id])
		}
		late = append(late, arrived[id].Sub(committed[id]))
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(benchPercentile(late, 0.5)), "p50-ms")
	b.ReportMetric(ms(benchPercentile(late, 0.99)), "p99-ms")
	b.ReportMetric(ms(benchPercentile(late, 1)), "max-ms")
	b.Logf("%d rows paced in %s (%.0f/s); INSERT+COMMIT took p50 %.2f ms, p99 %.2f ms; from the server's commit_time: p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		n, paced.Round(time.Millisecond), float64(n)/paced.Seconds(),
		ms(benchPercentile(commitTook, 0.5)), ms(benchPercentile(commitTook, 0.99)),
		ms(benchPercentile(serverLate, 0.5)), ms(benchPercentile(serverLate, 0.99)), ms(benchPercentile(serverLate, 1)))
	mu.Unlock()
	if n >= 100 {
		benchSettled(b, r, int64(n)+20)
		benchStages(b, r)
	}
}

// benchPercentile returns the p-th quantile of ds (sorting it), nearest rank below.
func benchPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(p*float64(len(ds)-1))]
}

// benchCPU tells where the box's CPU went during a benchmark: this
// process (triggerd, the writers and the receiver) and the Postgres
// processes it started, by kind. It reads /proc and says nothing elsewhere.
type benchCPU struct {
	began time.Time
	start map[string]float64
}

func startBenchCPU() *benchCPU { return &benchCPU{began: time.Now(), start: benchCPUByKind()} }

// report logs each kind's CPU seconds per op and its share of the wall time.
func (m *benchCPU) report(b *testing.B, ops int) {
	if m == nil || m.start == nil {
		return
	}
	wall := time.Since(m.began).Seconds()
	end := benchCPUByKind()
	var parts []string
	for _, k := range []string{"go", "pg:walsender", "pg:source", "pg:store", "pg:other"} {
		d := end[k] - m.start[k]
		parts = append(parts, fmt.Sprintf("%s %.2fs (%.0f%%)", k, d/float64(ops), 100*d/wall))
	}
	b.Logf("CPU per op over %.1fs of wall time (%% of one core): %s", wall/float64(ops), strings.Join(parts, ", "))
}

// benchCPUByKind sums user+system CPU seconds of this process ("go") and of
// the Postgres servers it started and their backends: the walsenders, the
// backends of the source databases (triggerd_test_*), those of the store
// (database postgres), and the rest. Processes that exited are missed.
func benchCPUByKind() map[string]float64 {
	self := os.Getpid()
	type proc struct {
		ppid      int
		cpu       float64
		comm, cmd string
	}
	procs := make(map[int]proc)
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid … utime stime: fields 4, 14 and 15.
		i, j := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(string(stat[j+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		cmd, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		procs[pid] = proc{ppid: ppid, cpu: (ut + st) / 100, comm: string(stat[i+1 : j]), cmd: string(cmd)} // USER_HZ is 100 on Linux
	}
	out := map[string]float64{"go": procs[self].cpu}
	for _, p := range procs {
		parent, ok := procs[p.ppid]
		if !ok || p.comm != "postgres" {
			continue
		}
		if p.ppid != self && parent.ppid != self { // the postmaster, or one of its children
			continue
		}
		kind := "pg:other"
		switch {
		case strings.HasPrefix(p.cmd, "postgres: walsender"):
			kind = "pg:walsender"
		case strings.Contains(p.cmd, " triggerd_test_"):
			kind = "pg:source"
		case strings.Contains(p.cmd, " postgres ") && strings.Contains(p.cmd, "[local]"):
			kind = "pg:store"
		}
		out[kind] += p.cpu
	}
	return out
}
