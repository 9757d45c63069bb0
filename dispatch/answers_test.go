package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
)

// TestAnyWebhookAnswerIsRecorded has webhooks answer bytes that Postgres
// text cannot hold (NUL, bytes that are not UTF-8), a "response" field
// with such bytes, and an answer larger than what is read: each attempt is
// recorded once, with the answer kept as text, and a synchronous caller is
// answered only once the outcome is recorded.
func TestAnyWebhookAnswerIsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	big := bytes.Repeat([]byte("ab\x00\xff"), 3<<20/4) // 3 MiB
	answers := map[string]struct {
		status int
		body   []byte
	}{
		"nul-200":       {200, []byte("\xff\xfe\x00\x01a\x00")},
		"nul-500":       {500, []byte("err\x00or")},
		"bad-response":  {200, []byte(`{"response": "a` + "\xff" + `b"}`)},
		"escaped-nul":   {200, []byte(`{"response": "x\u0000y"}`)},
		"big":           {200, big},
		"big-no-length": {200, big},
	}
	h := newHook(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		typ := r.Header.Get("X-Type")
		a := answers[typ]
		if typ == "big-no-length" {
			w.Header().Set("Transfer-Encoding", "chunked")
		} else {
			w.Header().Set("Content-Length", fmt.Sprint(len(a.body)))
		}
		w.WriteHeader(a.status)
		w.Write(a.body)
	})
	var triggers strings.Builder
	for typ := range answers {
		triggers.WriteString(trigger(typ, typ, h.URL, "retries: 0, headers: {X-Type: "+typ+"}"))
	}
	n := e.start("a", triggers.String(), dispatch.Options{})
	ctx := context.Background()

	// Synchronous: the caller hears of the attempt once it is recorded.
	res, err := n.d.Call(ctx, dispatch.Event{Project: "p", Type: "nul-200"})
	if err != nil || res.Response != nil {
		t.Fatalf("sync call to a webhook answering NUL bytes: %s %v", res.Response, err)
	}
	if rows := n.rows(t, res.ID); len(rows) != 1 || rows[0].Status != store.StatusProcessed || rows[0].Attempts != 1 {
		t.Fatalf("the sync caller was answered before its attempt was recorded: %+v", rows)
	}

	want := map[string]struct {
		status   store.Status
		response string // the row's "response"
		body     string // invocation_logs.response_body
		remark   string // a part of the row's remark
	}{
		"nul-200":      {store.StatusProcessed, "", `\xff\xfe\x00` + "\x01a" + `\x00`, ""},
		"nul-500":      {store.StatusFailed, "", `err\x00or`, `500 Internal Server Error: err\x00or`},
		"bad-response": {store.StatusProcessed, `"a` + "\uFFFD" + `b"`, `{"response": "a\xffb"}`, ""},
		"escaped-nul":  {store.StatusProcessed, `"x\u0000y"`, `{"response": "x\u0000y"}`, ""},
	}
	for typ, w := range want {
		id, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		row := n.waitStatus(t, id, w.status, 5*time.Second)[0]
		if row.Attempts != 1 || string(row.Response) != w.response || !strings.Contains(row.Remark, w.remark) {
			t.Errorf("%s: row attempts %d, response %q, remark %q; want 1, %q, containing %q",
				typ, row.Attempts, row.Response, row.Remark, w.response, w.remark)
		}
		invs, err := n.st.Invocations(ctx, row.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(invs) != 1 || invs[0].ResponseBody != w.body {
			t.Errorf("%s: invocations %+v, want one with response_body %q", typ, invs, w.body)
		}
	}

	// Answers larger than what is read: the first 64 KiB are kept, and the
	// note says how large the answer was (or that it was larger than what
	// was read, when it did not say).
	for typ, note := range map[string]string{
		"big":           "…[65536 of 3145728 bytes kept]",
		"big-no-length": "…[65536 of more than 1048576 bytes kept]",
	} {
		id, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		row := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)[0]
		invs, err := n.st.Invocations(ctx, row.ID)
		if err != nil {
			t.Fatal(err)
		}
		kept := strings.Repeat(`ab\x00\xff`, 64<<10/4)
		if len(invs) != 1 || invs[0].ResponseBody != kept+note {
			got := ""
			if len(invs) > 0 {
				got = invs[0].ResponseBody[max(0, len(invs[0].ResponseBody)-60):]
			}
			t.Errorf("%s: %d invocations, response_body ending %q, want it to end %q", typ, len(invs), got, note)
		}
	}
	if got := len(h.deliveries()); got != len(want)+3 {
		t.Errorf("the webhooks got %d deliveries, want %d: one each", got, len(want)+3)
	}
}

// TestRefusedOutcomeIsRecordedWithoutTheAnswer has the store refuse the
// outcome of an attempt for a reason that retrying cannot change (here a
// check constraint on the webhook's answer): the outcome is recorded
// without the answer rather than retried forever, and the row is neither
// left staged nor delivered again.
func TestRefusedOutcomeIsRecordedWithoutTheAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Fail") != "" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		w.Write([]byte(`{"response": "poison"}`))
	})
	n := e.start("a", trigger("ok", "ok", h.URL, "retries: 0")+
		trigger("fails", "fails", h.URL, "retries: 0, headers: {X-Fail: yes}"), dispatch.Options{})
	ctx := context.Background()
	if _, err := e.db().Exec(ctx, `ALTER TABLE invocation_logs
		ADD CONSTRAINT no_poison CHECK (response_body NOT LIKE '%poison%')`); err != nil {
		t.Fatal(err)
	}
	res, err := n.d.Call(ctx, dispatch.Event{Project: "p", Type: "ok"})
	if err != nil || res.Response != nil {
		t.Fatalf("sync call: response %s, err %v; want no response (it could not be recorded)", res.Response, err)
	}
	for typ, status := range map[string]store.Status{"ok": store.StatusProcessed, "fails": store.StatusFailed} {
		id, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		row := n.waitStatus(t, id, status, 5*time.Second)[0]
		invs, err := n.st.Invocations(ctx, row.ID)
		if err != nil {
			t.Fatal(err)
		}
		if row.Attempts != 1 || row.Response != nil || len(invs) != 1 || !strings.Contains(invs[0].ResponseBody, "not recorded") {
			t.Fatalf("%s: row %+v, invocations %+v; want 1 attempt, no response, the answer noted as not recorded", typ, row, invs)
		}
		if status == store.StatusFailed && (!strings.Contains(row.Remark, "500") || strings.Contains(row.Remark, "poison") ||
			!strings.Contains(invs[0].Error, "500") || strings.Contains(invs[0].Error, "poison")) {
			t.Errorf("%s: remark %q, error %q: want the status without the answer", typ, row.Remark, invs[0].Error)
		}
	}
	if got := len(h.deliveries()); got != 3 {
		t.Errorf("%d deliveries, want 3: one per event", got)
	}
}

// TestWebhookURLSecretsAreRedacted sends to a trigger url with a password
// and a token in its query, where nothing listens: the remark, the
// attempt's error and the log say what failed without either secret.
func TestWebhookURLSecretsAreRedacted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var logs dispatchtest.Buffer
	target := "http://user:pw-s3cret@" + addr + "/hook?token=q-s3cret&plain=1"
	n := e.start("a", trigger("t", "x", target, "retries: 0"),
		dispatch.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	id, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x"})
	if err != nil {
		t.Fatal(err)
	}
	row := n.waitStatus(t, id, store.StatusFailed, 5*time.Second)[0]
	invs, err := n.st.Invocations(ctx, row.ID)
	if err != nil || len(invs) != 1 {
		t.Fatalf("invocations %+v, %v", invs, err)
	}
	for what, text := range map[string]string{"remark": row.Remark, "error": invs[0].Error, "log": logs.String()} {
		if strings.Contains(text, "s3cret") {
			t.Errorf("the %s shows a secret of the url: %s", what, text)
		}
	}
	if !strings.Contains(row.Remark, "token=xxxxx") || !strings.Contains(row.Remark, addr+"/hook") {
		t.Errorf("remark %q does not say which url failed", row.Remark)
	}
}

// TestKeptRetriesAreNotClaimedTwice sends synchronous and async events to
// a webhook that always fails: a synchronous row retried in-process is
// never claimed meanwhile by a poll (this node's own included), so each
// attempt number is sent and recorded once, and each caller hears that
// the row failed rather than timing out.
func TestKeptRetriesAreNotClaimedTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var logs dispatchtest.Buffer
	h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	n := e.start("a", trigger("t", "x", h.URL, "retries: 3, retry_backoff: {initial: 100ms, max: 100ms}"),
		dispatch.Options{Poll: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := n.d.Call(cctx, dispatch.Event{Project: "p", Type: "x"})
			errs <- err
		})
		if _, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var failed *dispatch.FailedError
		if !errors.As(err, &failed) {
			t.Errorf("a synchronous caller got %v, want the row's failure", err)
		}
	}
	rows, err := n.st.Recent(ctx, store.Filter{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		r = n.waitStatus(t, r.BatchID, store.StatusFailed, 5*time.Second)[0]
		invs, err := n.st.Invocations(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		seen := make(map[int]bool)
		for _, in := range invs {
			if seen[in.Attempt] {
				t.Errorf("row %s (sync %v): attempt %d recorded twice", r.ID, r.Synchronous, in.Attempt)
			}
			seen[in.Attempt] = true
		}
		if r.Attempts != 4 || len(invs) != 4 {
			t.Errorf("row %s (sync %v): %d attempts, %d recorded; want 4", r.ID, r.Synchronous, r.Attempts, len(invs))
		}
	}
	if got := len(h.deliveries()); got != 24 {
		t.Errorf("%d deliveries, want 6 rows × 4 attempts", got)
	}
	if strings.Contains(logs.String(), "took this row over") || strings.Contains(logs.String(), "claimed again") {
		t.Errorf("one node claimed its own rows:\n%s", logs.String())
	}
}

// TestASlowCommitDoesNotDeliverTwice holds event_logs locked while events
// are queued, longer than a claim lasts: the rows commit already claimable,
// and another node (or the queueing node's own poll) may claim them. No
// row is delivered by a node that lost it: the node that queued them
// renews its lease before attempting, or gives the row up. So each attempt
// of a row is made once; a row is delivered again only as its next
// attempt, after a failure (on a loaded machine, the webhook's answer may
// come after the 500ms timeout).
func TestASlowCommitDoesNotDeliverTwice(t *testing.T) {
	e := newEnv(t)
	h := newHook(t, nil)
	// A claim lasts the lease plus the timeout: 2.9s here. An attempt
	// starts only with an eighth of a lease to spare (300ms), which a node
	// starved of CPU for longer between its check and its request, as on
	// a loaded CI machine, would overrun.
	trig := trigger("t", "x", h.URL, "timeout: 500ms")
	opts := dispatch.Options{Lease: 2400 * time.Millisecond, Poll: 50 * time.Millisecond}
	a := e.start("a", trig, opts)
	e.start("b", trig, opts)
	ctx := context.Background()
	lock, err := e.db().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE event_logs IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	const events = 200
	var queued sync.WaitGroup
	for i := range events {
		queued.Go(func() {
			if _, _, err := a.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x", Data: []byte(fmt.Sprint(i))}); err != nil {
				t.Error(err)
			}
		})
	}
	time.Sleep(4 * time.Second) // longer than a claim lasts
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	queued.Wait()
	_ = waittest.Until(10*time.Second, func() error { // the check below says what is missing
		if n := len(h.deliveries()); n < events {
			return fmt.Errorf("%d of %d deliveries", n, events)
		}
		var staged int
		if err := e.db().QueryRow(ctx, `SELECT count(*) FROM event_logs WHERE status = 'staged'`).Scan(&staged); err != nil || staged > 0 {
			return fmt.Errorf("%d rows staged (%v)", staged, err)
		}
		return nil
	})
	time.Sleep(time.Second) // for any delivery by a node that lost its row
	// Every attempt is logged, by the node that made it, even when its
	// outcome is refused because the node lost the row meanwhile: a
	// second delivery of an attempt shows as its number logged twice.
	delivered := make(map[string]int)
	for _, d := range h.deliveries() {
		delivered[d.event.ID]++
	}
	logged := make(map[string]int)
	twice := 0
	rows, err := e.db().Query(ctx, `SELECT event_id::text, count(*), count(*) - count(DISTINCT attempt) FROM invocation_logs GROUP BY event_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n, again int
		if err := rows.Scan(&id, &n, &again); err != nil {
			t.Fatal(err)
		}
		logged[id] = n
		twice += again
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	unlogged := 0
	for id, n := range delivered {
		unlogged += max(n-logged[id], 0)
	}
	if len(delivered) != events || twice > 0 || unlogged > 0 {
		t.Fatalf("%d deliveries of %d rows (%d events queued); %d attempts made by two nodes, %d deliveries not logged as attempts",
			len(h.deliveries()), len(delivered), events, twice, unlogged)
	}
}

// TestASlowRenewalIsRenewedAgain makes an event's row commit with its
// claim run out, and the renewal before its attempt take almost a whole
// claim: a trigger on event_logs sleeps in the first insert, and in the
// first update that keeps a row's claim. The renewal's lease counts from
// when it began, so the node renews again rather than attempt with too
// little left: the attempt arrives with its lease, by the database's
// clock, outlasting the trigger's timeout.
func TestASlowRenewalIsRenewedAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	db := e.db()
	ctx := context.Background()
	left := make(chan time.Duration, 10)
	var h *hook
	h = newHook(t, func(n int, _ http.ResponseWriter, _ *http.Request) {
		var secs float64
		id := h.deliveries()[n-1].event.ID
		if err := db.QueryRow(ctx, `SELECT extract(epoch FROM due_at - clock_timestamp()) FROM event_logs WHERE id = $1`, id).Scan(&secs); err != nil {
			t.Errorf("reading the lease of a delivered row: %v", err)
		}
		left <- time.Duration(secs * float64(time.Second))
	})
	// A claim lasts the lease plus the timeout: 2.9s. No poll claims the
	// row: the node claims it at insert.
	a := e.start("a", trigger("t", "x", h.URL, "timeout: 500ms"), dispatch.Options{Lease: 2400 * time.Millisecond, Poll: time.Minute})
	time.Sleep(time.Second) // for the lane's first poll, which holds its free places while it claims
	schema := pgx.Identifier{e.schema}.Sanitize()
	if _, err := db.Exec(ctx, fmt.Sprintf(`
CREATE TABLE %[1]s.slow_once (op text, ms int);
INSERT INTO %[1]s.slow_once VALUES ('INSERT', 3000), ('UPDATE', 2800);
CREATE FUNCTION %[1]s.slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE ms int;
BEGIN
	IF TG_OP = 'INSERT' OR (NEW.claimed_by IS NOT DISTINCT FROM OLD.claimed_by AND NEW.status = OLD.status AND NEW.attempts = OLD.attempts) THEN
		DELETE FROM %[1]s.slow_once s WHERE s.op = TG_OP RETURNING s.ms INTO ms;
		IF ms IS NOT NULL THEN
			PERFORM pg_sleep(ms / 1000.0);
		END IF;
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER slow_once BEFORE INSERT OR UPDATE ON %[1]s.event_logs FOR EACH ROW EXECUTE FUNCTION %[1]s.slow_once();`, schema)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-left:
		if d < 500*time.Millisecond {
			t.Errorf("the attempt arrived with %s of its lease left; want at least the trigger's timeout (500ms)", d.Round(time.Millisecond))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery within 15s")
	}
	var slept int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM slow_once`).Scan(&slept); err != nil || slept != 0 {
		t.Errorf("the slow insert or renewal did not happen (%d left, %v): the test tested nothing", slept, err)
	}
}

// TestRetriesWithinALeaseAreKept: an async row whose retry is due within a
// lease stays claimed by its node through the wait, so that each retry is
// written once, for its outcome, and never for a claim; and a row
// cancelled while it waits is not attempted again.
func TestRetriesWithinALeaseAreKept(t *testing.T) {
	t.Parallel()
	t.Run("no claim", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n < 3 {
				w.WriteHeader(http.StatusInternalServerError)
			}
		})
		n := e.start("a", trigger("t", "x", h.URL, "retries: 3, retry_backoff: {initial: 50ms}"), dispatch.Options{Poll: 20 * time.Millisecond})
		claims := claimLog(t, e)
		id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
		if err != nil {
			t.Fatal(err)
		}
		row := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)[0]
		if got := claims(1); row.Attempts != 3 || got != 0 {
			t.Errorf("%d attempts, and the row was claimed %d times after its first; want 3 attempts and no claim", row.Attempts, got)
		}
	})
	t.Run("cancelled meanwhile", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
		n := e.start("a", trigger("t", "x", h.URL, "retries: 3, retry_backoff: {initial: 500ms}"), dispatch.Options{})
		ctx := context.Background()
		id, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x"})
		if err != nil {
			t.Fatal(err)
		}
		h.next(t, 5*time.Second)
		row := n.waitFor(t, id, "attempted once", func(r store.EventLog) bool { return r.Attempts == 1 }, 5*time.Second)[0]
		if got, err := n.st.Cancel(ctx, store.EventQuery{ID: row.ID}, "cancelled by a test"); err != nil || got.Rows != 1 {
			t.Fatalf("cancel: %+v %v", got, err)
		}
		time.Sleep(1500 * time.Millisecond) // the retry was due after 400 to 600 ms
		if got := len(h.deliveries()); got != 1 {
			t.Errorf("%d deliveries, want 1: a row cancelled while it waited for its retry was attempted again", got)
		}
	})
}
