package node_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestAFrozenNodeDeliversNoRowTakenOver freezes one of three nodes with
// SIGSTOP, for twice the time its claims last, while they deliver a
// backlog, then lets it run on. The others take its rows over; once awake,
// it sends no attempt for a row that was taken over, so no row is delivered
// after it was processed, and only the attempts in flight at the freeze
// (at most concurrency) are delivered twice. It stays serial, as it times
// the freeze against how long a claim lasts.
func TestAFrozenNodeDeliversNoRowTakenOver(t *testing.T) {
	url, schema := pgtest.Schema(t)
	type arrival struct {
		node string
		at   time.Time
	}
	var mu sync.Mutex
	got := make(map[string][]arrival)
	hook := nodetest.NewCounter(t, func(id, node string, _ http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		got[id] = append(got[id], arrival{node, time.Now()})
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // a slow receiver, so that attempts are in flight at the freeze
	})
	// lease 2s (writeConfig) and timeout 1s: a claim lasts 3s.
	const concurrency, events = 16, 1500
	trig := fmt.Sprintf("      - {name: t, type: work, url: %q, concurrency: %d, timeout: 1s}\n", hook.URL, concurrency)
	var nodes []*nodetest.Child
	for _, id := range []string{"node-a", "node-b", "node-c"} {
		nodes = append(nodes, nodetest.Start(t, nodetest.WriteConfig(t, id, url, schema, trig)))
	}
	// Every event is staged due at once, so that each node claims a
	// lane's worth: attempts in flight, and rows waiting for a slot.
	st := nodetest.OpenStore(t, url, schema)
	now := time.Now()
	staged := make([]store.EventLog, events)
	for i := range staged {
		id := uuid.Must(uuid.NewV7())
		staged[i] = store.EventLog{ID: id, BatchID: id, Project: "demo", Trigger: "t", Type: "work",
			Payload: []byte(fmt.Sprint(i)), EventTime: now, FireAt: now, Status: store.StatusStaged, DueAt: now}
	}
	if err := st.Insert(context.Background(), staged); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, 20*time.Second, func() error {
		if n := hook.Nodes()["node-a"]; n < 2*concurrency {
			return fmt.Errorf("node A made %d deliveries", n)
		}
		return nil
	})
	frozen := nodes[0]
	stopped := time.Now()
	frozen.Signal(t, syscall.SIGSTOP)
	time.Sleep(6 * time.Second) // frozen for twice the time a claim lasts
	frozen.Signal(t, syscall.SIGCONT)
	thawed := time.Now()
	rows := nodetest.WaitRows(t, st, 60*time.Second, events, func(r store.EventLog) bool { return r.Status == store.StatusProcessed })
	time.Sleep(2 * time.Second) // time for a late attempt of the node that froze

	mu.Lock()
	defer mu.Unlock()
	var late, twice []string
	extra := 0
	for _, r := range rows {
		as := got[r.ID.String()]
		if len(as) == 0 {
			t.Errorf("row %s is processed but was never delivered", r.ID)
		}
		if len(as) <= 1 {
			continue
		}
		// Node A's log says which of its attempts was in flight at the
		// freeze: begun before it and ended after. A request of it may
		// go out only at the thaw (node A stopped between its start and
		// the write), and arrive after the row was processed elsewhere.
		// A row is also sent again as the retry of an attempt that
		// failed (on a loaded machine, one answered after the timeout).
		logged, err := st.Invocations(context.Background(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		var attempts []string
		failed, inFlight := 0, false
		for _, in := range logged {
			attempts = append(attempts, fmt.Sprintf("%d by %s %+.3fs for %s: %q", in.Attempt, in.NodeID,
				in.StartedAt.Sub(stopped).Seconds(), in.Duration.Round(time.Millisecond), in.Error))
			if in.Error != "" {
				failed++
			}
			if in.NodeID == "node-a" && in.StartedAt.Before(stopped) && in.StartedAt.Add(in.Duration).After(stopped) {
				inFlight = true
			}
		}
		extra += max(len(as)-1-failed, 0)
		after := 0
		for _, a := range as {
			// What of node A arrives before the thaw was in flight at the
			// freeze (under load, a request sent just before it may
			// arrive a few ms after); so is its first arrival after the
			// thaw, if its log has an attempt in flight.
			if a.node == "node-a" && a.at.After(stopped) && (!a.at.After(thawed) || inFlight) {
				inFlight = false
				continue
			}
			if a.at.After(r.UpdatedAt) {
				late = append(late, fmt.Sprintf("%s by %s %s after it was processed (attempts: %q)", r.ID, a.node, a.at.Sub(r.UpdatedAt).Round(time.Millisecond), attempts))
			}
			if a.at.After(stopped) {
				after++
			}
		}
		// A row in flight on node A at the freeze is delivered again by
		// the node that takes it over; no row is sent twice after, but
		// to retry a failed attempt.
		if after > 1+failed {
			var by []string
			for _, a := range as {
				by = append(by, fmt.Sprintf("%s %+.3fs", a.node, a.at.Sub(stopped).Seconds()))
			}
			twice = append(twice, fmt.Sprintf("%s by %v after the freeze began (attempts: %q)", r.ID, by, attempts))
		}
	}
	if len(late) > 0 {
		t.Errorf("%d deliveries of rows already processed, such as %v", len(late), late[:min(len(late), 5)])
	}
	if len(twice) > 0 {
		t.Errorf("%d rows sent twice after the freeze began, such as %v", len(twice), twice[:min(len(twice), 3)])
	}
	if extra > concurrency {
		t.Errorf("%d rows delivered more than once: more than the %d attempts node A can have had in flight", extra, concurrency)
	}
	t.Logf("%d events; %d delivered twice, not as a retry (in flight at the freeze); deliveries by node %v", events, extra, hook.Nodes())
}
