package dispatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const secret = "test-secret-0123456789abcdef0123"

// delivery is one request a hook received.
type delivery struct {
	at     time.Time
	header http.Header
	body   []byte
	event  struct {
		SpecVersion string          `json:"specversion"`
		ID          string          `json:"id"`
		Type        string          `json:"type"`
		Source      string          `json:"source"`
		Time        string          `json:"time"`
		Data        json.RawMessage `json:"data"`
	}
}

// hook is a real webhook server that records what it receives and answers
// with respond (200 {} when nil).
type hook struct {
	*httptest.Server
	mu      sync.Mutex
	got     []delivery
	arrived chan delivery
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func newHook(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *hook {
	h := &hook{arrived: make(chan delivery, 10000), respond: respond}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := delivery{at: time.Now(), header: r.Header.Clone()}
		body, _ := io.ReadAll(r.Body)
		d.body = body
		if err := json.Unmarshal(body, &d.event); err != nil {
			t.Errorf("hook got a body that is not JSON: %s", body)
		}
		h.mu.Lock()
		h.got = append(h.got, d)
		n := len(h.got)
		h.mu.Unlock()
		h.arrived <- d
		if h.respond != nil {
			h.respond(n, w, r)
			return
		}
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(h.Close)
	return h
}

// deliveries returns a copy of what the hook has received.
func (h *hook) deliveries() []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.got...)
}

// next waits for the next delivery.
func (h *hook) next(t *testing.T, within time.Duration) delivery {
	t.Helper()
	select {
	case d := <-h.arrived:
		return d
	case <-time.After(within):
		t.Fatalf("no delivery within %s", within)
		return delivery{}
	}
}

// env is a store schema shared by the nodes of one test.
type env struct {
	t      testing.TB
	url    string
	schema string
}

func newEnv(t testing.TB) *env {
	url, schema := pgtest.Schema(t)
	return &env{t: t, url: url, schema: schema}
}

// db connects to the schema, for the test's own queries.
func (e *env) db() *pgxpool.Pool { return pgtest.Pool(e.t, e.url, e.schema) }

// node is one running dispatcher.
type node struct {
	d   *dispatch.Dispatcher
	st  *store.Store
	cfg *config.Config
	run *dispatchtest.Node
}

// shutdown stops the node and waits for Run to return.
func (n *node) shutdown() error { return n.run.Stop() }

// start runs a node whose config has the given triggers (YAML list items).
func (e *env) start(nodeID, triggers string, opts dispatch.Options) *node {
	text := fmt.Sprintf(`
node_id: %s
store: {url: %q, schema: %s}
shutdown_grace: 2s
projects:
  - id: p
    secrets: [{kid: k1, alg: HS256, secret: %s}]
    triggers:
%s`, nodeID, e.url, e.schema, secret, indent(triggers, "      "))
	return e.startText(text, opts)
}

// startText runs a node with the config text.
func (e *env) startText(text string, opts dispatch.Options) *node {
	t := e.t
	cfg, err := config.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	if opts.Poll == 0 {
		opts.Poll = 200 * time.Millisecond
	}
	run := dispatchtest.Start(t, cfg, opts)
	return &node{d: run.Dispatcher, st: run.Store, cfg: cfg, run: run}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = prefix + strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n") + "\n"
}

// trigger renders one trigger list item.
func trigger(name, typ, url, extra string) string {
	s := fmt.Sprintf("- {name: %s, type: %s, url: %q", name, typ, url)
	if extra != "" {
		s += ", " + extra
	}
	return s + "}\n"
}

// rows reads the event_logs rows of an event.
func (n *node) rows(t *testing.T, batch uuid.UUID) []store.EventLog {
	t.Helper()
	recent, err := n.st.Recent(context.Background(), store.Filter{}, 100000)
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

// waitStatus waits until every row of an event has the status.
func (n *node) waitStatus(t *testing.T, batch uuid.UUID, want store.Status, within time.Duration) []store.EventLog {
	t.Helper()
	return n.waitFor(t, batch, "all "+string(want), func(r store.EventLog) bool { return r.Status == want }, within)
}

// waitFor waits until every row of an event (there is at least one) is as
// ok says, described by want.
func (n *node) waitFor(t *testing.T, batch uuid.UUID, want string, ok func(store.EventLog) bool, within time.Duration) []store.EventLog {
	t.Helper()
	var rows []store.EventLog
	waittest.For(t, within, func() error {
		rows = n.rows(t, batch)
		done := len(rows) > 0
		for _, r := range rows {
			done = done && ok(r)
		}
		if !done {
			return fmt.Errorf("event %s: rows %+v, want %s", batch, rows, want)
		}
		return nil
	})
	return rows
}

func TestDeliversASignedCloudEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"response": {"sent": true}}`))
	})
	n := e.start("node-a", trigger("mail", "sent-email", h.URL, `headers: {X-Api-Key: k-123}`), dispatch.Options{})
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	data := `{"to":"user1@email.com","html":"<b>hi</b>"}`
	id, rows, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "sent-email", Data: json.RawMessage(data), Time: at, FireAt: time.Now()})
	if err != nil || rows != 1 {
		t.Fatalf("enqueue: %v rows %d", err, rows)
	}
	d := h.next(t, 5*time.Second)
	row := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)[0]

	if ct := d.header.Get("Content-Type"); ct != "application/cloudevents+json" {
		t.Errorf("Content-Type %q, want the CloudEvents JSON format's", ct)
	}
	if k := d.header.Get("X-Api-Key"); k != "k-123" {
		t.Errorf("trigger header X-Api-Key %q", k)
	}
	ev := d.event
	if ev.SpecVersion != "1.0" || ev.ID != row.ID.String() || ev.Type != "sent-email" || ev.Source != "node-a" ||
		ev.Time != "2026-01-02T03:04:05.006Z" || string(ev.Data) != data {
		t.Errorf("CloudEvent %+v; row id %s", ev, row.ID)
	}
	// A receiver verifies X-SC-Token with the project's secret.
	tok, err := jwt.Parse(d.header.Get("X-SC-Token"), func(tk *jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("X-SC-Token does not verify: %v", err)
	}
	claims := tok.Claims.(jwt.MapClaims)
	exp, _ := claims.GetExpirationTime()
	if claims["id"] != "node-a" || tok.Header["kid"] != "k1" || time.Until(exp.Time) > 5*time.Minute {
		t.Errorf("X-SC-Token claims %v header %v", claims, tok.Header)
	}
	if row.Attempts != 1 || string(row.Response) != `{"sent": true}` {
		t.Errorf("row %+v", row)
	}
	invs, err := n.st.Invocations(context.Background(), row.ID)
	if err != nil || len(invs) != 1 {
		t.Fatalf("invocations %+v %v", invs, err)
	}
	if in := invs[0]; in.ResponseStatus != 200 || in.Error != "" || in.Attempt != 1 || in.NodeID != "node-a" ||
		in.RequestFormat != "structured" || !strings.Contains(in.ResponseBody, "sent") {
		t.Errorf("invocation %+v", in)
	}
}

// TestBinaryDelivery checks a binary-mode delivery's headers: attributes
// percent-encoded as the CloudEvents HTTP binding asks, Content-Type for
// datacontenttype, and JSON null as the body of an event without data.
func TestBinaryDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, nil)
	const typ = `sent "email" ✓ 100%`
	n := e.start("node-a", trigger("t", typ, h.URL, "format: binary"), dispatch.Options{})
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: typ, Time: at, FireAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	d := h.next(t, 5*time.Second)
	row := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)[0]
	want := http.Header{
		"Content-Type":   {"application/json"},
		"Ce-Specversion": {"1.0"},
		"Ce-Id":          {row.ID.String()},
		"Ce-Source":      {"node-a"},
		"Ce-Type":        {"sent%20%22email%22%20%E2%9C%93%20100%25"},
		"Ce-Time":        {"2026-01-02T03:04:05.006Z"},
	}
	for k, v := range want {
		if got := d.header.Values(k); len(got) != 1 || got[0] != v[0] {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if v := d.header.Values("Ce-Datacontenttype"); v != nil || d.header.Get("X-SC-Token") == "" {
		t.Errorf("ce-datacontenttype %q (Content-Type stands for it), X-SC-Token %q", v, d.header.Get("X-SC-Token"))
	}
	invs, err := n.st.Invocations(context.Background(), row.ID)
	if err != nil || len(invs) != 1 {
		t.Fatalf("invocations %+v %v", invs, err)
	}
	if body, err := dispatch.AttemptBody(&row, &invs[0]); err != nil || string(body) != "null" || string(d.body) != "null" {
		t.Fatalf("the log renders the body as %s (%v), the webhook got %s: want null", body, err, d.body)
	}
}

func TestOneRowPerMatchingTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h1, h2 := newHook(t, nil), newHook(t, nil)
	n := e.start("a", trigger("one", "x", h1.URL, "")+trigger("two", "x", h2.URL, "")+trigger("other", "y", h1.URL, ""), dispatch.Options{})
	id, rows, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	if err != nil || rows != 2 {
		t.Fatalf("enqueue: %v rows %d", err, rows)
	}
	got := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
	if len(got) != 2 || got[0].ID == got[1].ID {
		t.Fatalf("rows %+v", got)
	}
	d1, d2 := h1.next(t, time.Second), h2.next(t, time.Second)
	if d1.event.ID == d2.event.ID || string(d1.event.Data) != "null" {
		t.Fatalf("each trigger gets its own row id: %s %s, data %s", d1.event.ID, d2.event.ID, d1.event.Data)
	}
	// No trigger: nothing stored.
	id, rows, err = n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "nobody"})
	if err != nil || rows != 0 || id == uuid.Nil || len(n.rows(t, id)) != 0 {
		t.Fatalf("unmatched event: %v rows %d", err, rows)
	}
}

func TestRetriesWithBackoffThenFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database is down", http.StatusInternalServerError)
	})
	n := e.start("a", trigger("t", "x", h.URL, "retries: 3, retry_backoff: {initial: 100ms, max: 10s}"), dispatch.Options{})
	id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	if err != nil {
		t.Fatal(err)
	}
	row := n.waitStatus(t, id, store.StatusFailed, 10*time.Second)[0]
	got := h.deliveries()
	if len(got) != 4 {
		t.Fatalf("%d attempts, want retries+1 = 4", len(got))
	}
	// The nth retry waits 100ms × 2^(n-1), ±20%, plus the time to record
	// the attempt, claim the row again and send it: up to 500 ms on a
	// loaded 2-core machine (cold CI runs under -race saw 332 ms for the
	// first retry and 350 ms in another test).
	for i, base := range []time.Duration{100, 200, 400} {
		gap := got[i+1].at.Sub(got[i].at)
		lo, hi := base*time.Millisecond*8/10, base*time.Millisecond*12/10+500*time.Millisecond
		if gap < lo || gap > hi {
			t.Errorf("retry %d came after %s, want %s..%s", i+1, gap, lo, hi)
		}
		if got[i+1].event.ID != got[0].event.ID {
			t.Errorf("retry %d has CloudEvent id %s, want the same id %s", i+1, got[i+1].event.ID, got[0].event.ID)
		}
	}
	if row.Attempts != 4 || !strings.Contains(row.Remark, "failed after 4 attempt(s)") || !strings.Contains(row.Remark, "500") ||
		!strings.Contains(row.Remark, "database is down") {
		t.Errorf("failed row %+v", row)
	}
	invs, _ := n.st.Invocations(context.Background(), row.ID)
	if len(invs) != 4 {
		t.Fatalf("%d invocation rows, want 4", len(invs))
	}
	for i, in := range invs {
		if in.Attempt != i+1 || in.ResponseStatus != 500 || !strings.Contains(in.Error, "500") || in.Duration <= 0 {
			t.Errorf("invocation %d: %+v", i, in)
		}
	}
}

func TestSucceedsOnRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Write([]byte(`not json, still a success`))
	})
	n := e.start("a", trigger("t", "x", h.URL, "retry_backoff: {initial: 50ms}"), dispatch.Options{})
	id, _, _ := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	row := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)[0]
	if row.Attempts != 2 || row.Response != nil {
		t.Fatalf("row %+v", row)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
	})
	n := e.start("a", trigger("t", "x", h.URL, "retry_backoff: {initial: 50ms, max: 5s}"), dispatch.Options{})
	id, _, _ := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
	got := h.deliveries()
	// 1s, plus up to 500 ms to record the attempt and claim the row again
	// under -race on a loaded machine (TestRetryAfterNeverAboveMax).
	if gap := got[1].at.Sub(got[0].at); gap < time.Second || gap > 1700*time.Millisecond {
		t.Fatalf("retry came %s after a 429 with Retry-After: 1, want about 1s", gap)
	}
}

func TestRetryAfterNeverAboveMax(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	n := e.start("a", trigger("t", "x", h.URL, "retry_backoff: {initial: 50ms, max: 300ms}"), dispatch.Options{})
	id, _, _ := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
	got := h.deliveries()
	// Retry-After raises the wait from about 50ms to max, and max caps it:
	// the retry comes 300ms after the first attempt, plus the time to
	// record that attempt and claim the row again (up to 650 ms seen on a
	// cold CI run under -race), never an hour later.
	if gap := got[1].at.Sub(got[0].at); gap < 300*time.Millisecond || gap > 1300*time.Millisecond {
		t.Fatalf("retry came %s after Retry-After: 3600, want max (300ms) plus the time to claim it again", gap)
	}
}

func TestTimeoutAndRefusedAreFailedAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := make(chan struct{})
	slow := newHook(t, func(int, http.ResponseWriter, *http.Request) { <-release })
	defer close(release)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String() + "/hook"
	ln.Close()
	n := e.start("a", trigger("slow", "slow", slow.URL, "retries: 0, timeout: 200")+trigger("gone", "gone", refused, "retries: 0"), dispatch.Options{})
	slowID, _, _ := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "slow"})
	goneID, _, _ := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "gone"})
	if r := n.waitStatus(t, slowID, store.StatusFailed, 5*time.Second)[0]; !strings.Contains(r.Remark, "timeout (200ms)") {
		t.Errorf("slow row remark %q", r.Remark)
	}
	if r := n.waitStatus(t, goneID, store.StatusFailed, 5*time.Second)[0]; !strings.Contains(r.Remark, "connection refused") {
		t.Errorf("refused row remark %q", r.Remark)
	}
}

func TestSlowTriggerDoesNotHoldUpOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := make(chan struct{})
	stuck := newHook(t, func(int, http.ResponseWriter, *http.Request) { <-release })
	fast := newHook(t, nil)
	n := e.start("a", trigger("stuck", "s", stuck.URL, "concurrency: 2, timeout: 60000")+trigger("fast", "f", fast.URL, ""), dispatch.Options{})
	defer close(release)
	ctx := context.Background()
	for range 100 {
		if _, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var ids []uuid.UUID
	for range 20 {
		id, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "f"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
	}
	if len(stuck.deliveries()) != 2 {
		t.Errorf("stuck trigger has %d attempts in flight, want its concurrency (2)", len(stuck.deliveries()))
	}
	t.Logf("20 fast deliveries took %s beside a stuck trigger", time.Since(start))
}

func TestScheduledEventsFireOnTime(t *testing.T) {
	e := newEnv(t)
	h := newHook(t, nil)
	n := e.start("a", trigger("t", "x", h.URL, ""), dispatch.Options{Poll: time.Hour})
	due := map[string]time.Time{}
	now := time.Now()
	for i := range 5 {
		at := now.Add(time.Duration(300+100*i) * time.Millisecond)
		id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(fmt.Sprint(i)), Time: now, FireAt: at})
		if err != nil {
			t.Fatal(err)
		}
		due[n.rows(t, id)[0].ID.String()] = at
	}
	for range 5 {
		d := h.next(t, 5*time.Second)
		at := due[d.event.ID]
		if late := d.at.Sub(at); late < 0 || late > 250*time.Millisecond {
			t.Errorf("event due at %s arrived %s late", at.Format(time.StampMilli), late)
		}
	}
}

func TestCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	answer := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"response": {"foo": "bar"}}`))
	})
	silent := newHook(t, nil)
	failing := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { http.Error(w, "nope", http.StatusTeapot) })
	release := make(chan struct{})
	slow := newHook(t, func(int, http.ResponseWriter, *http.Request) { <-release })
	n := e.start("a",
		trigger("silent", "both", silent.URL, "")+trigger("answer", "both", answer.URL, "")+
			trigger("failing", "fail", failing.URL, "retries: 1, retry_backoff: {initial: 50ms}")+
			trigger("slow", "slow", slow.URL, "timeout: 30000")+
			trigger("empty", "empty", silent.URL, ""), dispatch.Options{})
	ctx := context.Background()

	res, err := n.d.Call(ctx, dispatch.Event{Project: "p", Type: "both", Data: json.RawMessage(`{"q":1}`)})
	if err != nil || string(res.Response) != `{"foo": "bar"}` {
		t.Fatalf("sync call: %s %v", res.Response, err)
	}
	if rows := n.rows(t, res.ID); len(rows) != 2 || !rows[0].Synchronous {
		t.Fatalf("sync rows %+v", rows)
	}

	res, err = n.d.Call(ctx, dispatch.Event{Project: "p", Type: "empty"})
	if err != nil || res.Response != nil {
		t.Fatalf("sync call without response: %s %v", res.Response, err)
	}

	res, err = n.d.Call(ctx, dispatch.Event{Project: "p", Type: "fail"})
	var failed *dispatch.FailedError
	if !errors.As(err, &failed) || !strings.Contains(failed.Remark, "418") || !strings.Contains(failed.Remark, "2 attempt") {
		t.Fatalf("failing sync call: %v", err)
	}
	if got := len(failing.deliveries()); got != 2 {
		t.Fatalf("failing sync call made %d attempts, want 2", got)
	}

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	res, err = n.d.Call(short, dispatch.Event{Project: "p", Type: "slow"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || res.ID == uuid.Nil {
		t.Fatalf("slow sync call: %v id %s", err, res.ID)
	}
	close(release) // delivery went on in the background
	n.waitStatus(t, res.ID, store.StatusProcessed, 5*time.Second)

	if _, err := n.d.Call(ctx, dispatch.Event{Project: "p", Type: "nobody"}); !errors.Is(err, dispatch.ErrNoTrigger) {
		t.Fatalf("sync call without trigger: %v", err)
	}
}

func TestTwoNodesDeliverEachRowOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var mu sync.Mutex
	count := map[string]int{}
	h := newHook(t, func(_ int, w http.ResponseWriter, r *http.Request) {})
	go func() {
		for d := range h.arrived {
			mu.Lock()
			count[d.event.ID]++
			mu.Unlock()
		}
	}()
	trig := trigger("t", "x", h.URL, "")
	a := e.start("a", trig, dispatch.Options{Poll: 50 * time.Millisecond})
	b := e.start("b", trig, dispatch.Options{Poll: 50 * time.Millisecond})
	ctx := context.Background()
	var batches []uuid.UUID
	for i := range 300 {
		n := a
		if i%2 == 1 {
			n = b
		}
		ev := dispatch.Event{Project: "p", Type: "x"}
		if i%3 == 0 { // some scheduled, so that both nodes race for them
			ev.FireAt = time.Now().Add(200 * time.Millisecond)
		}
		id, _, err := n.d.Enqueue(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, id)
	}
	for _, id := range batches {
		a.waitStatus(t, id, store.StatusProcessed, 10*time.Second)
	}
	time.Sleep(300 * time.Millisecond) // let any double delivery arrive
	mu.Lock()
	defer mu.Unlock()
	if len(count) != 300 {
		t.Fatalf("%d distinct events delivered, want 300", len(count))
	}
	for id, c := range count {
		if c != 1 {
			t.Errorf("event %s delivered %d times", id, c)
		}
	}
}

// TestRenewedLeaseIsNotTakenOver has a node hold rows for longer than a
// claim lasts (the lease plus the timeout, 1.4s here): three rows that wait
// in turn for the one attempt slot, 0.8s each. The node renews their
// leases, and the other node takes none of them.
func TestRenewedLeaseIsNotTakenOver(t *testing.T) {
	e := newEnv(t)
	h := newHook(t, func(int, http.ResponseWriter, *http.Request) { time.Sleep(800 * time.Millisecond) })
	trig := trigger("t", "x", h.URL, "timeout: 1000, concurrency: 1")
	opts := dispatch.Options{Lease: 400 * time.Millisecond, Poll: 50 * time.Millisecond}
	a := e.start("a", trig, opts)
	var ids []uuid.UUID
	for range 3 {
		id, _, _ := a.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
		ids = append(ids, id)
	}
	// A row enqueued while a's lane polls is staged unclaimed, for the next
	// poll: b starts once a has claimed all three, one way or the other.
	held := func(r store.EventLog) bool { return r.ClaimedBy == "a" || r.Status == store.StatusProcessed }
	for _, id := range ids {
		a.waitFor(t, id, "claimed by a", held, 5*time.Second)
	}
	e.start("b", trig, opts)
	for _, id := range ids {
		a.waitStatus(t, id, store.StatusProcessed, 10*time.Second)
	}
	got := h.deliveries()
	if len(got) != 3 {
		t.Fatalf("%d deliveries of 3 rows held longer than a claim lasts, want 3", len(got))
	}
	for _, d := range got {
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(d.header.Get("X-SC-Token"), claims); err != nil || claims["id"] != "a" {
			t.Errorf("a row was delivered by %v, not by node a, which held it (%v): its lease was not renewed", claims["id"], err)
		}
	}
}

func TestDeadNodesRowsComeBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	n := e.start("live", trigger("t", "x", h.URL, "retries: 2, retry_backoff: {initial: 50ms}"), dispatch.Options{Poll: 50 * time.Millisecond})
	// A node that died held this row; it had made 2 of its 3 attempts.
	id := uuid.Must(uuid.NewV7())
	leaseEnds := time.Now().Add(500 * time.Millisecond)
	row := store.EventLog{ID: id, BatchID: id, Project: "p", Trigger: "t", Type: "x", EventTime: time.Now(), FireAt: time.Now(),
		Status: store.StatusStaged, DueAt: leaseEnds, ClaimedBy: "dead"}
	if err := n.st.Insert(context.Background(), []store.EventLog{row}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db().Exec(context.Background(), `UPDATE event_logs SET attempts = 2 WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	d := h.next(t, 5*time.Second)
	if d.at.Before(leaseEnds) {
		t.Errorf("the dead node's row was taken %s before its lease ended", leaseEnds.Sub(d.at))
	}
	got := n.waitStatus(t, id, store.StatusFailed, 5*time.Second)[0]
	if got.Attempts != 3 || len(h.deliveries()) != 1 {
		t.Fatalf("row %+v after %d attempts here: the 2 attempts made before count", got, len(h.deliveries()))
	}
}

func TestRowsOfRemovedTriggersAreCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, nil)
	first := e.start("a", trigger("t", "x", h.URL, "")+trigger("old", "y", h.URL, ""), dispatch.Options{})
	id := uuid.Must(uuid.NewV7())
	row := store.EventLog{ID: id, BatchID: id, Project: "p", Trigger: "old", Type: "y", EventTime: time.Now(), FireAt: time.Now(),
		Status: store.StatusStaged, DueAt: time.Now().Add(time.Hour)}
	if err := first.st.Insert(context.Background(), []store.EventLog{row}); err != nil {
		t.Fatal(err)
	}
	if err := first.shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db().Exec(context.Background(), `UPDATE event_logs SET due_at = now() - interval '2 minutes' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	n := e.start("a", trigger("t", "x", h.URL, ""), dispatch.Options{})
	got := n.waitStatus(t, id, store.StatusCancelled, 5*time.Second)[0]
	if !strings.Contains(got.Remark, "old") {
		t.Fatalf("remark %q", got.Remark)
	}
}

func TestShutdownFinishesAttemptsAndReleasesTheRest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(int, http.ResponseWriter, *http.Request) { time.Sleep(300 * time.Millisecond) })
	n := e.start("a", trigger("t", "x", h.URL, "concurrency: 1"), dispatch.Options{})
	ctx := context.Background()
	first, _, _ := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x"})
	second, _, _ := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x"})
	// One attempt is in flight (either row may have won the slot); the
	// other row waits for the slot.
	inFlight := h.next(t, 5*time.Second).event.ID
	if err := n.shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uuid.UUID{first, second} {
		r := n.rows(t, id)[0]
		switch {
		case r.ID.String() == inFlight && r.Status != store.StatusProcessed:
			t.Errorf("the attempt in flight did not finish: %+v", r)
		case r.ID.String() != inFlight && (r.Status != store.StatusStaged || r.ClaimedBy != "" || r.Attempts != 0):
			t.Errorf("the waiting row was not released: %+v", r)
		}
	}
}

// TestStoreCrashLosesNothing kills the store's Postgres with SIGKILL while
// an attempt is in flight: an event queued during the outage is refused
// (not half-stored), the attempt's outcome is kept and written once the
// server is back, and delivery goes on.
func TestStoreCrashLosesNothing(t *testing.T) {
	cluster := pgtest.Cluster(t)
	e := newEnv(t)
	release := make(chan struct{})
	h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-release
		}
	})
	var releaseOnce sync.Once
	let := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(let) // before the hook closes, should the test end early
	n := e.start("a", trigger("t", "x", h.URL, "timeout: 30000"), dispatch.Options{Poll: 100 * time.Millisecond})
	ctx := context.Background()
	inFlight, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(`"in flight"`)})
	if err != nil {
		t.Fatal(err)
	}
	h.next(t, 5*time.Second)

	if err := cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := cluster.StartAgain(context.Background()); err != nil {
				t.Errorf("start the cluster again for the next tests: %v", err)
			}
		}
	})
	if _, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(`"refused"`)}); err == nil {
		t.Fatal("an event was accepted while the store was down")
	}
	let() // the attempt succeeds while its outcome cannot be written
	time.Sleep(300 * time.Millisecond)
	if err := cluster.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true

	row := n.waitStatus(t, inFlight, store.StatusProcessed, 15*time.Second)[0]
	if invs, _ := n.st.Invocations(ctx, row.ID); row.Attempts != 1 || len(invs) != 1 {
		t.Fatalf("in-flight row %+v with %d logged attempts, want processed after 1", row, len(invs))
	}
	after, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x", Data: json.RawMessage(`"after"`)})
	if err != nil {
		t.Fatalf("queue after the restart: %v", err)
	}
	n.waitStatus(t, after, store.StatusProcessed, 10*time.Second)
	all, _ := n.st.Recent(ctx, store.Filter{}, 100)
	for _, r := range all {
		if string(r.Payload) == `"refused"` {
			t.Errorf("the refused event was stored: %+v", r)
		}
	}
	if len(all) != 2 {
		t.Errorf("%d rows, want 2 (in flight, after)", len(all))
	}
}

// TestSecondRunLeavesTheFirstAlone calls Run again while an attempt is in
// flight: the second call fails at once, and the attempt goes on to be
// recorded.
func TestSecondRunLeavesTheFirstAlone(t *testing.T) {
	e := newEnv(t)
	answer := make(chan struct{})
	h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		<-answer
		w.Write([]byte(`{}`))
	})
	var once sync.Once
	release := func() { once.Do(func() { close(answer) }) }
	t.Cleanup(release) // before the hook closes, which waits for its handlers
	n := e.start("a", trigger("t", "x", h.URL, ""), dispatch.Options{})
	id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	if err != nil {
		t.Fatal(err)
	}
	h.next(t, 5*time.Second)
	if err := n.d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already run") {
		t.Fatalf("second Run: %v, want an error saying the dispatcher has already run", err)
	}
	release()
	n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
}
