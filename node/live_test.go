package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
)

// TestTriggersAreLiveAcrossNodes runs two nodes on one store and changes
// triggers while they run, as the admin API does (node.ApplyTrigger and
// node.DeleteTrigger): a trigger created by one node's code takes events
// queued on the other within a second; a changed URL takes effect at the
// next attempt; a deleted trigger's staged rows are cancelled; and a
// DB_INSERT trigger added for a table created after the nodes started
// delivers every insert committed after the trigger was applied.
func TestTriggersAreLiveAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCapture(t)
	failing := nodetest.NewCounter(t, func(_, _ string, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	ok := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {})
	base := fmt.Sprintf("      - {name: base, type: base, url: %q}\n", ok.URL)
	cfgA := nodetest.WriteProjectConfig(t, "node-a", c.storeURL, c.schema, c.databases(), base)
	cfgB := nodetest.WriteProjectConfig(t, "node-b", c.storeURL, c.schema, c.databases(), base)
	a := nodetest.Start(t, cfgA)
	b := nodetest.Start(t, cfgB)
	c.waitWalsender(30 * time.Second)
	st := nodetest.OpenStore(t, c.storeURL, c.schema)
	cfg, err := config.Load(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(body string) {
		t.Helper()
		if _, _, err := node.ApplyTrigger(ctx, cfg, st, "demo", []byte(body), "admin", nil); err != nil {
			t.Fatal(err)
		}
	}

	// Created: events queued on the other node get a row within a second.
	apply(fmt.Sprintf(`{name: live, type: work, url: %q, retries: 5, retry_backoff: {initial: 1s, max: 1s}}`, failing.URL))
	applied := time.Now()
	var first, delivery string // the event's id, and its row's (the CloudEvent id)
	waittest.For(t, 5*time.Second, func() error {
		id := b.Queue(t, `{"type": "work"}`)
		rows := eventRows(t, st, id)
		if len(rows) == 0 {
			return errors.New("node b has not taken the trigger yet")
		}
		first, delivery = id, rows[0].ID.String()
		return nil
	})
	if took := time.Since(applied); took > time.Second {
		t.Errorf("node b took %s to take the new trigger, want at most 1s", took.Round(time.Millisecond))
	}

	// Changed: the retry after the first failed attempt goes to the new URL.
	waittest.For(t, 10*time.Second, func() error {
		if failing.Count(delivery) == 0 {
			return errors.New("no first attempt yet")
		}
		return nil
	})
	apply(fmt.Sprintf(`{name: live, type: work, url: %q, retries: 5, retry_backoff: {initial: 1s, max: 1s}}`, ok.URL))
	waittest.For(t, 10*time.Second, func() error {
		rows := eventRows(t, st, first)
		if len(rows) != 1 || rows[0].Status != store.StatusProcessed {
			return fmt.Errorf("rows %+v, want one processed", rows)
		}
		return nil
	})
	if n := failing.Count(delivery); n != 1 || ok.Count(delivery) != 1 {
		t.Errorf("attempts at the old url %d, at the new %d; want 1 and 1", n, ok.Count(delivery))
	}

	// Deleted: a row staged for later is cancelled, and no node delivers it.
	later := a.Queue(t, `{"type": "work", "delay": 3}`)
	if n, err := node.DeleteTrigger(ctx, cfg, st, "demo", "live", "admin"); err != nil || n != 1 {
		t.Fatalf("delete cancelled %d rows (%v), want 1", n, err)
	}
	if rows := eventRows(t, st, later); len(rows) != 1 || rows[0].Status != store.StatusCancelled || rows[0].Remark != store.DeletedRemark {
		t.Fatalf("the deleted trigger's row: %+v", rows)
	}
	waittest.For(t, 5*time.Second, func() error {
		for _, n := range []*nodetest.Child{a, b} {
			id := n.Queue(t, `{"type": "work"}`)
			if rows := eventRows(t, st, id); len(rows) != 0 {
				return fmt.Errorf("node %s still stages rows of the deleted trigger", n.Addr)
			}
		}
		return nil
	})

	// A DB_INSERT trigger for a new table: every insert committed after
	// the trigger is applied is delivered, while a writer inserts all along.
	if _, err := c.db.Exec(ctx, `CREATE TABLE orders (id bigint PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	var after sync.Map // ids whose insert began once the trigger was applied
	var since atomic.Bool
	stop := make(chan struct{})
	var writer sync.WaitGroup
	var last atomic.Int64
	writer.Go(func() {
		for id := int64(1); ; id++ {
			select {
			case <-stop:
				return
			default:
			}
			mark := since.Load()
			if _, err := c.db.Exec(ctx, `INSERT INTO orders VALUES ($1)`, id); err != nil {
				t.Errorf("insert %d: %v", id, err)
				return
			}
			if mark {
				after.Store(id, true)
			}
			last.Store(id)
			time.Sleep(2 * time.Millisecond)
		}
	})
	time.Sleep(200 * time.Millisecond) // inserts before the trigger exists
	apply(fmt.Sprintf(`{name: orders, type: DB_INSERT, url: %q, options: {db: app, col: orders}}`, c.hook.URL))
	since.Store(true)
	time.Sleep(time.Second)
	close(stop)
	writer.Wait()
	var want []int64
	after.Range(func(k, _ any) bool {
		want = append(want, k.(int64))
		return true
	})
	if len(want) < 50 {
		t.Fatalf("only %d inserts after the trigger was applied", len(want))
	}
	waittest.For(t, 30*time.Second, func() error {
		got := c.hook.byDocCopy()
		missing := 0
		for _, id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of the %d inserts committed after the trigger was applied are not delivered (last id %d)", missing, len(want), last.Load())
		}
		return nil
	})
}

// eventRows returns the rows of the event with the id.
func eventRows(t *testing.T, st *store.Store, id string) []store.EventLog {
	t.Helper()
	batch, err := uuid.Parse(id)
	if err != nil {
		t.Fatalf("event id %q: %v", id, err)
	}
	recent, err := st.Recent(context.Background(), store.Filter{}, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.EventLog
	for _, r := range recent {
		if r.BatchID == batch {
			out = append(out, r)
		}
	}
	return out
}
