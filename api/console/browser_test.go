package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/internal/browsertest"
	"github.com/triggerd/triggerd/node"
	"github.com/triggerd/triggerd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The admin's login in the config browserConfig writes.
const (
	adminUser     = "ops"
	adminPassword = "console-test-password"
)

// browserConfig is the node's config: a project with a synchronous
// trigger whose webhook answers a response, one that always fails, one
// that fails once then succeeds, one for queued work, a captured table
// and a watched directory. The placeholders are the store's URL and
// schema, the receiver's URL, the captured database's URL and the
// watched directory.
const browserConfig = `listen: 127.0.0.1:0
node_id: node-ui
lease: 2s
shutdown_grace: 2s
store: {url: %[1]q, schema: %[2]s}
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: console-test-secret-0123456789abcdef}]
    rules: {default: allow}
    databases:
      app: {url: %[4]q}
    storage:
      uploads: {path: %[5]q}
    triggers:
      - {name: greeter, type: greet, url: "%[3]s/greet", retries: 0}
      - {name: breaker, type: break, url: "%[3]s/fail", retries: 0}
      - {name: flaky, type: flaky, url: "%[3]s/flaky", retries: 0}
      - {name: worker, type: work, url: "%[3]s/ok"}
      - {name: flood, type: flood, url: "%[3]s/ok"}
      - {name: signups, type: DB_INSERT, url: "%[3]s/ok", options: {col: signups}}
      - {name: uploads, type: FILE_CREATE, url: "%[3]s/ok"}
admin:
  user: ` + adminUser + `
  password: ` + adminPassword + `
  secret: console-test-admin-secret-0123456789abcdef
`

// receiver is the webhooks' server: /greet answers {"response": {"greeting":
// "hello <data.name>"}}, /fail answers 500, /flaky answers 500 to its first
// request and 200 after, /ok answers 200.
func receiver(t testing.TB) *httptest.Server {
	var flaky atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/greet":
			var ev struct {
				Data struct {
					Name string `json:"name"`
				} `json:"data"`
			}
			_ = json.Unmarshal(body, &ev)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"response": {"greeting": %q}}`, "hello "+ev.Data.Name)
		case "/fail":
			http.Error(w, "the receiver is down", http.StatusInternalServerError)
		case "/flaky":
			if flaky.Add(1) == 1 {
				http.Error(w, "not yet", http.StatusInternalServerError)
				return
			}
			fmt.Fprint(w, "{}")
		default:
			fmt.Fprint(w, "{}")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// startNode runs a node of browserConfig in this process until the test
// ends, and returns the API's base URL.
func startNode(t testing.TB) string {
	t.Helper()
	storeURL, schema := pgtest.Schema(t)
	app := pgtest.Database(t)
	conn, err := pgx.Connect(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `CREATE TABLE signups (id bigserial PRIMARY KEY, email text NOT NULL)`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "triggerd.yaml")
	text := fmt.Sprintf(browserConfig, storeURL, schema, receiver(t).URL, app, t.TempDir())
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	addr := make(chan string, 1)
	n, err := node.New(cfg, node.Options{Logger: slog.New(slog.NewTextHandler(&log, nil)), Version: "test",
		Started: func(a string) { addr <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the node's Run: %v", err)
		}
		if t.Failed() {
			t.Logf("the node's log:\n%s", log.String())
		}
	})
	select {
	case a := <-addr:
		return "http://" + a
	case err := <-done:
		t.Fatalf("the node stopped before listening: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the node did not listen within 30s:\n%s", log.String())
	}
	return ""
}

// syncBuffer is a log that goroutines write to at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// page is one browser tab on Mission Control.
type page struct {
	t    testing.TB
	ctx  context.Context
	base string
	// exceptions and blocked collect the page's uncaught exceptions and
	// what its CSP refused.
	mu                  sync.Mutex
	exceptions, blocked []string
}

// openBrowser starts a headless Chromium with one tab, closed at the
// test's end.
func openBrowser(t testing.TB, base string) *page {
	t.Helper()
	ctx := browsertest.Open(t, 1280, 900)
	p := &page{t: t, ctx: ctx, base: base}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			p.mu.Lock()
			switch {
			case m.IsException():
				p.exceptions = append(p.exceptions, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
			case strings.Contains(m.String(), "Content Security Policy"):
				p.blocked = append(p.blocked, m.String())
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// step starts a subtest: its failures are t's, and no dialog that a
// failed step before left open is in its way.
func (p *page) step(t *testing.T) {
	p.t = t
	if _, err := chromedp.Run(p.ctx, chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('dialog[open]').forEach((d) => d.close())`)); err != nil {
		t.Fatalf("closing dialogs: %v", err)
	}
}

// within is how long a step waits for the page.
const within = 10 * time.Second

// do runs actions in the tab, failing the test when one fails or takes
// longer than within.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, p.text())
	}
}

// text is what the page shows, for failure messages.
func (p *page) text() string {
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// waitFor waits until the JavaScript expression is true in the page.
func (p *page) waitFor(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		p.t.Fatalf("waiting for %s (%s): %v\nthe page shows:\n%s", what, expr, err, p.text())
	}
}

// textOf is the text of the element that the CSS selector finds.
func (p *page) textOf(sel string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("reading %s: %v\nthe page shows:\n%s", sel, err, p.text())
	}
	return s
}

// eval evaluates JavaScript in the page.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// show goes to a page of the console by its link in the navigation, as a
// user does: no page load.
func (p *page) show(name string) {
	p.t.Helper()
	p.do("opening "+name, chromedp.Click(chromedp.ID("nav-"+name)))
	p.waitFor("the "+name+" page", fmt.Sprintf(`document.getElementById('view').dataset.page === %q && !document.querySelector('#view').innerText.includes('Loading…')`, name))
}

// screenshot writes the page, whole, to name.png in the folder
// TRIGGERD_SCREENSHOTS names; without it, it writes nothing.
func (p *page) screenshot(name string) {
	p.t.Helper()
	dir := os.Getenv("TRIGGERD_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('toast').hidden = true`)); err != nil {
		p.t.Fatalf("hiding the toast: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// queue queues an event through the queue API, as an application does,
// and returns its id.
func queue(t testing.TB, base, body string) string {
	t.Helper()
	resp, err := http.Post(base+"/v1/api/demo/event-triggers/queue", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.ID == "" {
		t.Fatalf("queueing %s: %s, %v", body, resp.Status, err)
	}
	return out.ID
}

// setValue sets the value of the input or textarea of an id, as pasting
// it would.
func setValue(id, value string) chromedp.Action[chromedp.Void] {
	v, _ := json.Marshal(value)
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).value = %s`, id, v))
}

// row is the CSS selector of an event's row in Event logs, by the id the
// queue answered (each event of these tests goes to one trigger: one row).
func row(id string) string { return fmt.Sprintf(`tr[data-batch-id=%q]`, id) }

// rowStatus is a JavaScript test of an event's row's status.
func rowStatus(id, status string) string {
	return fmt.Sprintf(`document.querySelector('%s')?.dataset.status === %q`, row(id), status)
}

// TestMissionControl drives Mission Control in Chromium against a node
// with a real store and webhooks: log in, the triggers' form and Trigger
// button, Event logs' live list, attempts, redelivery and cancel, the
// other pages, and log out. The steps share the node and the tab, in order.
func TestMissionControl(t *testing.T) {
	base := startNode(t)
	p := openBrowser(t, base)
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
		for _, b := range p.blocked {
			t.Errorf("the CSP refused something: %s", b)
		}
	}()

	t.Run("login", func(t *testing.T) {
		p.step(t)
		p.do("loading the console", chromedp.Navigate(base+"/mission-control/"), chromedp.WaitVisible(chromedp.ID("login-form")))
		p.screenshot("login")
		p.do("logging in with a wrong password",
			chromedp.SendKeys(chromedp.ID("login-user"), adminUser),
			chromedp.SendKeys(chromedp.ID("login-password"), "not-the-password"),
			chromedp.Click(chromedp.ID("login-submit")),
			chromedp.WaitVisible(chromedp.ID("login-error")))
		if got := p.textOf("#login-error"); !strings.Contains(got, "wrong user or password") {
			t.Errorf("a wrong password shows %q, want the server's \"wrong user or password\"", got)
		}
		if eval[bool](p, `document.getElementById('top').hidden === false`) {
			t.Error("the console shows after a wrong password")
		}
		p.do("logging in", chromedp.SendKeys(chromedp.ID("login-password"), adminPassword), chromedp.Click(chromedp.ID("login-submit")),
			chromedp.WaitVisible(chromedp.ID("logout")))
		if got := p.textOf("#user"); got != adminUser {
			t.Errorf("the header names user %q, want %q", got, adminUser)
		}
	})

	t.Run("add a trigger through the form", func(t *testing.T) {
		p.step(t)
		p.show("triggers")
		if eval[bool](p, `!!document.querySelector('tr[data-trigger="demo/greeter"] [data-testid=edit-btn]')`) {
			t.Error("a config trigger has an Edit button: config triggers are read-only")
		}
		if !eval[bool](p, `document.querySelector('tr[data-trigger="demo/signups"] [data-testid=trigger-btn]').disabled`) {
			t.Error("a DB_INSERT trigger's Trigger button is enabled: the API refuses events of DB_* types")
		}
		p.do("filling in the form with a bad URL",
			chromedp.Click(chromedp.ID("add-trigger")),
			chromedp.WaitVisible(chromedp.ID("trigger-form-dialog")),
			chromedp.SendKeys(chromedp.ID("tf-name"), "console-hook"),
			chromedp.SendKeys(chromedp.ID("tf-type"), "console-made"),
			chromedp.SendKeys(chromedp.ID("tf-url"), "ftp://example.com/hook"),
			chromedp.Click(chromedp.ID("tf-save")),
			chromedp.WaitVisible(chromedp.ID("tf-url-error")))
		if got := p.textOf("#tf-url-error"); !strings.Contains(got, "is not an http or https URL") {
			t.Errorf("beside the URL: %q, want that it is not an http or https URL", got)
		}
		if !eval[bool](p, `document.activeElement.id === 'tf-url'`) {
			t.Error("the focus is not on the URL field, the first with an error")
		}
		// The server checks what the form does not: a header triggerd sets
		// itself. Its error shows beside the field it names.
		p.do("adding a header the server refuses",
			chromedp.Click(chromedp.CSS(`#trigger-form details:nth-of-type(2) summary`)),
			setValue("tf-url", "http://127.0.0.1:1/console"),
			setValue("tf-headers", `{"Content-Type": "text/plain"}`),
			chromedp.Click(chromedp.ID("tf-save")),
			chromedp.WaitVisible(chromedp.ID("tf-headers-error")))
		if got := p.textOf("#tf-headers-error"); !strings.Contains(got, "triggerd sets Content-Type itself") {
			t.Errorf("beside the headers, the server's error: %q, want that triggerd sets Content-Type itself", got)
		}
		if eval[bool](p, `!document.getElementById('tf-url-error').hidden`) {
			t.Error("the URL's error still shows after the URL was fixed")
		}
		p.do("saving the trigger",
			setValue("tf-headers", ""),
			chromedp.Click(chromedp.ID("tf-save")),
			chromedp.WaitNotPresent(chromedp.ID("trigger-form-dialog")),
			chromedp.WaitVisible(chromedp.CSS(`tr[data-trigger="demo/console-hook"]`)))
		if got := p.textOf(`tr[data-trigger="demo/console-hook"]`); !strings.Contains(got, "console") || !strings.Contains(got, "console-made") {
			t.Errorf("the new trigger's row reads %q, want its type and that it is the console's", got)
		}
		if !eval[bool](p, `document.activeElement.id === 'add-trigger'`) {
			t.Error("the focus did not go back to the Add trigger button when the form closed")
		}
	})

	t.Run("trigger synchronously", func(t *testing.T) {
		p.step(t)
		p.do("opening the Trigger form",
			chromedp.Click(chromedp.CSS(`tr[data-trigger="demo/greeter"] [data-testid=trigger-btn]`)),
			chromedp.WaitVisible(chromedp.ID("fire-dialog")))
		if !eval[bool](p, `document.activeElement.id === 'fire-data'`) {
			t.Error("the focus is not in the event data when the form opens")
		}
		p.do("sending data that is not JSON",
			setValue("fire-data", `{"name": Ada}`),
			chromedp.Click(chromedp.ID("fire-submit")),
			chromedp.WaitVisible(chromedp.ID("fire-data-error")))
		if eval[bool](p, `!!document.querySelector('#fire-result *')`) {
			t.Error("data that is not JSON was sent")
		}
		p.do("triggering synchronously",
			setValue("fire-data", `{"name": "Ada"}`),
			chromedp.Click(chromedp.ID("fire-sync")),
			chromedp.Click(chromedp.ID("fire-submit")),
			chromedp.WaitVisible(chromedp.ID("fire-response")))
		if got := p.textOf("#fire-response"); !strings.Contains(got, `"greeting": "hello Ada"`) {
			t.Errorf("the modal shows the response %q, want the webhook's {\"greeting\": \"hello Ada\"}", got)
		}
		if got := p.textOf("#fire-id"); len(got) != 36 {
			t.Errorf("the modal shows event id %q, want a UUID", got)
		}
		p.screenshot("trigger-sync")
		p.do("closing with Escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.ID("fire-dialog")))
		if !eval[bool](p, `document.activeElement.matches('tr[data-trigger="demo/greeter"] [data-testid=trigger-btn]')`) {
			t.Error("the focus did not go back to the Trigger button")
		}
	})

	t.Run("trigger a failing webhook", func(t *testing.T) {
		p.step(t)
		p.do("triggering synchronously",
			chromedp.Click(chromedp.CSS(`tr[data-trigger="demo/breaker"] [data-testid=trigger-btn]`)),
			chromedp.WaitVisible(chromedp.ID("fire-dialog")),
			chromedp.Click(chromedp.ID("fire-sync")),
			chromedp.Click(chromedp.ID("fire-submit")),
			chromedp.WaitVisible(chromedp.ID("fire-error")))
		if got := p.textOf("#fire-error"); !strings.Contains(got, "502") {
			t.Errorf("the modal shows %q, want the 502 status and its error", got)
		}
		p.do("closing", chromedp.Click(chromedp.CSS(`#fire-dialog [data-testid=close]`)), chromedp.WaitNotPresent(chromedp.ID("fire-dialog")))
	})

	var live string
	t.Run("a queued event appears live", func(t *testing.T) {
		p.step(t)
		p.show("events")
		p.waitFor("the live feed", `document.getElementById('live-status').textContent === 'Live'`)
		eval[bool](p, `window.notReloaded = true`)
		live = queue(t, base, `{"type": "work", "data": {"order": 42}}`)
		p.waitFor("the queued event's row", rowStatus(live, "processed"))
		if !eval[bool](p, `window.notReloaded === true`) {
			t.Error("the page was reloaded")
		}
	})

	t.Run("open its attempts", func(t *testing.T) {
		p.step(t)
		p.do("opening the row",
			chromedp.Click(chromedp.CSS(row(live)+` [data-testid=open]`)),
			chromedp.WaitVisible(chromedp.CSS(row(live)+` + tr.detail [data-testid=attempt]`)))
		if got := p.textOf(row(live) + ` + tr.detail [data-testid=event-data]`); !strings.Contains(got, `"order": 42`) {
			t.Errorf("the event's data reads %q, want its order 42", got)
		}
		if got := p.textOf(row(live) + ` + tr.detail [data-testid=response-status]`); got != "200" {
			t.Errorf("the attempt's status reads %q, want 200", got)
		}
		if got := p.textOf(row(live) + ` + tr.detail [data-testid=attempt]`); !strings.Contains(got, "node-ui") {
			t.Errorf("the attempt reads %q, want the node that made it", got)
		}
		p.screenshot("events")
	})

	t.Run("redeliver a failed event", func(t *testing.T) {
		p.step(t)
		id := queue(t, base, `{"type": "flaky"}`)
		p.waitFor("the event to fail", rowStatus(id, "failed"))
		p.do("redelivering", chromedp.Click(chromedp.CSS(row(id)+` [data-testid=redeliver]`)))
		p.waitFor("the event to be processed", rowStatus(id, "processed"))
		if got := p.textOf(row(id) + ` td.num`); got != "2" {
			t.Errorf("the row shows %s attempts, want 2", got)
		}
	})

	t.Run("cancel a scheduled event", func(t *testing.T) {
		p.step(t)
		id := queue(t, base, `{"type": "work", "delay": 3600}`)
		p.waitFor("the scheduled event", rowStatus(id, "staged"))
		p.do("cancelling", chromedp.Click(chromedp.CSS(row(id)+` [data-testid=cancel]`)))
		p.waitFor("the event to be cancelled", rowStatus(id, "cancelled"))
	})

	t.Run("bulk redelivery says how many", func(t *testing.T) {
		p.step(t)
		queue(t, base, `{"type": "break"}`)
		p.do("filtering the breaker's failed events",
			setValue("f-trigger", "breaker"),
			chromedp.Click(chromedp.ID("apply-filters")))
		// One from the synchronous trigger above, one queued now.
		p.waitFor("the two failed events", `document.querySelectorAll('#events-body tr[data-status=failed]').length === 2`)
		p.do("asking to redeliver them", chromedp.Click(chromedp.ID("bulk-redeliver")), chromedp.WaitVisible(chromedp.ID("confirm-dialog")))
		if got := p.textOf("#confirm-text"); !strings.Contains(got, "Redeliver 2 failed events") {
			t.Errorf("the confirmation reads %q, want that it redelivers 2 failed events", got)
		}
		p.do("declining", chromedp.Click(chromedp.ID("confirm-cancel")), chromedp.WaitNotPresent(chromedp.ID("confirm-dialog")))
		if n := eval[int](p, `document.querySelectorAll('#events-body tr[data-status=staged]').length`); n != 0 {
			t.Errorf("%d events were redelivered after the confirmation was declined", n)
		}
	})

	t.Run("a flood of events", func(t *testing.T) {
		p.step(t)
		// Only events of type work show; a flood of others changes rows
		// the whole time, and the stream says so.
		p.do("filtering events of type work",
			setValue("f-trigger", ""),
			setValue("f-type", "work"),
			chromedp.Click(chromedp.ID("apply-filters")))
		p.waitFor("the work events", fmt.Sprintf(`!!document.querySelector('%s') && !document.querySelector('#events-body tr[data-status=failed]')`, row(live)))
		p.do("watching the page",
			chromedp.Evaluate[chromedp.Void](`performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();
				window.kept = document.querySelector('`+row(live)+`');
				window.maxGap = 0; window.lastTick = performance.now();
				window.ticker = setInterval(() => { const now = performance.now(); window.maxGap = Math.max(window.maxGap, now - window.lastTick); window.lastTick = now; }, 20);`))
		start := time.Now()
		flood := 2 * time.Second
		var sent atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for time.Since(start) < flood {
					resp, err := http.Post(base+"/v1/api/demo/event-triggers/queue", "application/json", strings.NewReader(`{"type": "flood"}`))
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					sent.Add(1)
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Second) // the page catches up: the reads the flood's last changes cause
		took := time.Since(start)
		reads := eval[int](p, `performance.getEntriesByType('resource').filter((e) => e.name.includes('/v1/admin/events?')).length`)
		gap := eval[float64](p, `clearInterval(window.ticker), window.maxGap`)
		t.Logf("%d events queued in %s; the page read the list %d times in %s; its longest pause was %.0f ms", sent.Load(), flood, reads, took.Round(time.Millisecond), gap)
		// A read starts at least 500 ms after the one before.
		if limit := int(took.Seconds()*2) + 1; reads > limit {
			t.Errorf("the page read the list %d times in %s, want at most %d (twice a second)", reads, took.Round(time.Millisecond), limit)
		}
		if reads == 0 {
			t.Error("the page did not read the list during the flood: it does not follow the stream")
		}
		if !eval[bool](p, `document.querySelector('`+row(live)+`') === window.kept`) {
			t.Error("the row of an event that did not change was built again")
		}
		if gap > 2000 {
			t.Errorf("the page did not run its timers for %.0f ms during the flood", gap)
		}
		p.do("clearing the filters", chromedp.Click(chromedp.ID("clear-filters")))
		p.waitFor("the filters to be cleared", `location.hash === '#/events' && document.getElementById('f-type').value === ''`)
		// A filter typed but not applied is cleared too.
		p.do("clearing a filter not applied", setValue("f-trigger", "worker"), chromedp.Click(chromedp.ID("clear-filters")))
		p.waitFor("the typed filter to be cleared", `document.getElementById('f-trigger').value === ''`)
	})

	t.Run("an open row stays while newer events push it down", func(t *testing.T) {
		p.step(t)
		p.show("events") // the filters were cleared: every event
		first := queue(t, base, `{"type": "work", "data": {"kept": true}}`)
		p.waitFor("the event's row", rowStatus(first, "processed"))
		p.do("opening it",
			chromedp.Click(chromedp.CSS(row(first)+` [data-testid=open]`)),
			chromedp.WaitVisible(chromedp.CSS(row(first)+` + tr.detail [data-testid=attempt]`)))
		var last string
		for range 60 { // more than a page
			last = queue(t, base, `{"type": "work"}`)
		}
		p.waitFor("the newest event at the top", fmt.Sprintf(`document.querySelector('tr[data-batch-id]')?.dataset.batchId === %q`, last))
		if !eval[bool](p, `!!document.querySelector('`+row(first)+` + tr.detail [data-testid=attempt]')`) {
			t.Error("the open row, pushed off the first page, was taken away with its attempts")
		}
		p.do("closing it", chromedp.Click(chromedp.CSS(row(first)+` [data-testid=open]`)))
		queue(t, base, `{"type": "work"}`)
		p.waitFor("the closed row to leave with the next update", `!document.querySelector('`+row(first)+`')`)
	})

	t.Run("the other pages", func(t *testing.T) {
		p.step(t)
		p.show("overview")
		p.waitFor("the chart's bars", `document.querySelectorAll('#activity-chart rect.bar').length > 0`)
		if got := p.textOf(`[data-trigger="demo/greeter"] [data-testid=processed]`); !strings.HasPrefix(got, "1") {
			t.Errorf("the greeter's card reads %q processed, want 1", got)
		}
		p.screenshot("overview")
		p.show("sources")
		p.waitFor("the database's streaming node", `document.querySelector('tr[data-database="demo/app"]')?.innerText.includes('node-ui')`)
		p.waitFor("the watched directory", `!!document.querySelector('tr[data-storage="demo/uploads"]')`)
		p.waitFor("the node", `document.querySelector('tr[data-node="node-ui"]')?.innerText.includes('alive')`)
		p.screenshot("sources")
		p.show("triggers")
		p.screenshot("triggers")
		// At a phone's width no page is wider than the screen: tables scroll
		// inside their frame.
		p.do("narrowing the window", chromedp.EmulateViewport(390, 844))
		for _, name := range []string{"triggers", "events", "sources", "overview"} {
			p.show(name)
			if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
				t.Errorf("at 390 px, %s is %d px wide", name, w)
			}
		}
		p.screenshot("overview-phone")
		p.do("widening the window", chromedp.EmulateViewport(1280, 900))
	})

	t.Run("delete a console trigger", func(t *testing.T) {
		p.step(t)
		p.show("triggers")
		hook := `tr[data-trigger="demo/console-hook"]`
		p.do("asking to delete it",
			chromedp.Click(chromedp.CSS(hook+` [data-testid=delete-btn]`)),
			chromedp.WaitVisible(chromedp.ID("confirm-dialog")))
		if !eval[bool](p, `document.activeElement.id === 'confirm-cancel'`) {
			t.Error("the confirmation does not put the focus on Cancel")
		}
		p.do("declining with Escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.ID("confirm-dialog")))
		if !eval[bool](p, `!!document.querySelector('`+hook+`')`) {
			t.Fatal("the trigger was deleted although the confirmation was declined")
		}
		p.do("deleting it",
			chromedp.Click(chromedp.CSS(hook+` [data-testid=delete-btn]`)),
			chromedp.Click(chromedp.ID("confirm-ok")),
			chromedp.WaitNotPresent(chromedp.CSS(hook)))
	})

	t.Run("an ended session asks for a login", func(t *testing.T) {
		p.step(t)
		if _, err := chromedp.Call(p.ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
			t.Fatalf("clearing the cookies: %v", err)
		}
		p.do("opening Sources without a session", chromedp.Click(chromedp.ID("nav-sources")), chromedp.WaitVisible(chromedp.ID("login-form")))
		if got := p.textOf("#login-error"); !strings.Contains(got, "session has ended") {
			t.Errorf("the login form says %q, want that the session has ended", got)
		}
		p.do("logging in again",
			setValue("login-user", adminUser),
			setValue("login-password", adminPassword),
			chromedp.Click(chromedp.ID("login-submit")),
			chromedp.WaitVisible(chromedp.ID("sources")))
	})

	t.Run("logout", func(t *testing.T) {
		p.step(t)
		p.do("logging out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
		p.do("loading the console again", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("login-form")))
		if eval[bool](p, `document.getElementById('top').hidden === false`) {
			t.Error("after logging out, a reload shows the console without a login")
		}
	})
}
