package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// capture is a source database with a table items, a store schema, and a
// receiver counting deliveries by row, shared by a test's nodes.
type capture struct {
	db                    *pgxpool.Pool // the source database
	src, storeURL, schema string
	// slot is the source's replication slot: the source database's name,
	// since slot names are the whole cluster's.
	slot string
	hook *docCounter
	t    *testing.T
}

func newCapture(t *testing.T) *capture {
	c := &capture{t: t, src: pgtest.Database(t), hook: newDocCounter(t)}
	c.storeURL, c.schema = pgtest.Schema(t)
	db, err := pgxpool.New(context.Background(), c.src)
	if err != nil {
		t.Fatal(err)
	}
	c.slot = db.Config().ConnConfig.Database
	t.Cleanup(db.Close)
	if _, err := db.Exec(context.Background(), `CREATE TABLE items (id bigint PRIMARY KEY, note text)`); err != nil {
		t.Fatal(err)
	}
	c.db = db
	return c
}

// config writes the config of a node capturing inserts into items.
func (c *capture) config(node string) string {
	return nodetest.WriteProjectConfig(c.t, node, c.storeURL, c.schema, c.databases(),
		fmt.Sprintf("      - {name: items, type: DB_INSERT, url: %q, options: {db: app, col: items}}\n", c.hook.URL))
}

// databases is the project's databases key, at four spaces of indent, with
// the source as database app.
func (c *capture) databases() string {
	return fmt.Sprintf("    databases:\n      app: {url: %q, slot: %s}\n", c.src, c.slot)
}

// TestChangeCaptureSurvivesSIGKILL crashes a node with SIGKILL while it logs
// the changes of a busy table, writes more while it is dead, and restarts it:
// every committed row must be logged in event_logs exactly once (the slot is
// confirmed only past what is logged, and a replay is skipped) and delivered
// at least once. It runs in parallel with other tests: it tells its
// nodes' Postgres sessions from theirs by the application_name it gives
// their store connections and by its source database.
func TestChangeCaptureSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	began := time.Now()
	ctx := context.Background()
	c := newCapture(t)
	db, storeURL, schema, hook := c.db, c.storeURL, c.schema, c.hook // the test's own
	app := "triggerd-" + c.slot                                      // its nodes' store sessions
	c.storeURL = withParam(t, c.storeURL, "application_name", app)
	cfg := c.config("node-1")
	first := nodetest.Start(t, cfg)
	c.waitWalsender(30 * time.Second)

	// Small transactions of one to six rows in two statements, from three
	// writers, until stop; committed holds the rows of those that committed.
	var committed ledger
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 3 {
		writers.Go(func() {
			next := int64(w+1) * 100_000_000
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := int64(1 + i%6)
				err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
					const ins = `INSERT INTO items SELECT g, 'small' FROM generate_series($1::bigint, $2::bigint) g`
					if _, err := tx.Exec(ctx, ins, next, next+n/2-1); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, ins, next+n/2, next+n-1)
					return err
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				committed.add(next, n)
				next += n
				time.Sleep(3 * time.Millisecond) // a pace, not a wait
			}
		})
	}
	stopWriters := sync.OnceFunc(func() { close(stop); writers.Wait() })
	defer stopWriters()

	st, err := pgx.Connect(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	eventLogs := pgx.Identifier{schema, "event_logs"}.Sanitize()
	countDocs := func(lo, hi int64) int {
		t.Helper()
		var n int
		err := st.QueryRow(ctx, `SELECT count(*) FROM `+eventLogs+` WHERE (payload->'doc'->>'id')::bigint BETWEEN $1 AND $2`, lo, hi).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Crash one: mid-transaction. A large transaction is logged in several
	// writes and confirmed after the last; crash once some but not all of
	// it is logged, so that the successor replays logged changes. Should
	// the node log one whole between two looks, commit another. First the
	// small transactions flow for a while (a time: there is no end to wait
	// for).
	time.Sleep(300 * time.Millisecond)
	const bigN = 20_000
	var bigLo int64
	bigs := 0
	for round := 0; ; round++ {
		bigLo = 1_000_000_000 + int64(round)*1_000_000
		if _, err := db.Exec(ctx, `INSERT INTO items SELECT g, 'big' FROM generate_series($1::bigint, $2::bigint) g`, bigLo, bigLo+bigN-1); err != nil {
			t.Fatal(err)
		}
		committed.add(bigLo, bigN)
		bigs++
		// Looks every 2ms, more often than waittest.Tick, to catch the
		// transaction part logged.
		deadline := time.Now().Add(20 * time.Second)
		n := 0
		for n == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("none of the large transaction's %d rows was logged within 20s", bigN)
			}
			time.Sleep(2 * time.Millisecond)
			n = countDocs(bigLo, bigLo+bigN-1)
		}
		if n < bigN {
			break
		}
		if round == 2 {
			t.Fatalf("the node logged three large transactions whole between two looks: no crash mid-transaction")
		}
		t.Logf("large transaction %d was logged whole between two looks; committing another", round+1)
	}
	killAndCheck(t, first, c, app, nil)
	t.Logf("crash one, %s after start: %d of the large transaction's %d rows logged, %d rows logged in all, %d committed",
		time.Since(began).Round(time.Millisecond), countDocs(bigLo, bigLo+bigN-1), bigN, countDocs(0, 1<<62), committed.len())

	// Write on while no node runs; restart, and let it catch up with what
	// was committed meanwhile, so that it logs small transactions as they
	// commit. While the trigger keeps up, the backlog is logged as fast as
	// it is delivered (see dispatch's roomWait): under the race detector,
	// about 600 rows a second.
	time.Sleep(time.Second)
	second := nodetest.Start(t, cfg)
	c.waitWalsender(30 * time.Second)
	backlog := committed.len()
	waittest.For(t, 90*time.Second, func() error {
		if n := countDocs(0, 1<<62); n < backlog {
			return fmt.Errorf("the restarted node logged %d of the %d rows committed before it started", n, backlog)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // small transactions, logged as they commit

	// Crash two: mid-write. Hold event_logs so that no write commits, wait
	// until a write waits on it and the node has since told the server its
	// position, crash, and end the waiting write (which, sent whole, would
	// otherwise commit once the table is free): a node that confirmed
	// changes before logging them loses them here.
	holder, err := pgx.Connect(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	lock, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE `+eventLogs+` IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	var blocked time.Time
	waittest.For(t, 10*time.Second, func() error {
		err := st.QueryRow(ctx, `SELECT now() FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.relation = $1::regclass AND NOT l.granted AND a.application_name = $2 LIMIT 1`, eventLogs, app).Scan(&blocked)
		if errors.Is(err, pgx.ErrNoRows) {
			return errors.New("no write of the node waits on event_logs since it was locked")
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
	waittest.For(t, 10*time.Second, func() error {
		var told bool
		err := st.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid
			WHERE s.slot_name = $2 AND r.reply_time > $1::timestamptz + interval '300 ms')`, blocked, c.slot).Scan(&told)
		if err != nil {
			t.Fatal(err)
		}
		if !told {
			return errors.New("the node sent the server no status while its writes waited")
		}
		return nil
	})
	loggedAll := countDocs(0, 1<<62)
	killAndCheck(t, second, c, app, func() {
		var ended int
		err := st.QueryRow(ctx, `SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.relation = $1::regclass AND NOT l.granted AND a.application_name = $2`, eventLogs, app).Scan(&ended)
		if err != nil || ended == 0 {
			t.Fatalf("end the killed node's waiting write: %d ended, %v", ended, err)
		}
		if err := lock.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("crash two, %s after start: %d rows logged, %d committed",
		time.Since(began).Round(time.Millisecond), loggedAll, committed.len())

	// Write on while no node runs; restart, write on through the takeover
	// (times, during which the writers write).
	time.Sleep(time.Second)
	nodetest.Start(t, cfg)
	c.waitWalsender(30 * time.Second)
	time.Sleep(500 * time.Millisecond)
	stopWriters()
	if t.Failed() {
		t.FailNow()
	}

	// The table is the truth; the ledger must agree with it.
	var rows []int64
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		r, err := tx.Query(ctx, `SELECT id FROM items ORDER BY id`)
		if err != nil {
			return err
		}
		rows, err = pgx.CollectRows(r, pgx.RowTo[int64])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := committed.sorted(); !slices.Equal(rows, want) {
		t.Fatalf("the table holds %d rows, but %d were committed", len(rows), len(want))
	}

	// Wait until every row is logged and delivered, or time runs out.
	type logged struct{ rows, unfinished int }
	var byDoc map[int64]logged
	var nulls int
	var delivered map[int64]int
	// Wait while delivery makes progress: under -race, beside other
	// packages' tests, delivering the backlog can take minutes.
	stalled, giveUp, best := time.Now().Add(30*time.Second), time.Now().Add(5*time.Minute), -1
	for {
		byDoc, nulls = make(map[int64]logged), 0
		r, err := st.Query(ctx, `SELECT (payload->'doc'->>'id')::bigint, count(*), count(*) FILTER (WHERE status <> 'processed')
			FROM `+eventLogs+` GROUP BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		var doc *int64
		var n, unfinished int
		_, err = pgx.ForEachRow(r, []any{&doc, &n, &unfinished}, func() error {
			if doc == nil {
				nulls += n
			} else {
				byDoc[*doc] = logged{n, unfinished}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		delivered = hook.byDocCopy()
		finished := 0
		for _, id := range rows {
			if byDoc[id].rows > 0 && byDoc[id].unfinished == 0 && delivered[id] > 0 {
				finished++
			}
		}
		if finished > best {
			best, stalled = finished, time.Now().Add(30*time.Second)
		}
		if finished == len(rows) || time.Now().After(stalled) || time.Now().After(giveUp) {
			break
		}
		time.Sleep(time.Second) // a deadline that moves with progress, which waittest has not
	}

	var missing, twice, unfinished, undelivered []int64
	inTable := make(map[int64]bool, len(rows))
	for _, id := range rows {
		inTable[id] = true
		l := byDoc[id]
		switch {
		case l.rows == 0:
			missing = append(missing, id)
		case l.rows > 1:
			twice = append(twice, id)
		}
		if l.unfinished > 0 {
			unfinished = append(unfinished, id)
		}
		if l.rows > 0 && delivered[id] == 0 {
			undelivered = append(undelivered, id)
		}
	}
	var extra []int64
	for id := range byDoc {
		if !inTable[id] {
			extra = append(extra, id)
		}
	}
	for id := range delivered {
		if !inTable[id] {
			extra = append(extra, id)
		}
	}
	report := func(what string, ids []int64) {
		if len(ids) > 0 {
			slices.Sort(ids)
			t.Errorf("%d committed rows %s, such as %v", len(ids), what, ids[:min(len(ids), 10)])
		}
	}
	report("are missing from event_logs", missing)
	report("are logged more than once", twice)
	report("are logged but not processed", unfinished)
	report("are logged and processed but never delivered", undelivered)
	if nulls > 0 {
		t.Errorf("%d event_logs rows have no doc.id", nulls)
	}
	if len(extra) > 0 {
		t.Errorf("%d rows logged or delivered that no committed transaction wrote, such as %v", len(extra), extra[:min(len(extra), 10)])
	}
	if bad := hook.badCount(); bad > 0 {
		t.Errorf("the receiver got %d deliveries it could not read", bad)
	}
	again := 0
	for _, n := range delivered {
		if n > 1 {
			again++
		}
	}
	t.Logf("%d rows committed (%d in large transactions); %d delivered more than once (in flight at a crash); took %s",
		len(rows), bigN*bigs, again, time.Since(began).Round(time.Millisecond))
}

// killAndCheck crashes a node with SIGKILL and checks that nothing of it is
// left: no process, and none of its Postgres sessions, which would keep
// the slot from its successor. afterKill, when set, runs between the kill
// and the look at the sessions. The node's sessions are those of the
// capture's source database and those whose application_name is app.
func killAndCheck(t *testing.T, node *nodetest.Child, c *capture, app string, afterKill func()) {
	t.Helper()
	before := c.backends(t, app)
	capturing := 0
	for _, b := range before {
		if b.app == "triggerd-cdc" {
			capturing++
		}
	}
	if capturing < 2 {
		t.Errorf("the node had %d Postgres sessions for change capture before the kill (%v), want its lock holder and its walsender", capturing, before)
	}
	family := append(descendants(node.Cmd.Process.Pid), node.Cmd.Process.Pid)
	node.Kill(t)
	if afterKill != nil {
		afterKill()
	}
	for _, pid := range family {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d of the killed node is still there (kill: %v)", pid, err)
		}
	}
	waittest.For(t, 10*time.Second, func() error {
		if left := slices.DeleteFunc(c.backends(t, app), func(b backend) bool { return !slices.Contains(before, b) }); len(left) > 0 {
			return fmt.Errorf("Postgres sessions %v of the killed node still there after the kill", left)
		}
		return nil
	})
}

// ledger records the ids of the rows whose transactions committed.
type ledger struct {
	mu  sync.Mutex
	ids []int64
}

// add records the rows lo to lo+n-1.
func (l *ledger) add(lo, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := lo; id < lo+n; id++ {
		l.ids = append(l.ids, id)
	}
}

func (l *ledger) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

// sorted returns the recorded ids in order.
func (l *ledger) sorted() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(slices.Values(l.ids))
}

// docCounter is a webhook counting DB_INSERT deliveries by the row's id
// (the CloudEvent's data.doc.id).
type docCounter struct {
	*httptest.Server
	mu    sync.Mutex
	byDoc map[int64]int
	bad   int
}

func newDocCounter(t *testing.T) *docCounter {
	c := &docCounter{byDoc: map[int64]int{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Type string `json:"type"`
			Data struct {
				Doc struct {
					ID *int64 `json:"id"`
				} `json:"doc"`
			} `json:"data"`
		}
		err := json.NewDecoder(r.Body).Decode(&ev)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil || ev.Type != "DB_INSERT" || ev.Data.Doc.ID == nil {
			c.bad++
			return
		}
		c.byDoc[*ev.Data.Doc.ID]++
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *docCounter) byDocCopy() map[int64]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int64]int, len(c.byDoc))
	for k, v := range c.byDoc {
		out[k] = v
	}
	return out
}

func (c *docCounter) badCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bad
}

// waitWalsender waits until a walsender streams the capture's slot.
func (c *capture) waitWalsender(within time.Duration) {
	c.t.Helper()
	waittest.For(c.t, within, func() error {
		if streaming, err := cdc.Streaming(context.Background(), c.db, c.slot); !streaming {
			return fmt.Errorf("no walsender streams slot %s (%v)", c.slot, err)
		}
		return nil
	})
}

// backend is a Postgres session.
type backend struct {
	pid int
	app string
}

// backends lists the Postgres sessions of the capture's nodes: their store
// pools, named app, and their change capture on the source database.
func (c *capture) backends(t *testing.T, app string) []backend {
	t.Helper()
	r, err := c.db.Query(context.Background(), `SELECT pid, application_name FROM pg_stat_activity
		WHERE application_name = $1 OR (application_name = 'triggerd-cdc' AND datname = current_database()) ORDER BY pid`, app)
	if err != nil {
		t.Fatal(err)
	}
	var out []backend
	var b backend
	_, err = pgx.ForEachRow(r, []any{&b.pid, &b.app}, func() error {
		out = append(out, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// descendants lists the processes descending from pid, from /proc.
func descendants(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	children := make(map[int][]int)
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		self, _ := strconv.Atoi(strings.Fields(s)[0])
		parent, _ := strconv.Atoi(f[1])
		children[parent] = append(children[parent], self)
	}
	var out []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		out = append(out, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return out
}

// TestStandbyTakesOverFromAKilledNode runs two nodes on one config: one
// streams the slot, the other stands by. SIGKILL of the streaming node
// must hand the slot to the standby within seconds, with every committed
// row logged exactly once and delivered at least once. It stays serial, as
// it times the takeover.
func TestStandbyTakesOverFromAKilledNode(t *testing.T) {
	c := newCapture(t)
	streaming := nodetest.Start(t, c.config("node-a"))
	c.waitWalsender(30 * time.Second)
	nodetest.Start(t, c.config("node-b"))

	w := c.startWriter()
	time.Sleep(time.Second) // rows committed while node A streams
	streaming.Kill(t)
	killed := time.Now()
	took := c.waitDeliveredAfter(w.last()+1, killed, 20*time.Second)
	t.Logf("the standby delivered a row committed after the kill %s after it", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the standby took %s to take over", took)
	}
	time.Sleep(500 * time.Millisecond) // rows committed after the takeover
	w.stop()
	c.expectEachRowOnce(w.last())
}

// rowWriter inserts rows 1, 2, 3... into items, one every 5 ms, until
// stopped.
type rowWriter struct {
	next atomic.Int64
	stop func()
}

// startWriter starts a rowWriter on the source, stopped at the test's end
// if not before.
func (c *capture) startWriter() *rowWriter {
	w := &rowWriter{}
	done := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := c.db.Exec(context.Background(), `INSERT INTO items VALUES ($1, 'x')`, w.next.Add(1)); err != nil {
				c.t.Errorf("insert: %v", err)
				return
			}
		}
	})
	w.stop = sync.OnceFunc(func() { close(done); writer.Wait() })
	c.t.Cleanup(w.stop)
	return w
}

// last is the last row inserted, or being inserted.
func (w *rowWriter) last() int64 { return w.next.Load() }

// waitDeliveredAfter waits until a row from id on is delivered, and
// returns how long after since that was.
func (c *capture) waitDeliveredAfter(id int64, since time.Time, within time.Duration) time.Duration {
	c.t.Helper()
	waittest.For(c.t, within, func() error {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(c.hook.byDocCopy())), func(d int64) bool { return d >= id }) {
			return fmt.Errorf("no row from %d on was delivered", id)
		}
		return nil
	})
	return time.Since(since)
}

// expectEachRowOnce waits until each of rows 1 to last is logged in
// event_logs exactly once, no other row change is, and each is delivered.
func (c *capture) expectEachRowOnce(last int64) {
	c.t.Helper()
	t, ctx := c.t, context.Background()
	if t.Failed() {
		t.FailNow()
	}
	st, err := pgx.Connect(ctx, c.storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	eventLogs := pgx.Identifier{c.schema, "event_logs"}.Sanitize()
	waittest.For(t, 30*time.Second, func() error {
		var ids, rows, twice, outside int64
		err := st.QueryRow(ctx, `SELECT count(*), coalesce(sum(n), 0), count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE id NOT BETWEEN 1 AND $1)
			FROM (SELECT (payload->'doc'->>'id')::bigint AS id, count(*) AS n FROM `+eventLogs+` WHERE type = 'DB_INSERT' GROUP BY 1) per_row`, last).
			Scan(&ids, &rows, &twice, &outside)
		if err != nil {
			t.Fatal(err)
		}
		delivered := c.hook.byDocCopy()
		undelivered := 0
		for id := int64(1); id <= last; id++ {
			if delivered[id] == 0 {
				undelivered++
			}
		}
		if twice > 0 || outside > 0 {
			t.Fatalf("%d rows logged more than once, %d logged that were never committed", twice, outside)
		}
		if ids != last || undelivered > 0 {
			return fmt.Errorf("of %d committed rows, %d logged and %d not delivered", last, ids, undelivered)
		}
		return nil
	})
}

// withParam returns rawURL with the query parameter name set to value.
func withParam(t *testing.T, rawURL, name, value string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}
