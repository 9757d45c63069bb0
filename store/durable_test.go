package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/localpg"
)

// TestInsertOnceIsDurableAfterDurable runs on a cluster of its own whose
// WAL writer waits 2 s between flushes, so that nothing else flushes the
// log soon: InsertOnce returns with its commit not yet on disk (the
// source replays it after a crash), and Durable returns once it is.
func TestInsertOnceIsDurableAfterDurable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := localpg.Start(ctx, localpg.Options{Settings: map[string]string{
		"wal_writer_delay": "2s", "autovacuum": "off", "checkpoint_timeout": "1h",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st, err := store.Open(ctx, store.Options{URL: c.URL("postgres"), Schema: "triggerd"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	// logged returns how far the log is written and how far it is flushed.
	logged := func() (written, flushed uint64) {
		t.Helper()
		err := conn.QueryRow(ctx, `SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint, (pg_current_wal_flush_lsn() - '0/0')::bigint`).Scan(&written, &flushed)
		if err != nil {
			t.Fatal(err)
		}
		return written, flushed
	}
	// A flush may happen to follow a commit: try a few.
	var written, flushed uint64
	for range 5 {
		if _, err := st.InsertOnce(ctx, []store.EventLog{staged(time.Now(), "")}); err != nil {
			t.Fatal(err)
		}
		if written, flushed = logged(); flushed < written {
			break
		}
	}
	if flushed >= written {
		t.Fatalf("each of 5 InsertOnce calls returned with the log flushed (to %X of %X): it waited for the flush", flushed, written)
	}
	if err := st.Durable(ctx); err != nil {
		t.Fatal(err)
	}
	if _, after := logged(); after < written {
		t.Errorf("after Durable the log is flushed to %X, short of %X, which the InsertOnce reached", after, written)
	}
}
