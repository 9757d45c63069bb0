package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/api/apitest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
)

// TestTriggersAreLiveAcrossNodes runs two nodes on one store and changes
// triggers while they run through the admin API of node a: a trigger
// created there takes events queued on node b within a second; a changed URL takes effect at the
// next attempt; a deleted trigger's staged rows are cancelled; and a
// DB_INSERT trigger added for a table created after the nodes started
// delivers every insert committed after the trigger was applied.
func TestTriggersAreLiveAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCapture(t)
	failing := nodetest.NewCounter(t, func(_, _ string, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	ok := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {})
	base := fmt.Sprintf("      - {name: base, type: base, url: %q}\n", ok.URL)
	cfgA := withAdmin(t, nodetest.WriteProjectConfig(t, "node-a", c.storeURL, c.schema, c.databases(), base))
	cfgB := withAdmin(t, nodetest.WriteProjectConfig(t, "node-b", c.storeURL, c.schema, c.databases(), base))
	a := nodetest.Start(t, cfgA)
	b := nodetest.Start(t, cfgB)
	c.waitWalsender(30 * time.Second)
	st := nodetest.OpenStore(t, c.storeURL, c.schema)
	admin := login(t, a.Addr)
	apply := func(name, body string) {
		t.Helper()
		if status, answer := admin.do(t, http.MethodPut, "/v1/admin/projects/demo/triggers/"+name, body); status != http.StatusOK && status != http.StatusCreated {
			t.Fatalf("PUT trigger %s: %d %s", name, status, answer)
		}
	}

	// Created: events queued on the other node get a row within a second.
	apply("live", fmt.Sprintf(`{name: live, type: work, url: %q, retries: 5, retry_backoff: {initial: 1s, max: 1s}}`, failing.URL))
	applied := time.Now()
	var first, delivery string // the event's id, and its row's (the CloudEvent id)
	waittest.For(t, 5*time.Second, func() error {
		id := b.Queue(t, `{"type": "work"}`)
		rows := eventRows(t, st, id)
		if len(rows) == 0 {
			return errors.New("node b has not taken the trigger yet")
		}
		first, delivery = id, rows[0].ID.String()
		return nil
	})
	if took := time.Since(applied); took > time.Second {
		t.Errorf("node b took %s to take the new trigger, want at most 1s", took.Round(time.Millisecond))
	}

	// Changed: the retry after the first failed attempt goes to the new URL.
	waittest.For(t, 10*time.Second, func() error {
		if failing.Count(delivery) == 0 {
			return errors.New("no first attempt yet")
		}
		return nil
	})
	apply("live", fmt.Sprintf(`{name: live, type: work, url: %q, retries: 5, retry_backoff: {initial: 1s, max: 1s}}`, ok.URL))
	waittest.For(t, 10*time.Second, func() error {
		rows := eventRows(t, st, first)
		if len(rows) != 1 || rows[0].Status != store.StatusProcessed {
			return fmt.Errorf("rows %+v, want one processed", rows)
		}
		return nil
	})
	if n := failing.Count(delivery); n != 1 || ok.Count(delivery) != 1 {
		t.Errorf("attempts at the old url %d, at the new %d; want 1 and 1", n, ok.Count(delivery))
	}

	// Deleted: a row staged for later is cancelled, and no node delivers it.
	later := a.Queue(t, `{"type": "work", "delay": 3}`)
	if status, answer := admin.do(t, http.MethodDelete, "/v1/admin/projects/demo/triggers/live", ""); status != http.StatusOK || !strings.Contains(answer, `"cancelled":1`) {
		t.Fatalf("delete: %d %s, want 200 and 1 row cancelled", status, answer)
	}
	if rows := eventRows(t, st, later); len(rows) != 1 || rows[0].Status != store.StatusCancelled || rows[0].Remark != store.DeletedRemark {
		t.Fatalf("the deleted trigger's row: %+v", rows)
	}
	waittest.For(t, 5*time.Second, func() error {
		for _, n := range []*nodetest.Child{a, b} {
			id := n.Queue(t, `{"type": "work"}`)
			if rows := eventRows(t, st, id); len(rows) != 0 {
				return fmt.Errorf("node %s still stages rows of the deleted trigger", n.Addr)
			}
		}
		return nil
	})

	// A DB_INSERT trigger for a new table: every insert committed after
	// the trigger is applied is delivered, while a writer inserts all along.
	if _, err := c.db.Exec(ctx, `CREATE TABLE orders (id bigint PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	var after sync.Map // ids whose insert began once the trigger was applied
	var afterCount atomic.Int64
	var since atomic.Bool
	stop := make(chan struct{})
	var writer sync.WaitGroup
	var last atomic.Int64
	writer.Go(func() {
		for id := int64(1); ; id++ {
			select {
			case <-stop:
				return
			default:
			}
			mark := since.Load()
			if _, err := c.db.Exec(ctx, `INSERT INTO orders VALUES ($1)`, id); err != nil {
				t.Errorf("insert %d: %v", id, err)
				return
			}
			if mark {
				after.Store(id, true)
				afterCount.Add(1)
			}
			last.Store(id)
			time.Sleep(2 * time.Millisecond)
		}
	})
	time.Sleep(200 * time.Millisecond) // inserts before the trigger exists
	apply("orders", fmt.Sprintf(`{name: orders, type: DB_INSERT, url: %q, options: {db: app, col: orders}}`, c.hook.URL))
	since.Store(true)
	// At least 50 inserts committed after the trigger was applied, however
	// slow the machine.
	waittest.For(t, 30*time.Second, func() error {
		if n := afterCount.Load(); n < 50 {
			return fmt.Errorf("only %d inserts after the trigger was applied", n)
		}
		return nil
	})
	close(stop)
	writer.Wait()
	var want []int64
	after.Range(func(k, _ any) bool {
		want = append(want, k.(int64))
		return true
	})
	waittest.For(t, 30*time.Second, func() error {
		got := c.hook.byDocCopy()
		missing := 0
		for _, id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of the %d inserts committed after the trigger was applied are not delivered (last id %d)", missing, len(want), last.Load())
		}
		return nil
	})
}

// eventRows returns the rows of the event with the id.
func eventRows(t *testing.T, st *store.Store, id string) []store.EventLog {
	t.Helper()
	batch, err := uuid.Parse(id)
	if err != nil {
		t.Fatalf("event id %q: %v", id, err)
	}
	page, err := st.ListEvents(context.Background(), store.EventQuery{BatchID: batch}, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]store.EventLog, len(page.Events))
	for i, e := range page.Events {
		out[i] = e.EventLog
	}
	return out
}

// The admin section the configs of withAdmin add.
const (
	adminPassword = "admin-test-password"
	adminSecret   = "admin-test-secret-0123456789abcdef"
)

// withAdmin adds an admin section to the config at path, and returns path.
func withAdmin(t *testing.T, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "admin: {user: admin, password: %s, secret: %s}\n", adminPassword, adminSecret); err != nil {
		t.Fatal(err)
	}
	return path
}

// adminClient calls a node's admin API with a token.
type adminClient struct {
	addr, token string
}

// login logs in to the admin API of the node at addr.
func login(t *testing.T, addr string) *adminClient {
	t.Helper()
	c := &adminClient{addr: addr}
	status, answer := c.do(t, http.MethodPost, "/v1/admin/login", fmt.Sprintf(`{"user": "admin", "password": %q}`, adminPassword))
	var tok struct {
		Token string `json:"token"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(answer), &tok) != nil || tok.Token == "" {
		t.Fatalf("login: %d %s", status, answer)
	}
	c.token = tok.Token
	return c
}

// do sends a request with body (none when "") and returns the answer's
// status and body, failing the test unless the admin API's OpenAPI
// document describes the answer.
func (c *adminClient) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+c.addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	apitest.CheckAdminAnswer(t, method, path, resp.StatusCode, answer)
	return resp.StatusCode, string(answer)
}

// TestAdminTriggerRoutes checks the admin API's trigger routes on a real
// node: what they list, how each bad request is answered and that it
// leaves nothing stored, and the audit of the changes made.
func TestAdminTriggerRoutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCapture(t)
	base := "      - {name: base, type: base, url: 'http://u:pw@127.0.0.1:1/x', headers: {X-Key: k}}\n"
	n := nodetest.Start(t, withAdmin(t, nodetest.WriteProjectConfig(t, "node-1", c.storeURL, c.schema, c.databases(), base)))
	st := nodetest.OpenStore(t, c.storeURL, c.schema)
	if status, _ := (&adminClient{addr: n.Addr}).do(t, http.MethodGet, "/v1/admin/triggers", ""); status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d, want 401", status)
	}
	admin := login(t, n.Addr)
	const good = `{name: t1, type: work, url: "http://127.0.0.1:1/t1", headers: {X-Secret: s3cret}}`
	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string // in the answer
	}{
		{"bad retries", http.MethodPut, "/v1/admin/projects/demo/triggers/t1", `{name: t1, type: work, url: "http://h/", retries: 101}`,
			400, `"field":"retries"`},
		{"same message as the config", http.MethodPut, "/v1/admin/projects/demo/triggers/t1", `{"name": "t1", "type": "work", "url": "http://h/", "retries": 101}`,
			400, "must be 0 to 100, got 101"},
		{"unknown key", http.MethodPut, "/v1/admin/projects/demo/triggers/t1", `{name: t1, type: work, url: "http://h/", retrys: 1}`,
			400, `unknown key \"retrys\"`},
		{"not yaml", http.MethodPut, "/v1/admin/projects/demo/triggers/t1", `{name: [`, 400, "YAML syntax"},
		{"empty body", http.MethodPut, "/v1/admin/projects/demo/triggers/t1", ``, 400, "the trigger is empty"},
		{"name differs from the path", http.MethodPut, "/v1/admin/projects/demo/triggers/t2", good, 400, `"field":"name"`},
		{"missing table", http.MethodPut, "/v1/admin/projects/demo/triggers/t1", `{name: t1, type: DB_INSERT, url: "http://h/", options: {db: app, col: missing}}`,
			400, "table missing does not exist"},
		{"a config trigger's name", http.MethodPut, "/v1/admin/projects/demo/triggers/base", `{name: base, type: work, url: "http://h/"}`, 409, "config file"},
		{"unknown project", http.MethodPut, "/v1/admin/projects/nope/triggers/t1", good, 404, "no project"},
		{"delete a config trigger", http.MethodDelete, "/v1/admin/projects/demo/triggers/base", "", 409, "config file"},
		{"delete an unknown trigger", http.MethodDelete, "/v1/admin/projects/demo/triggers/t1", "", 404, "no trigger"},
		{"get an unknown trigger", http.MethodGet, "/v1/admin/projects/demo/triggers/t1", "", 404, "no trigger"},
	}
	for _, cs := range cases {
		status, answer := admin.do(t, cs.method, cs.path, cs.body)
		if status != cs.status || !strings.Contains(answer, cs.want) {
			t.Errorf("%s: %d %s, want %d and %q", cs.name, status, answer, cs.status, cs.want)
		}
	}
	if stored, err := st.Triggers(ctx); err != nil || len(stored) != 0 {
		t.Fatalf("refused changes stored %+v (%v)", stored, err)
	}

	for _, want := range []int{http.StatusCreated, http.StatusOK} {
		if status, answer := admin.do(t, http.MethodPut, "/v1/admin/projects/demo/triggers/t1", good); status != want {
			t.Fatalf("PUT t1: %d %s, want %d", status, answer, want)
		}
	}
	status, answer := admin.do(t, http.MethodGet, "/v1/admin/projects/demo/triggers", "")
	var list struct {
		Triggers []struct {
			Name      string `json:"name"`
			DefinedIn string `json:"defined_in"`
			UpdatedBy string `json:"updated_by"`
			Trigger   struct {
				URL     string            `json:"url"`
				Headers map[string]string `json:"headers"`
			} `json:"trigger"`
		} `json:"triggers"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(answer), &list) != nil || len(list.Triggers) != 2 {
		t.Fatalf("list: %d %s", status, answer)
	}
	if b, t1 := list.Triggers[0], list.Triggers[1]; b.Name != "base" || b.DefinedIn != "config" || t1.Name != "t1" || t1.DefinedIn != "store" || t1.UpdatedBy != "admin" {
		t.Errorf("list: %s", answer)
	}
	if strings.Contains(answer, "s3cret") || strings.Contains(answer, "pw@") || strings.Contains(answer, `"k"`) {
		t.Errorf("the list shows secrets: %s", answer)
	}
	if status, answer := admin.do(t, http.MethodDelete, "/v1/admin/projects/demo/triggers/t1", ""); status != http.StatusOK {
		t.Fatalf("delete: %d %s", status, answer)
	}
	changes, err := st.TriggerAudit(ctx, "demo", "t1")
	if err != nil || len(changes) != 3 {
		t.Fatalf("audit: %+v %v", changes, err)
	}
	for i, action := range []string{store.ActionCreate, store.ActionUpdate, store.ActionDelete} {
		if changes[i].Action != action || changes[i].Actor != "admin" {
			t.Errorf("audit entry %d: %s by %s, want %s by admin", i, changes[i].Action, changes[i].Actor, action)
		}
	}
}
