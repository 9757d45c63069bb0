package filewatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/filewatch"
)

// BenchmarkBurst measures a burst of new files end to end: from the first
// file created to the webhook's 200 for the last of them, through a node
// watching a fresh directory (default settle, 250ms) with a FILE_CREATE
// trigger of concurrency 64 and the rig's receiver on loopback. Each op
// creates 10,000 files of 100 bytes, 1,250 in each of 8 folders (made,
// and their own events delivered, before the clock starts) from 8
// goroutines, one a folder, as fast as the kernel takes them.
//
// disk watches a directory under os.TempDir(), tmpfs one under /dev/shm:
// creating files there costs next to nothing, so the burst is as dense as
// it gets and the source's own costs show, including the kernel queue's
// overflows.
//
// events/s counts from the first create to the last path's first delivery;
// logged/s from the first create to the store transaction that logged the
// last event row (event_logs.created_at, the transaction's start, so a
// little early); write-ms is how long the writers took. missed is the files
// not delivered within 2 minutes and duplicates the deliveries beyond one
// a path (both must be 0); overflows counts the kernel queue overflows the
// source logged (each followed by a rescan, so not a failure).
//
// The op has a fixed size, so -benchtime 1x gives a whole figure:
//
//	go test -run '^$' -bench BenchmarkBurst -benchtime 1x -count 3 ./filewatch
func BenchmarkBurst(b *testing.B) {
	b.Run("disk", func(b *testing.B) { benchBurst(b, "") })
	b.Run("tmpfs", func(b *testing.B) {
		if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
			b.Skip("no /dev/shm")
		}
		benchBurst(b, "/dev/shm")
	})
}

// benchBurst runs BenchmarkBurst with the watched directory made in parent
// (os.TempDir() when empty).
func benchBurst(b *testing.B, parent string) {
	const (
		folders   = 8
		perFolder = 1250
		files     = folders * perFolder
		size      = 100
		within    = 2 * time.Minute
	)
	payload := []byte(strings.Repeat("x", size-1) + "\n")
	var total, logging, writing time.Duration
	var missed, dups, overflows int
	b.StopTimer()
	for range b.N {
		r := newRig(b)
		if parent != "" {
			dir, err := os.MkdirTemp(parent, "triggerd-bench-")
			r.must(err)
			b.Cleanup(func() { os.RemoveAll(dir) })
			r.dir = dir
		}
		for f := range folders {
			r.must(os.Mkdir(r.path(fmt.Sprintf("d%d", f)), 0o755))
		}
		n := r.start(r.config("bench", "", `- {name: created, type: FILE_CREATE, url: "{hook}", concurrency: 64}`), filewatch.Options{}, false)
		r.hook.Wait(b, folders, 15*time.Second) // the folders' events, which warm the connections up
		time.Sleep(300 * time.Millisecond)      // more than a settle time, for extras
		r.hook.Reset()
		syscall.Sync() // what earlier runs left to write back would slow the creates down

		b.StartTimer()
		first := time.Now()
		var wg sync.WaitGroup
		for f := range folders {
			wg.Go(func() {
				for i := range perFolder {
					if err := os.WriteFile(r.path(fmt.Sprintf("d%d/f%05d.dat", f, i)), payload, 0o644); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		wrote := time.Now()
		last := burstDelivered(r, files, within)
		b.StopTimer()

		time.Sleep(time.Second) // late duplicates
		n.stop()
		got := burstPaths(b, r.hook.Receipts())
		var lost []string
		for f := range folders {
			for i := range perFolder {
				if p := fmt.Sprintf("d%d/f%05d.dat", f, i); got[p] == 0 {
					lost = append(lost, p)
				}
			}
		}
		if len(lost) > 0 {
			b.Errorf("%d of %d files not delivered within %s, e.g. %q", len(lost), files, within, lost[:min(len(lost), 10)])
		}
		for _, c := range got {
			dups += c - 1
		}
		loggedFirst, logged := burstLogged(b, r, files, first)
		missed += len(lost)
		total += last.Sub(first)
		writing += wrote.Sub(first)
		logging += logged.Sub(first)
		logs := r.logs.String()
		overflows += strings.Count(logs, "overflowed")
		ms := func(t time.Time) time.Duration { return t.Sub(first).Round(time.Millisecond) }
		b.Logf("after the first create: writes done at %s, first logged at %s, last logged at %s, last delivered at %s; %d queue overflows, %d comparisons with the index",
			ms(wrote), ms(loggedFirst), ms(logged), ms(last),
			strings.Count(logs, "overflowed"), strings.Count(logs, "compared the directory with the index"))
	}
	b.ReportMetric(float64(files*b.N)/total.Seconds(), "events/s")
	b.ReportMetric(float64(files*b.N)/logging.Seconds(), "logged/s")
	b.ReportMetric(float64(writing.Milliseconds())/float64(b.N), "write-ms")
	b.ReportMetric(float64(missed), "missed")
	b.ReportMetric(float64(dups), "duplicates")
	b.ReportMetric(float64(overflows), "overflows")
}

// burstDelivered waits until want distinct paths have been delivered and
// returns the arrival of the last path's first delivery; after within, it
// returns the time it gave up.
func burstDelivered(r *rig, want int, within time.Duration) time.Time {
	deadline := time.Now().Add(within)
	for {
		if r.hook.Count() >= want || time.Now().After(deadline) {
			got := r.hook.Receipts()
			firsts := make(map[string]time.Time, len(got))
			var last time.Time
			for _, rc := range got {
				p := burstPath(r.t, rc)
				if _, ok := firsts[p]; !ok {
					firsts[p] = rc.At
					if rc.At.After(last) {
						last = rc.At
					}
				}
			}
			if len(firsts) >= want {
				return last
			}
			if time.Now().After(deadline) {
				return time.Now() // the clock ran until the timeout
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// burstPaths counts the deliveries by path.
func burstPaths(tb testing.TB, got []dispatchtest.Receipt) map[string]int {
	out := make(map[string]int, len(got))
	for _, rc := range got {
		out[burstPath(tb, rc)]++
	}
	return out
}

// burstPath is the path a delivery is about.
func burstPath(tb testing.TB, rc dispatchtest.Receipt) string {
	var d struct{ Path string }
	if err := json.Unmarshal(rc.Data, &d); err != nil {
		tb.Fatalf("delivery data %s: %v", rc.Data, err)
	}
	return d.Path
}

// burstLogged checks that event_logs has an event for each of the burst's
// files, logs when (after began) the store transactions that logged them
// began and how many each logged, and returns when the first and the last
// began.
func burstLogged(b *testing.B, r *rig, files int, began time.Time) (first, last time.Time) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.storeURL)
	r.must(err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT created_at, count(*) FROM `+pgx.Identifier{r.schema, "event_logs"}.Sanitize()+`
		WHERE payload->>'path' LIKE '%.dat' GROUP BY created_at ORDER BY created_at`)
	r.must(err)
	var writes []string
	n := 0
	for rows.Next() {
		var at time.Time
		var count int
		r.must(rows.Scan(&at, &count))
		if first.IsZero() {
			first = at
		}
		last = at
		n += count
		writes = append(writes, fmt.Sprintf("%d@%dms", count, at.Sub(began).Milliseconds()))
	}
	r.must(rows.Err())
	if n != files {
		b.Errorf("event_logs has %d events of the burst's files, want %d", n, files)
	}
	b.Logf("%d events logged in %d store transactions (rows@start): %s", n, len(writes), strings.Join(writes, " "))
	return first, last
}
