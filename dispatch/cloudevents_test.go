package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// ceHook is a webhook receiver built on the CloudEvents Go SDK. It
// validates every event, NACKs the first delivery of each and ACKs the
// next, and keeps what it ACKed, with the request's Content-Type.
type ceHook struct {
	t     *testing.T
	URL   string
	mu    sync.Mutex
	tries map[string]int         // deliveries by event id
	acked map[string]event.Event // by event id
	ctype map[string]string      // the ACKed request's Content-Type, by event id
	dump  string                 // the first request received, as sent
}

// receive is the receiver function, for any request a hook takes: the SDK
// gives it the request's headers in ctx.
func (h *ceHook) receive(ctx context.Context, e event.Event) protocol.Result {
	if err := e.Validate(); err != nil {
		h.t.Errorf("the receiver got an event that does not validate: %v\n%s", err, e)
		return cehttp.NewResult(http.StatusBadRequest, "invalid event: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tries[e.ID()]++
	if h.tries[e.ID()] == 1 {
		return cloudevents.ResultNACK
	}
	h.acked[e.ID()] = e
	if rd := cehttp.RequestDataFromContext(ctx); rd != nil {
		h.ctype[e.ID()] = rd.Header.Get("Content-Type")
	}
	return cloudevents.ResultACK
}

// record keeps the first request a hook receives, as sent, for the
// README's examples (go test -v shows them).
func (h *ceHook) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dump == "" {
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(body))
		d, _ := httputil.DumpRequest(r2, true)
		h.dump = string(d)
	}
}

func newCEHook(t *testing.T) *ceHook {
	return &ceHook{t: t, tries: make(map[string]int), acked: make(map[string]event.Event), ctype: make(map[string]string)}
}

// newSDKReceiver starts a receiver on the SDK's HTTP protocol and client
// (client.StartReceiver), as the SDK's users write one.
func newSDKReceiver(t *testing.T) *ceHook {
	h := newCEHook(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := cehttp.New(cehttp.WithListener(ln), cehttp.WithRequestDataAtContextMiddleware(),
		cehttp.WithMiddleware(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.record(r)
				next.ServeHTTP(w, r)
			})
		}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.StartReceiver(ctx, h.receive) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("SDK receiver: %v", err)
		}
	})
	h.URL = "http://" + ln.Addr().String()
	return h
}

// newEnvelopeReceiver starts a receiver written for the earlier product:
// it takes the CloudEvent as an application/json body and reads it with
// the SDK's JSON event format. (The SDK's HTTP receiver does not take
// such a request: without ce- headers, application/json is no CloudEvents
// content mode, and it answers 415.)
func newEnvelopeReceiver(t *testing.T) *ceHook {
	h := newCEHook(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.record(r)
		body, _ := io.ReadAll(r.Body)
		var e event.Event
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("the envelope receiver cannot read the body: %v\n%s", err, body)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx := cehttp.WithRequestDataAtContext(r.Context(), r)
		if res := h.receive(ctx, e); !protocol.IsACK(res) {
			http.Error(w, "not now", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// TestCloudEventsSDKReceivers delivers a custom event, a DB_INSERT and a
// FILE_CREATE to triggers of each delivery format, each to a receiver
// built on the CloudEvents Go SDK: every delivery must parse and validate,
// carry the row's attributes and data, and a NACK must be retried.
func TestCloudEventsSDKReceivers(t *testing.T) {
	t.Parallel()
	src := pgtest.Database(t)
	storeURL, schema := pgtest.Schema(t)
	dir := t.TempDir()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	if _, err := conn.Exec(ctx, `CREATE TABLE users (id int PRIMARY KEY, email text)`); err != nil {
		t.Fatal(err)
	}

	hooks := map[string]*ceHook{
		"structured": newSDKReceiver(t),
		"binary":     newSDKReceiver(t),
		"envelope":   newEnvelopeReceiver(t),
	}
	var triggers strings.Builder
	for _, mode := range []string{"structured", "binary", "envelope"} {
		format := ", format: " + mode
		if mode == "structured" {
			format = "" // the default
		}
		for _, tr := range []string{"custom: {type: sent-email}", "insert: {type: DB_INSERT, options: {col: users}}", "created: {type: FILE_CREATE}"} {
			name, rest, _ := strings.Cut(tr, ": {")
			fmt.Fprintf(&triggers, "- {name: %s-%s, url: %q, retry_backoff: {initial: 50ms}%s, %s\n", mode, name, hooks[mode].URL, format, rest)
		}
	}
	cfg := dispatchtest.Config(t, "node-ce", storeURL, schema,
		fmt.Sprintf("    databases:\n      app: {url: %q}\n    storage:\n      up: {path: %q}", src, dir), triggers.String(), "")
	run := dispatchtest.Start(t, cfg, dispatch.Options{Poll: 200 * time.Millisecond})
	dbs, err := cdc.Sources(cfg, run.Dispatcher, cdc.Options{StoreSchema: schema})
	if err != nil {
		t.Fatal(err)
	}
	files, err := filewatch.Sources(cfg, run.Dispatcher, run.Store, filewatch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run.RunSources(t, dbs[0], files[0]); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, 15*time.Second, func() error {
		streaming, err := cdc.Streaming(ctx, conn, cfg.Projects[0].Databases["app"].Slot)
		if streaming && files[0].Watching() {
			return nil
		}
		return fmt.Errorf("the sources are not running (streaming %v, %v; watching %v)", streaming, err, files[0].Watching())
	})

	if _, _, err := run.Dispatcher.Enqueue(ctx, dispatch.Event{Project: "p", Type: "sent-email",
		Data: json.RawMessage(`{"to":"user1@email.com"}`), Time: time.Now(), FireAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO users VALUES (1, 'ada@example.com')`); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Every row is processed on its second attempt, the first NACKed.
	var rows []store.EventLog
	waittest.For(t, 20*time.Second, func() error {
		recent, err := run.Store.Recent(ctx, store.Filter{}, 100)
		if err != nil {
			return err
		}
		done := len(recent) == 9
		for _, r := range recent {
			done = done && r.Status == store.StatusProcessed
		}
		if done {
			rows = recent
			return nil
		}
		var got []string
		for _, r := range recent {
			got = append(got, fmt.Sprintf("%s %s attempts %d: %s", r.Trigger, r.Status, r.Attempts, r.Remark))
		}
		return fmt.Errorf("want 9 rows processed, got:\n%s", strings.Join(got, "\n"))
	})

	wantType := map[string]string{"structured": "application/cloudevents+json", "binary": "application/json", "envelope": "application/json"}
	for _, r := range rows {
		mode, _, _ := strings.Cut(r.Trigger, "-")
		h := hooks[mode]
		h.mu.Lock()
		e, ok := h.acked[r.ID.String()]
		tries, ctype := h.tries[r.ID.String()], h.ctype[r.ID.String()]
		h.mu.Unlock()
		if !ok {
			t.Errorf("%s: row %s was not ACKed by its receiver", r.Trigger, r.ID)
			continue
		}
		if r.Attempts != 2 || tries != 2 {
			t.Errorf("%s: %d attempts, the receiver saw %d; want 2 (a NACK, then an ACK)", r.Trigger, r.Attempts, tries)
		}
		if ctype != wantType[mode] {
			t.Errorf("%s: Content-Type %q, want %q", r.Trigger, ctype, wantType[mode])
		}
		wantData := string(r.Payload)
		if wantData == "" {
			wantData = "null"
		}
		if e.SpecVersion() != "1.0" || e.Type() != r.Type || e.Source() != "node-ce" || !e.Time().Equal(r.EventTime) ||
			e.DataContentType() != "application/json" || string(e.Data()) != wantData {
			t.Errorf("%s: the receiver read\n%s\nwant type %s, time %s, data %s", r.Trigger, e, r.Type, r.EventTime, wantData)
		}
	}
	for _, mode := range []string{"structured", "binary", "envelope"} {
		t.Logf("%s: a delivery as sent:\n%s", mode, hooks[mode].dump)
	}
}
