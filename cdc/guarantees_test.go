package cdc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store/localpg"
	"github.com/triggerd/triggerd/store/pgtest"
)

// docIDs counts the event_logs rows and the deliveries of each row id, as
// found in the events' doc.id.
func docIDs(t *testing.T, payloads []json.RawMessage) map[int64]int {
	t.Helper()
	out := make(map[int64]int)
	for _, p := range payloads {
		var d struct{ Doc struct{ ID int64 } }
		if err := json.Unmarshal(p, &d); err != nil {
			t.Fatal(err)
		}
		out[d.Doc.ID]++
	}
	return out
}

// checkOnce fails unless every committed id was logged exactly once and
// delivered at least once.
func checkOnce(t *testing.T, r *rig, committed map[int64]bool, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	_ = waittest.Until(within, func() error { // the checks below report what is missing
		// Deliveries first: counting event_logs is the costly part.
		if delivered := r.hook.Count(); delivered < len(committed) {
			return fmt.Errorf("%d of %d delivered", delivered, len(committed))
		}
		if logged := r.count(ctx); logged < len(committed) {
			return fmt.Errorf("%d of %d logged", logged, len(committed))
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // let doubles, if any, arrive
	logged, rows := r.logged(ctx)
	if rows != len(logged) {
		t.Fatalf("event_logs has %d rows but %d ids", rows, len(logged))
	}
	var payloads, delivered []json.RawMessage
	for _, p := range logged {
		payloads = append(payloads, p)
	}
	for _, g := range r.hook.Receipts() {
		delivered = append(delivered, g.Data)
	}
	inLog, inHook := docIDs(t, payloads), docIDs(t, delivered)
	missing, twice, extra, undelivered := 0, 0, 0, 0
	for id := range committed {
		switch {
		case inLog[id] == 0:
			missing++
		case inLog[id] > 1:
			twice++
		}
		if inHook[id] == 0 {
			undelivered++
		}
	}
	for id := range inLog {
		if !committed[id] {
			extra++
		}
	}
	if missing+twice+extra+undelivered > 0 {
		t.Fatalf("of %d committed changes: %d not logged, %d logged twice, %d not delivered; %d logged that never committed",
			len(committed), missing, twice, undelivered, extra)
	}
}

// TestLargeTransaction logs and delivers a transaction that Postgres
// spills to disk and triggerd logs in many batches: 20,000 rows, with the
// database's logical_decoding_work_mem at its least (64kB), so that the
// reorder buffer spills after a few hundred rows. It stays serial, so that
// the package's other tests do not slow it past its deadline.
func TestLargeTransaction(t *testing.T) {
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	r.exec(`ALTER DATABASE ` + pgx.Identifier{r.slot}.Sanitize() + ` SET logical_decoding_work_mem = '64kB'`)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", concurrency: 64, options: {col: items}}`, ""), cdc.Options{})
	r.waitStreaming()
	const n = 20000
	r.exec(fmt.Sprintf(`INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, %d) g`, n))
	committed := make(map[int64]bool, n)
	for i := int64(1); i <= n; i++ {
		committed[i] = true
	}
	checkOnce(t, r, committed, 3*time.Minute)
	waittest.For(t, 10*time.Second, func() error {
		var spilled int64
		err := r.connect(r.src).QueryRow(context.Background(),
			`SELECT coalesce(sum(spill_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = $1`, r.slot).Scan(&spilled)
		if err == nil && spilled == 0 {
			err = errors.New("the server spilled no transaction to disk")
		}
		return err
	})
}

// writer commits rows of items from several goroutines until stopped,
// and remembers which committed. Failed commits (the server restarting)
// are retried with new ids.
type writer struct {
	mu        sync.Mutex
	committed map[int64]bool
	next      atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
}

func startWriter(t *testing.T, dbURL string, goroutines, rowsPerTxn int) *writer {
	w := &writer{committed: make(map[int64]bool), stop: make(chan struct{})}
	for range goroutines {
		w.wg.Go(func() {
			ctx := context.Background()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(ctx)
				}
			}()
			for {
				select {
				case <-w.stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				if conn == nil || conn.IsClosed() {
					c, err := pgx.Connect(ctx, dbURL)
					if err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					conn = c
				}
				first := w.next.Add(int64(rowsPerTxn)) - int64(rowsPerTxn) + 1
				_, err := conn.Exec(ctx, `INSERT INTO items SELECT g, 'w' FROM generate_series($1::bigint, $2::bigint) g`, first, first+int64(rowsPerTxn)-1)
				if err != nil {
					conn.Close(ctx)
					conn = nil
					continue // in doubt only if the commit's answer was lost: see below
				}
				w.mu.Lock()
				for id := first; id < first+int64(rowsPerTxn); id++ {
					w.committed[id] = true
				}
				w.mu.Unlock()
			}
		})
	}
	return w
}

// finish stops the writer and returns what committed, adding rows whose
// commit answer was lost but which are in the table.
func (w *writer) finish(t *testing.T, r *rig) map[int64]bool {
	close(w.stop)
	w.wg.Wait()
	ctx := context.Background()
	conn := r.connect(r.src)
	rows, _ := conn.Query(ctx, `SELECT id FROM items`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int64]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	for id := range w.committed {
		if !out[id] {
			t.Fatalf("row %d committed but is not in the table", id)
		}
	}
	return out
}

// TestServerRestartMidStream restarts the cluster, so it stays serial.
func TestServerRestartMidStream(t *testing.T) {
	cluster := pgtest.Cluster(t)
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}`, ""), cdc.Options{})
	r.waitStreaming()
	w := startWriter(t, r.src, 3, 5)
	r.hook.Wait(t, 200, 20*time.Second)
	if err := cluster.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.hook.Wait(t, len(r.hook.Receipts())+200, 30*time.Second) // flowing again
	checkOnce(t, r, w.finish(t, r), time.Minute)
}

func TestStandbyNodeTakesOver(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	triggers := `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}`
	n1 := r.mustStart(r.config("n1", triggers, ""), cdc.Options{})
	r.waitStreaming()
	r.mustStart(r.config("n2", triggers, ""), cdc.Options{LockRetry: 100 * time.Millisecond})
	w := startWriter(t, r.src, 2, 3)
	r.hook.Wait(t, 100, 20*time.Second)
	stopped := time.Now()
	n1.stop()
	before := len(r.hook.Receipts())
	r.hook.Wait(t, before+30, 20*time.Second)
	t.Logf("the standby delivered new changes %s after the streaming node stopped", time.Since(stopped).Round(time.Millisecond))
	if took := time.Since(stopped); took > 5*time.Second {
		t.Errorf("takeover took %s", took)
	}
	checkOnce(t, r, w.finish(t, r), time.Minute)
}

// TestDeadEndpointDoesNotHoldTheSlot, like TestQuietDatabaseKeepsTheSlotMoving,
// waits for the slot's restart_lsn, which a transaction open in any
// database of the cluster holds back: both stay serial.
func TestDeadEndpointDoesNotHoldTheSlot(t *testing.T) {
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	r.hook.SetStatus(http.StatusServiceUnavailable)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}`, ""), cdc.Options{Status: 100 * time.Millisecond})
	r.waitStreaming()
	r.exec(`INSERT INTO items VALUES (1, 'x')`)
	after := r.walLSN()
	r.hook.Wait(t, 1, 10*time.Second) // attempted, and refused
	r.exec(`CHECKPOINT`)
	waitSlot(t, r, after, 10*time.Second)
}

func TestQuietDatabaseKeepsTheSlotMoving(t *testing.T) {
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY); CREATE TABLE noise (n int)`)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}`, ", heartbeat: 200ms"),
		cdc.Options{Status: 100 * time.Millisecond})
	r.waitStreaming()
	other := newRig(t, `CREATE TABLE noise (n int)`)
	// Busy tables outside the publication, in this database and another:
	// the WAL the slot keeps (from its restart_lsn) must not grow with them.
	for _, db := range []*rig{r, other} {
		db.exec(`INSERT INTO noise SELECT g FROM generate_series(1, 50000) g`)
		after := r.walLSN()
		r.exec(`CHECKPOINT`) // logs the running transactions, from which decoding may restart
		waitSlot(t, r, after, 10*time.Second)
	}
	if n := len(r.hook.Receipts()); n != 0 {
		t.Errorf("%d events from a table no trigger names", n)
	}

	// The heartbeat writes a logical message to the source every period,
	// so that even a server with no other writes has positions to confirm.
	ctx := context.Background()
	conn := r.connect(r.src)
	probe := r.slot + "_probe" // a temporary slot, named apart from other tests'
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)`, probe); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	var beats int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true')
		WHERE position('triggerd.heartbeat'::bytea IN data) > 0`, probe, r.slot).Scan(&beats)
	if err != nil {
		t.Fatal(err)
	}
	if beats < 2 {
		t.Errorf("%d heartbeats in a second, with heartbeat: 200ms", beats)
	}
}

// waitSlot waits until the slot's confirmed position, and the position
// from which it keeps WAL, pass lsn.
func waitSlot(t *testing.T, r *rig, lsn uint64, within time.Duration) {
	t.Helper()
	waittest.For(t, within, func() error {
		if confirmed, restart := r.slotLSN(); confirmed < lsn || restart < lsn {
			return fmt.Errorf("the slot is confirmed to %X and keeps WAL from %X, behind %X", confirmed, restart, lsn)
		}
		return nil
	})
}

func TestStoreTablesAreNeverCaptured(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY)`)
	r.storeURL, r.storeSchema = r.src, "triggerd" // one database for both
	r.mustStart(r.config("n1", `
- {name: any-insert, type: DB_INSERT, url: "{hook}"}
- {name: any-update, type: DB_UPDATE, url: "{hook}"}`, ""), cdc.Options{})
	r.waitStreaming()
	for i := range 20 {
		r.exec(`INSERT INTO users VALUES ($1)`, i)
	}
	r.hook.Wait(t, 20, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the deliveries wrote event_logs and invocation_logs
	for _, g := range r.hook.Receipts() {
		if d := data(t, g.Data); d["col"] != "users" {
			t.Errorf("captured the store's table %v.%v", d["schema"], d["col"])
		}
	}
	if n := len(r.hook.Receipts()); n != 20 {
		t.Errorf("%d deliveries, want 20", n)
	}
}

func TestPublicationFollowsTheConfig(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY); CREATE TABLE orders (id int PRIMARY KEY); CREATE SCHEMA audit; CREATE TABLE audit.log (id int PRIMARY KEY)`)
	published := func() string {
		ctx := context.Background()
		conn := r.connect(r.src)
		var s string
		if err := conn.QueryRow(ctx, `SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) FROM pg_publication_tables WHERE pubname = $1`, r.slot).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	n := r.mustStart(r.config("n1", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: users}}`, ""), cdc.Options{})
	r.waitStreaming()
	n.stop()
	if got := published(); got != "public.users" {
		t.Errorf("published %q", got)
	}
	r.mustStart(r.config("n1", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: "orders, audit.log"}}`, ""), cdc.Options{})
	r.waitStreaming()
	if got := published(); got != "audit.log,public.orders" {
		t.Errorf("after the config changed, published %q", got)
	}
	r.exec(`INSERT INTO users VALUES (1); INSERT INTO audit.log VALUES (2)`)
	r.hook.Wait(t, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // a delivery from users, if any, would arrive
	if got := r.hook.Receipts(); len(got) != 1 || data(t, got[0].Data)["col"] != "log" {
		t.Errorf("deliveries %v", got)
	}
}

func TestStartupErrorsNameTheFix(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY, name text);
		CREATE TABLE keyless (v text);
		CREATE VIEW named_users AS SELECT * FROM users;
		DO $$ BEGIN CREATE ROLE plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	cases := []struct{ name, triggers, extra, want string }{
		{"missing table", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: userz}}`, "",
			"trigger t: table userz does not exist: create it, or fix options.col"},
		{"view", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: named_users}}`, "",
			"trigger t: named_users is not a table (relkind v): name a table in options.col"},
		{"missing column", `- {name: t, type: DB_UPDATE, url: "{hook}", options: {col: users, columns: nme}}`, "",
			`table public.users has no column "nme" (it has id, name): fix options.columns`},
		{"filter without full", `- {name: t, type: DB_UPDATE, url: "{hook}", options: {col: users, columns: name}}`, "",
			"run ALTER TABLE public.users REPLICA IDENTITY FULL"},
		{"keyless updates", `- {name: t, type: DB_DELETE, url: "{hook}", options: {col: keyless}}`, "",
			"table public.keyless has no primary key or replica identity"},
		{"store table", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: triggerd.event_logs}}`, "",
			"trigger t: triggerd.event_logs is triggerd's own table, which is never captured: remove it from options.col"},
		{"unreachable", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: users}}`, "",
			"database app of project p: connect:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := r.config("n1", c.triggers, c.extra)
			if c.name == "store table" { // the store in the source database
				cfg.Store.URL, cfg.Store.Schema = r.src, "triggerd"
			}
			if c.name == "unreachable" {
				db := cfg.Projects[0].Databases["app"]
				db.URL = "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"
				cfg.Projects[0].Databases["app"] = db
			}
			_, err := r.start(cfg, cdc.Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
	t.Run("wal_level", func(t *testing.T) {
		pgtest.Cluster(t) // a throwaway server is at hand: start another
		replica, err := localpg.Start(context.Background(), localpg.Options{Settings: map[string]string{"wal_level": "replica"}})
		if err != nil {
			t.Fatal(err)
		}
		defer replica.Close()
		cfg := r.config("n1", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: users}}`, "")
		db := cfg.Projects[0].Databases["app"]
		db.URL = replica.URL("postgres")
		cfg.Projects[0].Databases["app"] = db
		_, err = r.start(cfg, cdc.Options{})
		if err == nil || !strings.Contains(err.Error(), "the server's wal_level is replica, and change capture needs logical: set wal_level = logical") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no replication", func(t *testing.T) {
		cfg := r.config("n1", `- {name: t, type: DB_INSERT, url: "{hook}", options: {col: users}}`, "")
		db := cfg.Projects[0].Databases["app"]
		db.URL = strings.Replace(db.URL, "postgres@", "plain@", 1)
		cfg.Projects[0].Databases["app"] = db
		_, err := r.start(cfg, cdc.Options{})
		if err == nil || !strings.Contains(err.Error(), "role plain lacks the REPLICATION attribute that change capture needs: run ALTER ROLE plain REPLICATION") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestNothingIsConfirmedBeforeItIsLogged(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}`, ""), cdc.Options{Status: 50 * time.Millisecond})
	r.waitStreaming()
	r.exec(`INSERT INTO items VALUES (1, 'logged')`)
	r.hook.Wait(t, 1, 10*time.Second)

	// The store refuses new events for a while.
	ctx := context.Background()
	store := r.connect(r.storeURL)
	logs := pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()
	if _, err := store.Exec(ctx, `CREATE FUNCTION `+r.storeSchema+`.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'the store is refusing writes'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON `+logs+` FOR EACH ROW EXECUTE FUNCTION `+r.storeSchema+`.refuse()`); err != nil {
		t.Fatal(err)
	}
	// The slot may be confirmed up to the first refused transaction's
	// commit, but not to its end: keepalives carry positions of other
	// databases' WAL, and of this one's up to the commit record.
	before := r.commitEnd(`INSERT INTO items VALUES (2, 'refused at first')`)
	r.exec(`INSERT INTO items SELECT g, 'refused at first' FROM generate_series(3, 500) g`)
	time.Sleep(1500 * time.Millisecond) // several status updates, and retries
	if confirmed, _ := r.slotLSN(); confirmed >= before {
		t.Fatalf("the slot was confirmed to %X, past the end %X of a transaction that is not logged", confirmed, before)
	}
	if _, err := store.Exec(ctx, `DROP TRIGGER refuse ON `+logs); err != nil {
		t.Fatal(err)
	}
	committed := map[int64]bool{}
	for i := int64(1); i <= 500; i++ {
		committed[i] = true
	}
	checkOnce(t, r, committed, 30*time.Second)
	if confirmed, _ := r.slotLSN(); confirmed <= before {
		t.Errorf("the slot stayed at %X once the changes were logged", confirmed)
	}
}

func TestRunsAsAReplicationRoleThatIsNotSuperuser(t *testing.T) {
	t.Parallel()
	r := newRig(t, `DO $$ BEGIN CREATE ROLE capture LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
		CREATE TABLE users (id int PRIMARY KEY, name text);
		ALTER TABLE users OWNER TO capture`)
	r.exec(`GRANT CREATE ON DATABASE ` + pgx.Identifier{strings.TrimPrefix(r.connect(r.src).Config().Database, "/")}.Sanitize() + ` TO capture`)
	cfg := r.config("n1", `
- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: users}}
- {name: upd, type: DB_UPDATE, url: "{hook}", options: {col: users}}`, ", heartbeat: 100ms")
	db := cfg.Projects[0].Databases["app"]
	db.URL = strings.Replace(db.URL, "postgres@", "capture@", 1)
	cfg.Projects[0].Databases["app"] = db
	r.mustStart(cfg, cdc.Options{})
	r.waitStreaming()
	sessions := func() (pids string) {
		err := r.connect(r.src).QueryRow(context.Background(),
			`SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), 'none') FROM pg_stat_activity WHERE usename = 'capture'`).Scan(&pids)
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	first := sessions()
	r.exec(`INSERT INTO users VALUES (1, 'a'); UPDATE users SET name = 'b'`)
	r.hook.Wait(t, 2, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // heartbeats, which must not fail
	if last := sessions(); last != first || strings.Count(first, ",") != 1 {
		t.Errorf("the capture role's sessions went from %s to %s: want the same lock holder and walsender throughout", first, last)
	}
}

// TestFreshChangesAreLoggedWithTheirOutcome commits changes while a node
// streams: each row is delivered first and logged once, with the outcome
// of its attempt, rather than inserted and then updated.
func TestFreshChangesAreLoggedWithTheirOutcome(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	// A lane's poll takes its free places while it claims, and a change
	// that arrives then is logged first (the path of a row whose lane has
	// no room): with no periodic poll, none does.
	r.poll = time.Hour
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
