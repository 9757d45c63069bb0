package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/triggerd/triggerd/api"
	"github.com/triggerd/triggerd/api/apitest"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const secret = "api-test-secret-0123456789abcdef"

// fixture is a running node behind a real HTTP server.
type fixture struct {
	url   string
	dbURL string // the store's URL, which no answer may name
	st    *store.Store
	log   *dispatchtest.Buffer // the node's log
	hooks atomic.Int64         // requests the webhook received
}

// db connects to the node's store schema, for the test's own queries.
func (f *fixture) db(t *testing.T) *pgxpool.Pool {
	return pgtest.Pool(t, f.dbURL, f.st.Schema())
}

// setup starts a node with project "demo": rules default authenticated,
// "open" allowed, "closed" denied; the webhook answers {"response": ...}
// except for type "broken" (500) and "slow" (waits 2s).
func setup(t *testing.T, extra string) *fixture {
	t.Helper()
	f := &fixture{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hooks.Add(1)
		var ev struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("the webhook got a body that is not a JSON CloudEvent: %v: %s", err, body)
		}
		switch ev.Type {
		case "broken":
			http.Error(w, "webhook broke", http.StatusInternalServerError)
		case "slow":
			time.Sleep(2 * time.Second)
		default:
			fmt.Fprintf(w, `{"response": {"echo": %s}}`, ev.Data)
		}
	}))
	t.Cleanup(hook.Close)
	url, schema := pgtest.Schema(t)
	text := fmt.Sprintf(`
node_id: api-test
store: {url: %q, schema: %s}
sync_timeout: 500ms
body_limit: 4096
%s
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: %s}]
    rules: {default: authenticated, open: allow, closed: deny, broken: allow, slow: allow}
    triggers:
      - {name: open, type: open, url: %q}
      - {name: authed, type: authed, url: %q}
      - {name: closed, type: closed, url: %q}
      - {name: broken, type: broken, url: %q, retries: 1, retry_backoff: {initial: 10ms}}
      - {name: slow, type: slow, url: %q}
`, url, schema, extra, secret, hook.URL, hook.URL, hook.URL, hook.URL, hook.URL)
	f.dbURL = url
	f.log = new(dispatchtest.Buffer)
	f.url, f.st = startNode(t, text, slog.New(slog.NewTextHandler(f.log, nil)))
	return f
}

// startNode runs a node with the config text (whose one project is "demo")
// behind a real HTTP server, stopped at cleanup, and returns the server's
// URL and the node's store. The API logs to log (slog.Default when nil).
func startNode(tb testing.TB, text string, log *slog.Logger) (string, *store.Store) {
	tb.Helper()
	cfg, err := config.Parse("api-test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatal(err)
	}
	n := dispatchtest.Start(tb, cfg, dispatch.Options{})
	a := api.New(cfg, n.Dispatcher, n.Keys, n.Store, log)
	ctx, cancel := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() { a.RunFeed(ctx); close(fed) }()
	srv := httptest.NewServer(a)
	tb.Cleanup(func() { cancel(); <-fed; srv.Close() })
	return srv.URL, n.Store
}

// demoNode runs a node whose project "demo" has the rules and triggers
// given (a YAML mapping, and list items one per line), logging to the
// fixture's log.
func demoNode(t *testing.T, rules, triggers string) *fixture {
	t.Helper()
	url, schema := pgtest.Schema(t)
	f := &fixture{dbURL: url, log: new(dispatchtest.Buffer)}
	f.url, f.st = startNode(t, fmt.Sprintf(`
node_id: api-test
store: {url: %q, schema: %s}
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: %s}]
    rules: %s
    triggers:
%s`, url, schema, secret, rules, indent(triggers)), slog.New(slog.NewTextHandler(f.log, nil)))
	return f
}

// indent puts six spaces before each line.
func indent(lines string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(strings.TrimSpace(lines), "\n") {
		b.WriteString("      " + strings.TrimSpace(line) + "\n")
	}
	return b.String()
}

// post sends a queue request with an Authorization header (none when
// empty) and decodes the JSON answer.
func (f *fixture) post(t *testing.T, path, body, authorization string) (int, map[string]any) {
	t.Helper()
	return f.do(t, http.MethodPost, path, body, authorization)
}

// noRedirects is a client that hands back redirects instead of following
// them: the API answers every request itself.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// do sends a request with an Authorization header (none when empty) and
// decodes its answer, as send does.
func (f *fixture) do(t *testing.T, method, path, body, authorization string) (int, map[string]any) {
	t.Helper()
	header := http.Header{}
	if authorization != "" {
		header.Set("Authorization", authorization)
	}
	return f.send(t, method, path, body, header)
}

// send sends a request with the headers given and decodes its answer,
// failing the test unless the answer is a JSON object that names nothing
// of the store.
func (f *fixture) send(t *testing.T, method, path, body string, header http.Header) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s answered Content-Type %q", method, path, ct)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s answered %d with a body that is not a JSON object: %v: %q", method, path, resp.StatusCode, err, raw)
	}
	if strings.HasPrefix(path, "/v1/admin") {
		apitest.CheckAdminAnswer(t, method, path, resp.StatusCode, raw)
	}
	msg, _ := out["error"].(string)
	if leak := storeNamed(t, f.dbURL, string(raw), msg); leak != "" {
		t.Errorf("%s %s answered %d naming the store's %s: %s", method, path, resp.StatusCode, leak, raw)
	}
	return resp.StatusCode, out
}

// storeNamed tells which part of the store's URL an answer names, if any:
// the URL or its host anywhere in the body; its port, user or database in
// the error message (the body's ids could hold the port's digits by chance).
func storeNamed(t *testing.T, dbURL, body, msg string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host, port = q.Get("host"), q.Get("port")
	}
	if port == "" {
		port = "5432"
	}
	for _, c := range []struct{ part, value, in string }{
		{"URL", dbURL, body},
		{"host", host, body},
		{"port", port, msg},
		{"user", u.User.Username(), msg},
		{"database", strings.TrimPrefix(u.Path, "/"), msg},
	} {
		if c.value != "" && strings.Contains(c.in, c.value) {
			return fmt.Sprintf("%s (%s)", c.part, c.value)
		}
	}
	return ""
}

// count is how many event_logs rows there are.
func (f *fixture) count(t *testing.T) int {
	t.Helper()
	rows, err := f.st.Recent(context.Background(), store.Filter{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}

// bearer is an Authorization header with a token signed with key (the
// project's secret, or another), expiring at exp (never when zero).
func bearer(t *testing.T, key, kid string, exp time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "client"}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	tk := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tk.Header["kid"] = kid
	s, err := tk.SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + s
}

const queue = "/v1/api/demo/event-triggers/queue"

func TestBadRequestsAreExplainedAndStoreNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	good := bearer(t, secret, "k1", time.Now().Add(time.Minute))
	cases := []struct {
		name, path, body, authorization string
		status                          int
		says                            string
	}{
		{"unknown project", "/v1/api/nope/event-triggers/queue", `{"type":"open"}`, "", 404, `unknown project "nope"`},
		{"empty body", queue, ``, "", 400, "body is empty"},
		{"malformed JSON", queue, `{"type": "open",`, "", 400, "not a JSON object"},
		{"not an object", queue, `[1,2]`, "", 400, "not a JSON object"},
		{"two objects", queue, `{"type":"open"} {}`, "", 400, "data after its JSON object"},
		{"missing type", queue, `{"data": {}}`, "", 400, "type is missing"},
		{"empty type", queue, `{"type": ""}`, "", 400, "type must be a non-empty string"},
		{"type not a string", queue, `{"type": 5}`, "", 400, "type must be a non-empty string"},
		{"unknown field", queue, `{"type":"open","isSyncronous":true}`, "", 400, `unknown field "isSyncronous"`},
		{"data and payload", queue, `{"type":"open","data":1,"payload":2}`, "", 400, "not both"},
		{"bad timestamp", queue, `{"type":"open","timestamp":"yesterday"}`, "", 400, "timestamp must be epoch milliseconds"},
		{"blank timestamp", queue, `{"type":"open","timestamp":" "}`, "", 400, "timestamp must be epoch milliseconds"},
		{"options a string", queue, `{"type":"open","options":"db=app"}`, "", 400, "options must be an object or null"},
		{"options a list", queue, `{"type":"open","options":[]}`, "", 400, "options must be an object or null"},
		{"options twice", queue, `{"type":"open","options":{},"options":null}`, "", 400, `field "options" appears twice`},
		{"timestamp wrong kind", queue, `{"type":"open","timestamp":true}`, "", 400, "timestamp must be"},
		{"negative timestamp", queue, `{"type":"open","timestamp":-5}`, "", 400, "out of range"},
		{"negative delay", queue, `{"type":"open","delay":-1}`, "", 400, "delay must be 0 or more"},
		{"delay not a number", queue, `{"type":"open","delay":"soon"}`, "", 400, "delay must be a number"},
		{"huge delay", queue, `{"type":"open","delay":1e300}`, "", 400, "too long"},
		{"sync not a bool", queue, `{"type":"open","isSynchronous":"yes"}`, "", 400, "isSynchronous must be true or false"},
		{"long unknown field", queue, `{"type":"open","` + strings.Repeat("k", 3000) + `":1}`, "", 400, `unknown field "kkkk`},
		{"delay of 400 digits", queue, `{"type":"open","delay":` + strings.Repeat("9", 400) + `}`, "", 400, "too long"},
		{"long unknown project", "/v1/api/" + strings.Repeat("p", 3000) + "/event-triggers/queue", `{"type":"open"}`, "", 404, `unknown project "pppp`},
		{"long reserved type", queue, `{"type":"DB_` + strings.Repeat("x", 3000) + `"}`, "", 400, "reserved"},
		{"reserved DB type", queue, `{"type":"DB_INSERT"}`, "", 400, "reserved"},
		{"reserved FILE type", queue, `{"type":"FILE_CREATE"}`, good, 400, "reserved"},
		{"too large", queue, `{"type":"open","data":"` + strings.Repeat("x", 5000) + `"}`, "", 413, "4096-byte limit"},
		{"denied type", queue, `{"type":"closed"}`, good, 403, "deny"},
		{"no token", queue, `{"type":"authed"}`, "", 401, "need a token"},
		{"not bearer", queue, `{"type":"authed"}`, "Basic dXNlcjpwYXNz", 401, "Bearer"},
		{"garbage token", queue, `{"type":"authed"}`, "Bearer not.a.jwt", 401, "bad token"},
		{"expired token", queue, `{"type":"authed"}`, bearer(t, secret, "k1", time.Now().Add(-time.Hour)), 401, "expired"},
		{"wrong secret", queue, `{"type":"authed"}`, bearer(t, "another-secret-0123456789abcdef", "k1", time.Time{}), 401, "bad token"},
		{"unknown kid", queue, `{"type":"authed"}`, bearer(t, secret, "k9", time.Time{}), 401, "bad token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, out := f.post(t, c.path, c.body, c.authorization)
			msg, _ := out["error"].(string)
			if status != c.status || !strings.Contains(msg, c.says) {
				t.Fatalf("got %d %q, want %d saying %q", status, msg, c.status, c.says)
			}
			if len(msg) > 500 {
				t.Fatalf("a message of %d bytes: %q", len(msg), msg)
			}
		})
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("bad requests left %d event_logs rows", n)
	}
	if f.hooks.Load() != 0 {
		t.Fatalf("bad requests reached the webhook %d times", f.hooks.Load())
	}
}

// TestUnstorableBodiesAreExplained sends bodies the store could never
// keep and types that are not text: each is a 400 saying what is wrong and
// where, and nothing is stored.
func TestUnstorableBodiesAreExplained(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	cases := []struct{ name, body, says string }{
		{"bad byte in a data string", "{\"type\":\"open\",\"data\":{\"s\":\"a\xffb\"}}", "not valid UTF-8 at byte offset 29 (0xff)"},
		{"bad byte in a data key", "{\"type\":\"open\",\"data\":{\"k\xfe\":1}}", "not valid UTF-8 at byte offset 25 (0xfe)"},
		{"cut character in payload", "{\"type\":\"open\",\"payload\":\"\xe2\x82\"}", "not valid UTF-8 at byte offset 26 (0xe2)"},
		{"overlong NUL in data", "{\"type\":\"open\",\"data\":\"\xc0\x80\"}", "not valid UTF-8 at byte offset 23 (0xc0)"},
		{"encoded surrogate in data", "{\"type\":\"open\",\"data\":[\"\xed\xa0\x80\"]}", "not valid UTF-8 at byte offset 24 (0xed)"},
		{"bad byte in type", "{\"type\":\"op\xc3en\"}", "not valid UTF-8 at byte offset 11 (0xc3)"},
		{"bad byte in a key", "{\"type\":\"open\",\"\xff\":1}", "not valid UTF-8 at byte offset 16 (0xff)"},
		{"bad byte in timestamp", "{\"type\":\"open\",\"timestamp\":\"2026\xff\"}", "not valid UTF-8 at byte offset 32 (0xff)"},
		{"escaped NUL in type", `{"type":"a\u0000b"}`, "type contains a control character (U+0000)"},
		{"escaped unit separator in type", `{"type":"a\u001fb"}`, "type contains a control character (U+001F)"},
		{"escaped tab in type", `{"type":"a\tb"}`, "type contains a control character (U+0009)"},
		{"escaped DEL in type", `{"type":"a\u007f"}`, "type contains a control character (U+007F)"},
		{"C1 control in type", "{\"type\":\"a\xc2\x85\"}", "type contains a control character (U+0085)"},
		{"lone surrogate in type", `{"type":"a\ud800"}`, "type contains U+FFFD"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, out := f.post(t, queue, c.body, "")
			msg, _ := out["error"].(string)
			if status != 400 || !strings.Contains(msg, c.says) {
				t.Fatalf("got %d %q, want 400 saying %q", status, msg, c.says)
			}
		})
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("unstorable bodies left %d event_logs rows", n)
	}
	// Escapes are JSON text, which the store keeps: data holding an escaped
	// NUL or lone surrogate is stored byte for byte.
	data := `{"nul":"a\u0000b","lone":"\ud800","k\u0000":[1,"\udfff"]}`
	status, out := f.post(t, queue, `{"type":"open","data":`+data+`}`, "")
	if status != 200 {
		t.Fatalf("escapes in data: %d %v", status, out)
	}
	rows, err := f.st.Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || string(rows[0].Payload) != data {
		t.Fatalf("rows after data with escapes: %+v %v", rows, err)
	}
}

// TestTimesStayInRange sends event times and delivery times at and past
// both ends of the range epoch milliseconds cover, in UTC: past them is a
// 400 that says so, at them the event is stored with those times.
func TestTimesStayInRange(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	for _, c := range []struct{ body, says string }{
		{`{"type":"open","timestamp":253402300799999,"delay":0.001}`, "timestamp plus delay falls after 9999-12-31T23:59:59.999Z"},
		{`{"type":"open","timestamp":"9999-12-31T23:00:00Z","delay":3600}`, "timestamp plus delay falls after 9999-12-31T23:59:59.999Z"},
		{`{"type":"open","timestamp":"9999-12-31T23:00:00-05:00"}`, `timestamp "9999-12-31T23:00:00-05:00" is out of range`},
		{`{"type":"open","timestamp":"9999-12-31T23:59:59.9999Z"}`, "out of range"},
		{`{"type":"open","timestamp":253402300800000}`, "out of range"},
		{`{"type":"open","timestamp":"1969-12-31T23:59:59.999Z"}`, "out of range"},
		{`{"type":"open","timestamp":"1970-01-01T00:30:00+01:00"}`, "out of range"},
		{`{"type":"open","timestamp":"0001-01-01T00:00:00Z"}`, "out of range"},
		{`{"type":"open","timestamp":-1}`, "out of range"},
	} {
		status, out := f.post(t, queue, c.body, "")
		msg, _ := out["error"].(string)
		if status != 400 || !strings.Contains(msg, c.says) || !strings.Contains(msg, "1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z") {
			t.Errorf("%s: got %d %q, want 400 saying %q and the range", c.body, status, msg, c.says)
		}
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("times out of range left %d event_logs rows", n)
	}
	last := time.UnixMilli(253402300799999)
	want := map[string][2]time.Time{ // body: event time, fire time
		`{"type":"open","timestamp":"9999-12-31T23:59:59.999Z"}`:                {last, last},
		`{"type":"open","timestamp":"9999-12-31T18:59:59.999-05:00","delay":0}`: {last, last},
		`{"type":"open","timestamp":253402300799000,"delay":0.999}`:             {last.Add(-999 * time.Millisecond), last},
		`{"type":"open","timestamp":"1970-01-01T01:00:00+01:00"}`:               {time.UnixMilli(0), time.UnixMilli(0)},
	}
	for body, times := range want {
		status, out := f.post(t, queue, body, "")
		if status != 200 {
			t.Fatalf("%s: %d %v", body, status, out)
		}
		rows, err := f.st.Recent(context.Background(), store.Filter{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		var got *store.EventLog
		for i := range rows {
			if rows[i].BatchID.String() == out["id"] {
				got = &rows[i]
			}
		}
		if got == nil || !got.EventTime.Equal(times[0]) || !got.FireAt.Equal(times[1]) {
			t.Errorf("%s: stored %+v, want event time %s and fire time %s", body, got, times[0], times[1])
		}
	}
}

// TestPathsAreTakenAsSent sends requests to paths with "..", ".", "//" or
// a trailing slash: each is answered, not redirected, with a JSON error
// naming the path as sent; the routes themselves still work.
func TestPathsAreTakenAsSent(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	for _, c := range []struct{ method, path, says string }{
		{"POST", "/v1/api/demo/../demo/event-triggers/queue", `no such endpoint: POST "/v1/api/demo/../demo/event-triggers/queue"`},
		{"POST", "/v1/api/demo/%2e%2e/x", `no such endpoint: POST "/v1/api/demo/%2e%2e/x"`},
		{"POST", "/v1/api/demo/%2E%2E/demo/event-triggers/queue", `"/v1/api/demo/%2E%2E/demo/event-triggers/queue"`},
		{"POST", "//v1/api/demo/event-triggers/queue", `no such endpoint: POST "//v1/api/demo/event-triggers/queue"`},
		{"POST", "/v1/api//demo/event-triggers/queue", `"/v1/api//demo/event-triggers/queue"`},
		{"POST", "/v1/api/demo/./event-triggers/queue", `"/v1/api/demo/./event-triggers/queue"`},
		{"POST", "/v1/api/demo/event-triggers/queue/", `"/v1/api/demo/event-triggers/queue/"`},
		{"POST", "/v1/api/demo/event-triggers/queue/..", `"/v1/api/demo/event-triggers/queue/.."`},
		{"GET", "//healthz", `no such endpoint: GET "//healthz"`},
		{"GET", "/healthz/", `no such endpoint: GET "/healthz/"`},
		{"GET", "/x/../readyz", `no such endpoint: GET "/x/../readyz"`},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			status, out := f.do(t, c.method, c.path, `{"type":"open"}`, "")
			msg, _ := out["error"].(string)
			if status != 404 || !strings.Contains(msg, c.says) || !strings.Contains(msg, "paths are taken as sent") {
				t.Errorf("got %d %q, want 404 saying %q and how paths are taken", status, msg, c.says)
			}
		})
	}
	// ".." as a project is a project name like any other.
	if status, out := f.post(t, "/v1/api/%2e%2e/event-triggers/queue", `{"type":"open"}`, ""); status != 404 || out["error"] != `unknown project ".."` {
		t.Errorf("project ..: %d %v", status, out)
	}
	if f.count(t) != 0 || f.hooks.Load() != 0 {
		t.Fatalf("requests to other paths stored %d rows and made %d deliveries", f.count(t), f.hooks.Load())
	}
	for _, path := range []string{queue, "/v1/api/demo/eventing/queue"} {
		if status, out := f.post(t, path, `{"type":"open"}`, ""); status != 200 {
			t.Errorf("POST %s: %d %v", path, status, out)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, out := f.do(t, http.MethodGet, path, "", ""); status != 200 {
			t.Errorf("GET %s: %d %v", path, status, out)
		}
	}
}

// TestOneReadingOfTheBody sends bodies that parsers could read in more
// than one way: a top-level field given twice (one parser takes the first,
// another the last) and a stray bracket after the object are refused;
// data, which triggerd passes on byte for byte, keeps its duplicate keys.
func TestOneReadingOfTheBody(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	for _, c := range []struct{ body, says string }{
		{`{"type":"closed","type":"open"}`, `field "type" appears twice`},
		{`{"type":"open","typ\u0065":"closed"}`, `field "type" appears twice`},
		{`{"type":"open","data":1,"data":2}`, `field "data" appears twice`},
		{`{"type":"open","payload":1,"payload":2}`, `field "payload" appears twice`},
		{`{"type":"open","delay":1,"delay":1}`, `field "delay" appears twice`},
		{`{"type":"open"}]`, "data after its JSON object"},
		{`{"type":"open"}}`, "data after its JSON object"},
		{`{"type":"open"} null`, "data after its JSON object"},
	} {
		status, out := f.post(t, queue, c.body, "")
		if msg, _ := out["error"].(string); status != 400 || !strings.Contains(msg, c.says) {
			t.Errorf("%s: got %d %q, want 400 saying %q", c.body, status, msg, c.says)
		}
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("refused bodies left %d event_logs rows", n)
	}
	data := `{"k":1,"k":2,"n":{"k":[],"k":{}}}`
	if status, out := f.post(t, queue, `{"type":"open","data":`+data+`}`, ""); status != 200 {
		t.Fatalf("duplicate keys in data: %d %v", status, out)
	}
	rows, err := f.st.Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || string(rows[0].Payload) != data {
		t.Fatalf("rows after data with duplicate keys: %+v %v", rows, err)
	}
}

func TestAsyncQueueCommitsBeforeReplying(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	status, out := f.post(t, queue, `{"type":"open","data":{"to":"user1@email.com"}}`, "")
	if status != 200 {
		t.Fatalf("queue: %d %v", status, out)
	}
	id, err := uuid.Parse(fmt.Sprint(out["id"]))
	if err != nil {
		t.Fatalf("id %v: %v", out["id"], err)
	}
	// The reply came after the commit, so the row is there now.
	rows, err := f.st.Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || rows[0].BatchID != id || string(rows[0].Payload) != `{"to":"user1@email.com"}` {
		t.Fatalf("rows right after the reply: %+v %v", rows, err)
	}
	// An authenticated type with a good token, on the older route, with payload as data's alias.
	status, out = f.post(t, "/v1/api/demo/eventing/queue", `{"type":"authed","payload":[1,2]}`, bearer(t, secret, "k1", time.Now().Add(time.Minute)))
	if status != 200 || out["id"] == nil {
		t.Fatalf("authenticated queue on the older route: %d %v", status, out)
	}
	// No trigger: 200, stored nowhere.
	before := f.count(t)
	status, out = f.post(t, queue, `{"type":"nobody-listens"}`, bearer(t, secret, "k1", time.Time{}))
	if status != 200 || out["id"] == nil || f.count(t) != before {
		t.Fatalf("unmatched event: %d %v, rows %d -> %d", status, out, before, f.count(t))
	}
}

func TestScheduledQueueSetsFireTime(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	ts := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for _, body := range []string{
		fmt.Sprintf(`{"type":"open","timestamp":%d,"delay":30}`, ts.UnixMilli()),
		fmt.Sprintf(`{"type":"open","timestamp":%q,"delay":30}`, ts.Format(time.RFC3339Nano)),
	} {
		status, out := f.post(t, queue, body, "")
		if status != 200 {
			t.Fatalf("%s: %d %v", body, status, out)
		}
	}
	rows, _ := f.st.Recent(context.Background(), store.Filter{}, 10)
	for _, r := range rows {
		if !r.EventTime.Equal(ts) || !r.FireAt.Equal(ts.Add(30*time.Second)) || r.Status != store.StatusStaged {
			t.Fatalf("row %+v: want time %s and fire_at 30s later", r, ts)
		}
	}
	if f.hooks.Load() != 0 {
		t.Fatal("an event scheduled an hour ahead was delivered")
	}
}

func TestSynchronousQueue(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	status, out := f.post(t, queue, `{"type":"open","data":{"foo":"bar"},"isSynchronous":true}`, "")
	if status != 200 || fmt.Sprint(out["result"]) != "map[echo:map[foo:bar]]" || out["id"] == nil {
		t.Fatalf("sync: %d %v", status, out)
	}
	status, out = f.post(t, queue, `{"type":"broken","isSynchronous":true}`, "")
	if msg, _ := out["error"].(string); status != 502 || !strings.Contains(msg, "webhook broke") || out["id"] == nil {
		t.Fatalf("sync with a failing webhook: %d %v", status, out)
	}
	start := time.Now()
	status, out = f.post(t, queue, `{"type":"slow","isSynchronous":true}`, "")
	if msg, _ := out["error"].(string); status != 504 || !strings.Contains(msg, "sync_timeout") || out["id"] == nil {
		t.Fatalf("sync past sync_timeout: %d %v", status, out)
	}
	if waited := time.Since(start); waited > 1500*time.Millisecond {
		t.Fatalf("504 came after %s, want about sync_timeout (500ms)", waited)
	}
	id := uuid.MustParse(fmt.Sprint(out["id"]))
	waittest.For(t, 10*time.Second, func() error { // delivery went on in the background
		rows, err := f.st.Recent(context.Background(), store.Filter{Type: "slow"}, 10)
		if len(rows) == 1 && rows[0].BatchID == id && rows[0].Status == store.StatusProcessed {
			return nil
		}
		return fmt.Errorf("the timed-out sync event was not delivered in the background: %+v %v", rows, err)
	})
	status, out = f.post(t, queue, `{"type":"nobody","isSynchronous":true}`, bearer(t, secret, "k1", time.Time{}))
	if status != 404 {
		t.Fatalf("sync without trigger: %d %v", status, out)
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/nope": 404} {
		if status, out := f.do(t, http.MethodGet, path, "", ""); status != want {
			t.Errorf("GET %s: %d %v, want %d", path, status, out, want)
		}
	}
	if status, out := f.do(t, http.MethodGet, queue, "", ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET on the queue: %d %v, want 405", status, out)
	}
	// Readiness follows the store: drop the schema's tables and it fails,
	// saying so without naming the store; the log has the detail.
	if _, err := f.db(t).Exec(context.Background(), `DROP TABLE schema_migrations`); err != nil {
		t.Fatal(err)
	}
	status, out := f.do(t, http.MethodGet, "/readyz", "", "")
	if msg, _ := out["error"].(string); status != http.StatusServiceUnavailable || !strings.Contains(msg, "not ready") {
		t.Errorf("readyz without migrations: %d %v, want 503 saying not ready", status, out)
	}
	if !strings.Contains(f.log.String(), "schema is at version 0") {
		t.Errorf("the log does not say why the node is not ready:\n%s", f.log.String())
	}
}

// TestStoreFailureNamesNoStore makes the store refuse events: the answer
// is 503 "try again" without the store's URL or SQL error, which go to
// the log.
func TestStoreFailureNamesNoStore(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	if _, err := f.db(t).Exec(context.Background(), `ALTER TABLE event_logs RENAME TO event_logs_away`); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"type":"open"}`, `{"type":"open","isSynchronous":true}`} {
		status, out := f.post(t, queue, body, "")
		msg, _ := out["error"].(string)
		if status != http.StatusServiceUnavailable || !strings.Contains(msg, "try again") {
			t.Errorf("%s with the store failing: %d %v, want 503 saying try again", body, status, out)
		}
		if strings.Contains(msg, "event_logs") || strings.Contains(msg, "SQLSTATE") {
			t.Errorf("%s: the answer carries the SQL error: %s", body, msg)
		}
	}
	if !strings.Contains(f.log.String(), "event_logs") {
		t.Errorf("the log does not have the store's error:\n%s", f.log.String())
	}
}
