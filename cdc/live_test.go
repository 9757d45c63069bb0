package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/internal/waittest"
)

// TestPublishedTriggerTakesTheNextChange adds a DB_INSERT trigger for a
// table the publication lacks, the way the admin API does: the trigger is
// known to the store (here, to Refresh) and Publish runs. The insert
// committed right after Publish returns is delivered, with no SetTriggers
// from anyone: the session learns of the trigger at Publish's message.
func TestPublishedTriggerTakesTheNextChange(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY); CREATE TABLE items (id int PRIMARY KEY)`)
	cfg := r.config("node-1", `- {name: users, type: DB_INSERT, url: "{hook}/users", options: {col: users}}`, "")
	p := &cfg.Projects[0]
	var mu sync.Mutex
	stored := []*config.Trigger{&p.Triggers[0]} // what the store holds
	var n *node
	refresh := func(context.Context) error {
		mu.Lock()
		ts := slices.Clone(stored)
		mu.Unlock()
		if _, err := n.run.Dispatcher.Update(map[string][]*config.Trigger{"p": ts}); err != nil {
			return err
		}
		for _, s := range n.sources {
			s.SetTriggers(ts)
		}
		return nil
	}
	n = r.mustStart(cfg, cdc.Options{Refresh: refresh})
	r.waitStreaming()
	r.exec(`INSERT INTO users VALUES (1)`)
	r.hook.Wait(t, 1, 10*time.Second)

	items, err := config.ParseTrigger("trigger", []byte(`{name: items, type: DB_INSERT, url: "`+r.hook.URL+`/items", options: {col: items}}`), p)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	stored = append(stored, items)
	after := slices.Clone(stored)
	mu.Unlock()
	if err := cdc.Publish(context.Background(), p, "app", after, cdc.Options{StoreSchema: cfg.Store.Schema}); err != nil {
		t.Fatal(err)
	}
	r.exec(`INSERT INTO items VALUES (7)`)
	waittest.For(t, 15*time.Second, func() error {
		for _, rc := range r.hook.Receipts() {
			if rc.Path == "/items" {
				return nil
			}
		}
		return errors.New("the insert committed after Publish is not delivered")
	})
}

// TestSetTriggersRestartsTheSession gives a running source a trigger for
// a new table, as a SIGHUP does: the session restarts, publishes the
// table, and delivers its inserts from then on.
func TestSetTriggersRestartsTheSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY); CREATE TABLE items (id int PRIMARY KEY)`)
	cfg := r.config("node-1", `- {name: users, type: DB_INSERT, url: "{hook}/users", options: {col: users}}`, "")
	p := &cfg.Projects[0]
	n := r.mustStart(cfg, cdc.Options{})
	r.waitStreaming()
	items, err := config.ParseTrigger("trigger", []byte(`{name: items, type: DB_INSERT, url: "`+r.hook.URL+`/items", options: {col: items}}`), p)
	if err != nil {
		t.Fatal(err)
	}
	ts := []*config.Trigger{&p.Triggers[0], items}
	if _, err := n.run.Dispatcher.Update(map[string][]*config.Trigger{"p": ts}); err != nil {
		t.Fatal(err)
	}
	for _, s := range n.sources {
		s.SetTriggers(ts)
	}
	waittest.For(t, 15*time.Second, func() error {
		var published bool
		err := r.connect(r.src).QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
			WHERE pubname = $1 AND tablename = 'items')`, r.slot).Scan(&published)
		if err != nil || !published {
			return fmt.Errorf("items is not published (%v)", err)
		}
		return nil
	})
	r.waitStreaming()
	r.exec(`INSERT INTO items VALUES (7)`)
	rcs := r.hook.Wait(t, 1, 15*time.Second)
	if rcs[0].Path != "/items" {
		t.Fatalf("got %+v", rcs)
	}
}
