package cdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// rig is a source database, a store and a receiver shared by a test's nodes.
type rig struct {
	t   testing.TB
	src string // the source database's URL
	// slot names the source's replication slot and publication: the
	// source database's name, since slot names are the whole cluster's and
	// tests that run in parallel must not share one.
	slot        string
	storeURL    string
	storeSchema string
	hook        *dispatchtest.Receiver
	conns       map[string]*pgx.Conn
	// poll is the dispatcher's Options.Poll: 200 ms unless a test sets it.
	poll time.Duration
}

// newRig creates a source database set up with setupSQL.
func newRig(t testing.TB, setupSQL string) *rig {
	r := &rig{t: t, src: pgtest.Database(t), hook: dispatchtest.NewReceiver(t), conns: make(map[string]*pgx.Conn)}
	u, err := url.Parse(r.src)
	if err != nil {
		t.Fatal(err)
	}
	r.slot = strings.TrimPrefix(u.Path, "/")
	r.storeURL, r.storeSchema = pgtest.Schema(t)
	if setupSQL != "" {
		r.exec(setupSQL)
	}
	return r
}

// connect returns the rig's connection to url, opened on first use (and
// again after the server restarted) and closed at cleanup; the test's
// goroutine alone uses it.
func (r *rig) connect(url string) *pgx.Conn {
	r.t.Helper()
	ctx := context.Background()
	if c := r.conns[url]; c != nil && c.Ping(ctx) == nil {
		return c
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close(ctx) })
	r.conns[url] = conn
	return conn
}

// exec runs SQL on the source database.
func (r *rig) exec(sql string, args ...any) {
	r.t.Helper()
	if _, err := r.connect(r.src).Exec(context.Background(), sql, args...); err != nil {
		r.t.Fatalf("%s: %v", sql, err)
	}
}

// config renders a config with one project "p" whose database "app" is the
// source, with the rig's slot; triggers are YAML list items, with {hook}
// standing for the receiver's URL.
func (r *rig) config(nodeID, triggers, dbExtra string) *config.Config {
	r.t.Helper()
	return dispatchtest.Config(r.t, nodeID, r.storeURL, r.storeSchema,
		fmt.Sprintf("    databases:\n      app: {url: %q, slot: %s%s}", r.src, r.slot, dbExtra), triggers, r.hook.URL)
}

// node is a running dispatcher with its sources; stop stops them.
type node struct {
	run     *dispatchtest.Node
	sources []*cdc.Source
	stop    func()
}

// start checks and runs a node; its error from Check, if any, is returned
// and no source runs.
func (r *rig) start(cfg *config.Config, opts cdc.Options) (*node, error) {
	poll := r.poll
	if poll == 0 {
		poll = 200 * time.Millisecond
	}
	run := dispatchtest.Start(r.t, cfg, dispatch.Options{Poll: poll})
	opts.StoreSchema = cfg.Store.Schema
	sources, err := cdc.Sources(cfg, run.Dispatcher, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	var all []dispatchtest.Source
	for _, s := range sources {
		all = append(all, s)
	}
	stop, err := run.RunSources(r.t, all...)
	if err != nil {
		return nil, err
	}
	return &node{run: run, sources: sources, stop: stop}, nil
}

// mustStart starts a node that must pass its checks.
func (r *rig) mustStart(cfg *config.Config, opts cdc.Options) *node {
	r.t.Helper()
	n, err := r.start(cfg, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// logged counts event_logs rows by id and returns the rows' payloads.
func (r *rig) logged(ctx context.Context) (map[string]json.RawMessage, int) {
	r.t.Helper()
	rows, err := r.connect(r.storeURL).Query(ctx, `SELECT id::text, payload::text FROM `+pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize())
	if err != nil {
		r.t.Fatal(err)
	}
	out := make(map[string]json.RawMessage)
	n := 0
	for rows.Next() {
		var id, payload string
		if err := rows.Scan(&id, &payload); err != nil {
			r.t.Fatal(err)
		}
		out[id] = json.RawMessage(payload)
		n++
	}
	if err := rows.Err(); err != nil {
		r.t.Fatal(err)
	}
	return out, n
}

// slotLSN returns the slot's confirmed_flush_lsn and restart_lsn as numbers.
func (r *rig) slotLSN() (confirmed, restart uint64) {
	r.t.Helper()
	err := r.connect(r.src).QueryRow(context.Background(), `SELECT coalesce(confirmed_flush_lsn - '0/0', 0)::bigint, coalesce(restart_lsn - '0/0', 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, r.slot).Scan(&confirmed, &restart)
	if err != nil {
		r.t.Fatal(err)
	}
	return confirmed, restart
}

// walLSN returns the server's current WAL position as a number.
func (r *rig) walLSN() uint64 {
	r.t.Helper()
	var lsn uint64
	if err := r.connect(r.src).QueryRow(context.Background(), `SELECT (pg_current_wal_lsn() - '0/0')::bigint`).Scan(&lsn); err != nil {
		r.t.Fatal(err)
	}
	return lsn
}

// commitEnd runs sql in a transaction of its own on the source database
// and returns the end of the transaction's commit record, read from the
// WAL with pg_walinspect: the position a node confirms once it has logged
// the transaction. (pg_walinspect reads only what is flushed: the
// transaction's commit waited for the flush, other sessions' may not.)
func (r *rig) commitEnd(sql string) uint64 {
	r.t.Helper()
	ctx := context.Background()
	conn := r.connect(r.src)
	r.exec(`CREATE EXTENSION IF NOT EXISTS pg_walinspect`)
	from := r.walLSN()
	var xid int64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&xid)
	})
	if err != nil {
		r.t.Fatalf("%s: %v", sql, err)
	}
	var end uint64
	err = conn.QueryRow(ctx, `SELECT (end_lsn - '0/0')::bigint FROM pg_get_wal_records_info('0/0'::pg_lsn + $1::numeric, pg_current_wal_flush_lsn())
		WHERE xid::text::bigint = $2 AND resource_manager = 'Transaction' AND record_type = 'COMMIT'`, from, xid).Scan(&end)
	if err != nil {
		r.t.Fatalf("find the commit of transaction %d in the WAL: %v", xid, err)
	}
	return end
}

// waitStreaming waits until a node streams the rig's slot.
func (r *rig) waitStreaming() {
	r.t.Helper()
	conn := r.connect(r.src)
	waittest.For(r.t, 15*time.Second, func() error {
		if streaming, err := cdc.Streaming(context.Background(), conn, r.slot); !streaming {
			return fmt.Errorf("slot %s is not streamed (%v)", r.slot, err)
		}
		return nil
	})
}

// count returns the number of event_logs rows.
func (r *rig) count(ctx context.Context) int {
	r.t.Helper()
	var n int
	if err := r.connect(r.storeURL).QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}
