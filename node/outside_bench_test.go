package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// BenchmarkQueueFromOutside measures custom events as a client sees them:
// a real node process (the test binary re-executed, see TestMain) and, in
// this process, a load generator with 32 keep-alive connections posting
// to its queue endpoint, each post answered once its row is committed. In
// "stored" the events are scheduled an hour ahead, so intake runs alone;
// in "delivered" they are due at once, and the node also delivers each to
// a receiver in this process that answers at once. It reports events/s
// stored (first post to last answer) and, for "delivered", delivered/s
// (first post to last delivery). It also reports the CPU each event cost:
// the node process's own (node-µs/event) and the whole machine's, the
// node, Postgres and the load generator together (cpu-µs/event), both
// read from /proc, which vary far less from run to run than the rates.
//
// The store is a private cluster reached over its Unix socket, unless
// TRIGGERD_BENCH_STORE names another (a URL, such as one over TCP); a
// schema is then made for each run, and dropped after it:
//
//	TRIGGERD_BENCH_STORE=postgres://postgres@127.0.0.1:55433/tdstore \
//	  go test -run '^$' -bench BenchmarkQueueFromOutside -benchtime 100000x -count 3 ./node
func BenchmarkQueueFromOutside(b *testing.B) {
	for _, c := range []struct {
		name, body string
		deliver    bool
	}{
		{"stored", `{"type":"bench","data":{"to":"user1@email.com","subject":"hello"},"delay":3600}`, false},
		{"delivered", `{"type":"bench","data":{"to":"user1@email.com","subject":"hello"}}`, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var received atomic.Int64
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				received.Add(1)
			}))
			b.Cleanup(recv.Close)
			node := nodetest.Start(b, outsideConfig(b, recv.URL))
			url := "http://" + node.Addr + "/v1/api/demo/event-triggers/queue"
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 32
			hc := &http.Client{Transport: tr, Timeout: time.Minute}
			body := []byte(c.body)
			post := func() error {
				resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			for range 64 { // warm connections and statement caches
				if err := post(); err != nil {
					b.Fatal(err)
				}
			}
			warm := int64(0) // deliveries before the timer starts
			if c.deliver {
				warm = 64
			}

			var next atomic.Int64
			var failed sync.Once
			var wg sync.WaitGroup
			b.ResetTimer()
			cpu := startCPU(b, node.Cmd.Process.Pid)
			start := time.Now()
			for range 32 {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := post(); err != nil {
							failed.Do(func() { b.Error(err) })
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			if !c.deliver {
				cpu.report(b)
				return
			}
			deadline := time.Now().Add(5 * time.Minute)
			for received.Load() < warm+int64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d events delivered after 5 minutes", received.Load()-warm, b.N)
				}
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "delivered/s")
			cpu.report(b)
		})
	}
}

// outsideConfig writes the config of BenchmarkQueueFromOutside's node: a
// "bench" type delivered to hook with concurrency 64, any client allowed.
func outsideConfig(b *testing.B, hook string) string {
	url := os.Getenv("TRIGGERD_BENCH_STORE")
	schema := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	if url == "" {
		url, schema = pgtest.Schema(b)
	} else {
		b.Cleanup(func() {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				b.Errorf("drop schema %s: %v", schema, err)
				return
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
				b.Errorf("drop schema %s: %v", schema, err)
			}
		})
	}
	text := fmt.Sprintf(`listen: 127.0.0.1:0
node_id: bench
store: {url: %q, schema: %s, max_conns: 32}
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: %s}]
    rules: {default: allow}
    triggers:
      - {name: bench, type: bench, url: %q, concurrency: 64}
`, url, schema, nodetest.Secret, hook)
	path := filepath.Join(b.TempDir(), "bench.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// cpuSince is the CPU time a benchmark's node process and its whole
// machine had used when its timer started.
type cpuSince struct {
	pid           int
	node, machine time.Duration
}

func startCPU(b *testing.B, pid int) cpuSince {
	b.Helper()
	return cpuSince{pid: pid, node: nodeCPU(b, pid), machine: machineCPU(b)}
}

// report adds node-µs/event and cpu-µs/event to b's results.
func (c cpuSince) report(b *testing.B) {
	b.Helper()
	perEvent := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(perEvent(nodeCPU(b, c.pid)-c.node), "node-µs/event")
	b.ReportMetric(perEvent(machineCPU(b)-c.machine), "cpu-µs/event")
}

// nodeCPU is the user and system time the process pid has used (see
// rssCPU, which reads it).
func nodeCPU(b *testing.B, pid int) time.Duration {
	return time.Duration(rssCPU(b, pid) * float64(time.Second))
}

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// machineCPU is the time every CPU of the machine has spent busy (not
// idle or waiting for I/O), from the first line of /proc/stat.
func machineCPU(b *testing.B) time.Duration {
	b.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatalf("read the machine's CPU time: %v", err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	var busy time.Duration
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i == 8 { // guest time is already in user
			break
		}
		busy += ticks(b, v)
	}
	return busy
}

func ticks(b *testing.B, s string) time.Duration {
	b.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.Fatalf("read a CPU time %q: %v", s, err)
	}
	return time.Duration(n) * clockTick
}
