package node_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// The tests of this package run nodes as child processes, the test binary
// re-executed (see nodetest.Main): a crash test kills a real process.
func TestMain(m *testing.M) {
	nodetest.Main(m, func(args []string) {
		if err := serve(args); err != nil {
			fmt.Fprintln(os.Stderr, "node:", err)
			os.Exit(1)
		}
	})
}

// serve is a child's life: a node run from the config that args name
// (nodetest.ServeArgs), logging JSON to stderr, until SIGINT or SIGTERM.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "", "config file")
	format := fs.String("log-format", "json", "log format: json")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *format != "json" {
		return fmt.Errorf("--log-format %q: the tests read json", *format)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	n, err := node.New(cfg, node.Options{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil)), Version: "test"})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return n.Run(ctx)
}

// TestKillAndRestartLosesNothing crashes triggerd with SIGKILL while events
// are staged, in flight, scheduled and between retries, restarts it, and
// checks that every event is delivered and attempts made before the crash
// count against retries.
func TestKillAndRestartLosesNothing(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	slow := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) { time.Sleep(100 * time.Millisecond) })
	failing := nodetest.NewCounter(t, func(_ string, _ string, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf(`      - {name: slow, type: work, url: %q, concurrency: 4}
      - {name: failing, type: doomed, url: %q, retries: 2, retry_backoff: {initial: 400ms, max: 400ms}}
`, slow.URL, failing.URL))
	node := nodetest.Start(t, cfg)

	for i := range 100 {
		node.Queue(t, fmt.Sprintf(`{"type":"work","data":{"n":%d}}`, i))
	}
	for i := range 10 {
		node.Queue(t, fmt.Sprintf(`{"type":"work","data":{"later":%d},"delay":1.5}`, i))
	}
	node.Queue(t, `{"type":"doomed"}`)
	// Let the first failed attempt happen, and deliveries run on for a
	// moment (a time, not a condition: the test needs work left over), then
	// crash.
	waittest.For(t, 10*time.Second, func() error {
		if failing.Total() < 1 {
			return errors.New("no attempt of the failing trigger")
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	node.Kill(t)
	st := nodetest.OpenStore(t, url, schema)
	before, _ := st.Recent(context.Background(), store.Filter{Status: store.StatusProcessed}, 1000)
	if len(before) >= 110 {
		t.Fatalf("everything was delivered before the crash (%d rows); the test needs work left over", len(before))
	}
	t.Logf("%d of 111 rows processed before SIGKILL", len(before))

	nodetest.Start(t, cfg)
	rows := nodetest.WaitRows(t, st, 30*time.Second, 111, func(r store.EventLog) bool {
		return r.Status == store.StatusProcessed || r.Status == store.StatusFailed
	})
	for _, r := range rows {
		switch r.Trigger {
		case "slow":
			if r.Status != store.StatusProcessed || slow.Count(r.ID.String()) < 1 {
				t.Errorf("row %s: %s, delivered %d times", r.ID, r.Status, slow.Count(r.ID.String()))
			}
		case "failing":
			if r.Status != store.StatusFailed || r.Attempts != 3 || !strings.Contains(r.Remark, "503") {
				t.Errorf("failing row %+v: want failed after 3 attempts in all", r)
			}
			invs, _ := st.Invocations(context.Background(), r.ID)
			if len(invs) != 3 {
				t.Errorf("failing row has %d logged attempts, want 3", len(invs))
			}
		}
	}
	dup := 0
	for _, id := range slow.ByID() {
		if id > 1 {
			dup++
		}
	}
	t.Logf("%d rows delivered twice (attempts in flight at the crash)", dup)
	if dup > 4 {
		t.Errorf("%d rows delivered twice; only the 4 in flight at the crash may be", dup)
	}
}

// TestDeadNodesClaimsComeBack runs two nodes on one store, crashes the one
// holding rows mid-attempt, and checks that the other delivers them within
// about the lease plus the trigger's timeout (how long a claim lasts).
func TestDeadNodesClaimsComeBack(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	hook := nodetest.NewCounter(t, func(_ string, node string, _ http.ResponseWriter, r *http.Request) {
		if node == "node-a" {
			<-r.Context().Done() // node A's attempts hang until it dies
		}
	})
	// A claim lasts the lease (2s) plus the timeout (3s), which is longer
	// than node A lives once its attempts hang.
	trig := fmt.Sprintf("      - {name: t, type: work, url: %q, timeout: 3s}\n", hook.URL)
	a := nodetest.Start(t, nodetest.WriteConfig(t, "node-a", url, schema, trig))
	nodetest.Start(t, nodetest.WriteConfig(t, "node-b", url, schema, trig))
	for i := range 20 {
		a.Queue(t, fmt.Sprintf(`{"type":"work","data":%d}`, i))
	}
	// Node B may claim some rows first, so node A may never hang on 16:
	// after 10s, kill it with what it has.
	_ = waittest.Until(10*time.Second, func() error {
		if n := hook.Nodes()["node-a"]; n < 16 {
			return fmt.Errorf("node A has %d attempts hanging", n)
		}
		return nil
	})
	a.Kill(t)
	killed := time.Now()
	st := nodetest.OpenStore(t, url, schema)
	nodetest.WaitRows(t, st, 20*time.Second, 20, func(r store.EventLog) bool { return r.Status == store.StatusProcessed })
	took := time.Since(killed)
	t.Logf("node B delivered node A's rows %s after A died (lease 2s, timeout 3s)", took)
	if took > 5*time.Second+5*time.Second {
		t.Errorf("takeover took %s, want within the lease (2s) and the timeout (3s), plus a few seconds", took)
	}
	if n := hook.Nodes()["node-b"]; n < 20 {
		t.Errorf("node B made %d deliveries, want all 20", n)
	}
}
