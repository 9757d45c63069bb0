package cdc_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/internal/waittest"
)

// TestFreshChangesAreLoggedWithTheirOutcome commits changes while a node
// streams: each row is delivered first and logged once, with the outcome
// of its attempt, rather than inserted and then updated.
func TestFreshChangesAreLoggedWithTheirOutcome(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}`, ""), cdc.Options{})
	r.waitStreaming()
	const n = 200
	for i := range n {
		r.exec(`INSERT INTO items VALUES ($1, 'fresh')`, i)
	}
	r.hook.Wait(t, n, 20*time.Second)
	ctx := context.Background()
	st := r.connect(r.storeURL)
	logs := pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()
	attempts := pgx.Identifier{r.storeSchema, "invocation_logs"}.Sanitize()
	// A row that was inserted and then updated has an updated_at of the
	// update's transaction, later than its created_at.
	var rows, done, updated, invocations int
	waittest.For(t, 10*time.Second, func() error {
		err := st.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'processed' AND attempts = 1),
			count(*) FILTER (WHERE updated_at <> created_at), (SELECT count(*) FROM `+attempts+`) FROM `+logs).
			Scan(&rows, &done, &updated, &invocations)
		if err != nil {
			return err
		}
		if done < n || invocations < n {
			return fmt.Errorf("%d rows processed, %d attempts logged, want %d", done, invocations, n)
		}
		return nil
	})
	if rows != n || updated != 0 || invocations != n {
		t.Errorf("event_logs has %d rows (%d written twice) and %d attempts; want %d rows, each written once, and %d attempts",
			rows, updated, invocations, n, n)
	}
}

// TestSlotWaitsForTheFirstOutcome holds a row's first attempt: the row is
// delivered before it is logged, and the slot is not confirmed past its
// transaction until the attempt's outcome is logged with the row.
func TestSlotWaitsForTheFirstOutcome(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	var got atomic.Int32
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		got.Add(1)
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { closeOnce(release) })
	r.mustStart(r.config("n1", fmt.Sprintf(`- {name: ins, type: DB_INSERT, url: %q, options: {col: items}, timeout: 30000}`, hook.URL), ""),
		cdc.Options{Status: 50 * time.Millisecond})
	r.waitStreaming()
	end := r.commitEnd(`INSERT INTO items VALUES (1, 'held')`)
	waittest.For(t, 10*time.Second, func() error {
		if got.Load() == 0 {
			return fmt.Errorf("the webhook has not been called")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // ten status updates
	if n := r.count(context.Background()); n != 0 {
		t.Errorf("event_logs has %d rows while the row's first attempt is in flight; want none: it is logged with its outcome", n)
	}
	if confirmed, _ := r.slotLSN(); confirmed >= end {
		t.Fatalf("the slot was confirmed to %X, past the end %X of a transaction whose row is not logged", confirmed, end)
	}
	closeOnce(release)
	waittest.For(t, 10*time.Second, func() error {
		if n := r.count(context.Background()); n != 1 {
			return fmt.Errorf("%d rows logged, want 1", n)
		}
		if confirmed, _ := r.slotLSN(); confirmed < end {
			return fmt.Errorf("the slot is confirmed to %X, before the end %X of the logged transaction", confirmed, end)
		}
		return nil
	})
	if n := got.Load(); n != 1 {
		t.Errorf("the webhook was called %d times, want once", n)
	}
}

// closeOnce closes ch unless it is closed.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}
