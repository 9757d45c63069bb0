package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/internal/waittest"
)

// adminEvent is an event as the admin API answers it, for the fields the
// tests look at.
type adminEvent = map[string]any

// events lists events with the query given.
func (f *fixture) events(t *testing.T, token, query string) ([]adminEvent, any) {
	t.Helper()
	status, out := f.do(t, http.MethodGet, "/v1/admin/events?"+query, "", token)
	list, ok := out["events"].([]any)
	if status != 200 || !ok {
		t.Fatalf("GET /v1/admin/events?%s: %d %v", query, status, out)
	}
	evs := make([]adminEvent, len(list))
	for i, e := range list {
		evs[i] = e.(map[string]any)
	}
	return evs, out["next_cursor"]
}

// rowOf waits until the event queued as batch has one row in status, and
// returns it as the admin API lists it.
func (f *fixture) rowOf(t *testing.T, token string, batch any, status string) adminEvent {
	t.Helper()
	var row adminEvent
	waittest.For(t, 10*time.Second, func() error {
		evs, _ := f.events(t, token, "batch_id="+fmt.Sprint(batch))
		if len(evs) == 1 && evs[0]["status"] == status {
			row = evs[0]
			return nil
		}
		return fmt.Errorf("the rows of event %v: %v, want one %s", batch, evs, status)
	})
	return row
}

// attemptNumbers lists the attempt numbers of an event's attempts.
func attemptNumbers(e adminEvent) []int {
	var out []int
	for _, a := range e["attempts"].([]any) {
		out = append(out, int(a.(map[string]any)["attempt"].(float64)))
	}
	return out
}

// queueOK queues an event through the public API and returns its id.
func (f *fixture) queueOK(t *testing.T, body string) any {
	t.Helper()
	status, out := f.post(t, queue, body, "")
	if status != 200 {
		t.Fatalf("queue %s: %d %v", body, status, out)
	}
	return out["id"]
}

// TestAdminListsEvents lists events with their attempts, pages through
// them, reads one, and refuses each bad filter naming it.
func TestAdminListsEvents(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	var batches []any
	for i := range 3 {
		batches = append(batches, f.queueOK(t, fmt.Sprintf(`{"type":"open","data":{"n":%d}}`, i)))
	}
	for _, b := range batches {
		f.rowOf(t, token, b, "processed")
	}
	evs, next := f.events(t, token, "project=demo&trigger=open&status=processed")
	if len(evs) != 3 || next != nil {
		t.Fatalf("3 processed events of open: %d, next cursor %v", len(evs), next)
	}
	for i, e := range evs {
		if e["batch_id"] != batches[2-i] || fmt.Sprint(e["data"]) != fmt.Sprintf("map[n:%d]", 2-i) || fmt.Sprint(attemptNumbers(e)) != "[1]" ||
			e["attempt_count"] != 1.0 || e["trigger"] != "open" {
			t.Errorf("event %d of the list, newest first: %v", i, e)
		}
	}

	// One at a time, with the cursor.
	var seen []any
	query := "type=open&limit=1"
	for range 4 {
		page, next := f.events(t, token, query)
		for _, e := range page {
			seen = append(seen, e["batch_id"])
		}
		if next == nil {
			break
		}
		query = "type=open&limit=1&cursor=" + url.QueryEscape(fmt.Sprint(next))
	}
	if fmt.Sprint(seen) != fmt.Sprint([]any{batches[2], batches[1], batches[0]}) {
		t.Fatalf("pages of one: %v, want %v", seen, []any{batches[2], batches[1], batches[0]})
	}

	status, one := f.do(t, http.MethodGet, "/v1/admin/events/"+fmt.Sprint(evs[0]["id"]), "", token)
	attempts, _ := one["attempts"].([]any)
	if status != 200 || len(attempts) != 1 || !strings.Contains(fmt.Sprint(attempts[0].(map[string]any)["request_body"]), `"n":2`) ||
		!strings.Contains(fmt.Sprint(attempts[0].(map[string]any)["response_body"]), "echo") {
		t.Fatalf("one event: %d %v", status, one)
	}

	cases := []struct {
		path   string
		status int
		want   string
	}{
		{"/v1/admin/events/01a211bf-dcad-7096-8be2-560a397d449c", 404, "no event 01a211bf-dcad-7096-8be2-560a397d449c"},
		{"/v1/admin/events/nope", 400, `"nope" is not an event id`},
		{"/v1/admin/events?status=done", 400, `status: "done" is not a status: use staged, processed, failed or cancelled`},
		{"/v1/admin/events?since=yesterday", 400, `since: "yesterday" is not a time: write RFC 3339`},
		{"/v1/admin/events?since=2026-11-30T10:00:00Z&until=2026-11-30T09:00:00Z", 400, "until must be after since"},
		{"/v1/admin/events?id=123", 400, `id: "123" is not an event id`},
		{"/v1/admin/events?batch_id=x", 400, `batch_id: "x" is not an event id`},
		{"/v1/admin/events?limit=0", 400, `limit: "0" is not a page size: use a whole number from 1 to 500`},
		{"/v1/admin/events?limit=many", 400, `limit: "many" is not a page size`},
		{"/v1/admin/events?cursor=!!", 400, `cursor: "!!" is not a cursor this API gave`},
		{"/v1/admin/events?cursor=AAAA", 400, `cursor: "AAAA" is not a cursor this API gave`},
		{"/v1/admin/events?trigger=a&trigger=b", 400, `parameter "trigger" appears 2 times: give it once`},
		{"/v1/admin/events?state=failed", 400, `unknown parameter "state": this takes project, type, trigger, status, since, until, id, batch_id, remark, limit, cursor`},
		{"/v1/admin/events?remark=" + strings.Repeat("x", 201), 400, "remark: look for at most 200 bytes of text"},
	}
	for _, c := range cases {
		status, out := f.do(t, http.MethodGet, c.path, "", token)
		if msg, _ := out["error"].(string); status != c.status || !strings.Contains(msg, c.want) {
			t.Errorf("GET %s: %d %v, want %d containing %q", c.path, status, out, c.status, c.want)
		}
	}
	if status, out := f.do(t, http.MethodGet, "/v1/admin/events", "", ""); status != 401 {
		t.Errorf("the list without a token: %d %v, want 401", status, out)
	}
}

// TestAdminRedeliverGivesAFreshBudget redelivers a failed event: it is
// attempted again as often as its trigger's retries allow, its attempts
// numbered after the old ones.
func TestAdminRedeliverGivesAFreshBudget(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	batch := f.queueOK(t, `{"type":"broken"}`) // retries: 1
	row := f.rowOf(t, token, batch, "failed")
	if fmt.Sprint(attemptNumbers(row)) != "[1 2]" {
		t.Fatalf("before the redelivery: attempts %v, want [1 2]", attemptNumbers(row))
	}
	path := "/v1/admin/events/" + fmt.Sprint(row["id"]) + "/redeliver"
	if status, out := f.post(t, path, "", token); status != 200 || out["redelivered"] != 1.0 {
		t.Fatalf("redeliver: %d %v", status, out)
	}
	waittest.For(t, 10*time.Second, func() error {
		_, e := f.do(t, http.MethodGet, "/v1/admin/events/"+fmt.Sprint(row["id"]), "", token)
		if e["status"] == "failed" && fmt.Sprint(attemptNumbers(e)) == "[1 2 3 4]" && e["retry_base"] == 2.0 && e["attempt_count"] == 4.0 {
			return nil
		}
		return fmt.Errorf("after the redelivery: %s, attempts %v, retry_base %v; want failed, [1 2 3 4], 2", e["status"], attemptNumbers(e), e["retry_base"])
	})

	// A staged event is not redelivered; an unknown one is not found.
	scheduled := f.queueOK(t, `{"type":"open","delay":3600}`)
	staged := f.rowOf(t, token, scheduled, "staged")
	status, out := f.post(t, "/v1/admin/events/"+fmt.Sprint(staged["id"])+"/redeliver", "", token)
	if msg, _ := out["error"].(string); status != 409 || !strings.Contains(msg, "is staged already") {
		t.Fatalf("redeliver a staged event: %d %v, want 409", status, out)
	}
	if status, out := f.post(t, "/v1/admin/events/01a211bf-dcad-7096-8be2-560a397d449c/redeliver", "", token); status != 404 {
		t.Fatalf("redeliver an unknown event: %d %v, want 404", status, out)
	}
}

// TestAdminBulkChanges redelivers and cancels the events matching a
// filter, and refuses bad filters naming them.
func TestAdminBulkChanges(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	var broken, later []any
	for range 3 {
		broken = append(broken, f.queueOK(t, `{"type":"broken"}`))
		later = append(later, f.queueOK(t, `{"type":"open","delay":3600}`))
	}
	for _, b := range broken {
		f.rowOf(t, token, b, "failed")
	}
	// A dry run counts, and changes nothing.
	for _, c := range []struct{ path, body, want string }{
		{"/v1/admin/events/redeliver", `{"trigger":"broken","status":"failed","dry_run":true}`, "3"},
		{"/v1/admin/events/redeliver", `{"trigger":"open","dry_run":true}`, "0"},
		{"/v1/admin/events/cancel", `{"project":"demo","dry_run":true}`, "3"},
	} {
		if status, out := f.post(t, c.path, c.body, token); status != 200 || fmt.Sprint(out["matching"]) != c.want {
			t.Errorf("POST %s %s: %d %v, want matching %s", c.path, c.body, status, out, c.want)
		}
	}
	for _, b := range broken {
		f.rowOf(t, token, b, "failed")
	}
	for _, b := range later {
		f.rowOf(t, token, b, "staged")
	}
	status, out := f.post(t, "/v1/admin/events/redeliver", `{"trigger":"broken","status":"failed"}`, token)
	if status != 200 || out["redelivered"] != 3.0 {
		t.Fatalf("redeliver the failed events of broken: %d %v", status, out)
	}
	for _, b := range broken {
		if row := f.rowOf(t, token, b, "failed"); fmt.Sprint(attemptNumbers(row)) != "[1 2 3 4]" {
			t.Errorf("a redelivered event's attempts: %v, want [1 2 3 4]", attemptNumbers(row))
		}
	}
	status, out = f.post(t, "/v1/admin/events/cancel", `{"project":"demo"}`, token)
	if status != 200 || out["cancelled"] != 3.0 {
		t.Fatalf("cancel the staged events of demo: %d %v", status, out)
	}
	for _, b := range later {
		if row := f.rowOf(t, token, b, "cancelled"); row["remark"] != "cancelled by ops" {
			t.Errorf("a cancelled event's remark: %v", row["remark"])
		}
	}
	failedRow := f.rowOf(t, token, broken[0], "failed")
	status, out = f.post(t, "/v1/admin/events/"+fmt.Sprint(failedRow["id"])+"/cancel", "", token)
	if msg, _ := out["error"].(string); status != 409 || !strings.Contains(msg, "is failed: only staged events can be cancelled") {
		t.Fatalf("cancel a failed event: %d %v, want 409", status, out)
	}

	for _, c := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/admin/events/redeliver", `{}`, 400, "give at least one filter (project, type, trigger, status, since, until, id, batch_id, remark)"},
		{"/v1/admin/events/redeliver", `{"status":"staged"}`, 400, "status: staged events are delivered already"},
		{"/v1/admin/events/cancel", `{"status":"failed"}`, 400, "status: only staged events can be cancelled, not failed ones"},
		{"/v1/admin/events/redeliver", `{"trigger":5}`, 400, "trigger must be a string, not a JSON number"},
		{"/v1/admin/events/redeliver", `{"trigger":"broken","state":"failed"}`, 400, `unknown field "state": the body takes project, type, trigger, status, since, until, id, batch_id, remark`},
		{"/v1/admin/events/redeliver", `{"trigger":"broken"`, 400, "the body is not a JSON object"},
		{"/v1/admin/events/cancel", `{"since":"now"}`, 400, `since: "now" is not a time`},
		{"/v1/admin/events/cancel", `{"remark":"` + strings.Repeat("x", 5000) + `"}`, 413, "body is larger than the 4096-byte limit"},
		{"/v1/admin/events/01a211bf-dcad-7096-8be2-560a397d449c/cancel", ``, 404, "no event 01a211bf-dcad-7096-8be2-560a397d449c"},
		{"/v1/admin/events/nope/cancel", ``, 400, `"nope" is not an event id`},
	} {
		status, out := f.post(t, c.path, c.body, token)
		if msg, _ := out["error"].(string); status != c.status || !strings.Contains(msg, c.want) {
			t.Errorf("POST %s %s: %d %v, want %d containing %q", c.path, c.body, status, out, c.status, c.want)
		}
	}
}

// TestAdminCancelInFlight cancels an event whose attempt is in flight: the
// attempt finishes and is logged, and the event stays cancelled.
func TestAdminCancelInFlight(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	batch := f.queueOK(t, `{"type":"slow"}`) // the webhook answers after 2s
	waittest.For(t, 5*time.Second, func() error {
		if f.hooks.Load() == 0 {
			return fmt.Errorf("the slow attempt has not reached the webhook")
		}
		return nil
	})
	row := f.rowOf(t, token, batch, "staged")
	if status, out := f.post(t, "/v1/admin/events/"+fmt.Sprint(row["id"])+"/cancel", "", token); status != 200 || out["cancelled"] != 1.0 {
		t.Fatalf("cancel the event in flight: %d %v", status, out)
	}
	waittest.For(t, 10*time.Second, func() error {
		_, e := f.do(t, http.MethodGet, "/v1/admin/events/"+fmt.Sprint(row["id"]), "", token)
		if e["status"] == "cancelled" && fmt.Sprint(attemptNumbers(e)) == "[1]" {
			return nil
		}
		return fmt.Errorf("the cancelled event: %s, attempts %v; want cancelled with its attempt logged", e["status"], attemptNumbers(e))
	})
	time.Sleep(200 * time.Millisecond) // an outcome applied late would show now
	if _, e := f.do(t, http.MethodGet, "/v1/admin/events/"+fmt.Sprint(row["id"]), "", token); e["status"] != "cancelled" {
		t.Fatalf("after its attempt the event is %s, want cancelled", e["status"])
	}
}

// TestAdminTriggersEvents queues custom events through the admin API, with
// the queue's answers, whatever the type's rule.
func TestAdminTriggersEvents(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	const path = "/v1/admin/projects/demo/events"
	status, out := f.post(t, path, `{"type":"closed","data":{"a":1}}`, token) // rule deny
	if status != 200 || out["id"] == nil {
		t.Fatalf("trigger a denied type: %d %v", status, out)
	}
	f.rowOf(t, token, out["id"], "processed")
	status, out = f.post(t, path, `{"type":"authed","data":{"b":2},"isSynchronous":true}`, token) // rule authenticated
	if status != 200 || fmt.Sprint(out["result"]) != "map[echo:map[b:2]]" {
		t.Fatalf("trigger synchronously: %d %v", status, out)
	}
	for _, c := range []struct {
		path, body, token string
		status            int
		want              string
	}{
		{path, `{"type":"broken","isSynchronous":true}`, token, 502, "webhook broke"},
		{path, `{"type":"nobody","isSynchronous":true}`, token, 404, `no trigger of project demo handles events of type "nobody"`},
		{path, `{"type":"DB_INSERT"}`, token, 400, "is reserved for database and file events"},
		{path, `{"type":"open","extra":1}`, token, 400, `unknown field "extra"`},
		{path, `{"type":"open"}`, "", 401, "the admin API needs a token"},
		{path, `{"type":"open"}`, bearer(t, secret, "k1", time.Now().Add(time.Minute)), 401, "not an admin token"},
		{"/v1/admin/projects/nope/events", `{"type":"open"}`, token, 404, `unknown project "nope"`},
	} {
		status, out := f.post(t, c.path, c.body, c.token)
		msg := fmt.Sprint(out["error"])
		if status != c.status || !strings.Contains(msg, c.want) {
			t.Errorf("POST %s %s: %d %v, want %d containing %q", c.path, c.body, status, out, c.status, c.want)
		}
	}
}

// TestAdminCounts counts events by trigger and status.
func TestAdminCounts(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	f.rowOf(t, token, f.queueOK(t, `{"type":"open"}`), "processed")
	f.rowOf(t, token, f.queueOK(t, `{"type":"open","delay":3600}`), "staged")
	status, out := f.do(t, http.MethodGet, "/v1/admin/counts?project=demo", "", token)
	triggers, _ := out["triggers"].([]any)
	if status != 200 || len(triggers) != 5 || out["since"] == nil {
		t.Fatalf("counts: %d %v, want the 5 triggers of demo", status, out)
	}
	for _, tr := range triggers {
		c := tr.(map[string]any)
		want := "map[cancelled:0 failed:0 processed:0 project:demo staged:0 trigger:" + fmt.Sprint(c["trigger"]) + "]"
		if c["trigger"] == "open" {
			want = "map[cancelled:0 failed:0 processed:1 project:demo staged:1 trigger:open]"
		}
		if fmt.Sprint(c) != want {
			t.Errorf("counts of %v: %v, want %s", c["trigger"], c, want)
		}
	}
	// Only the statuses asked for; the others read 0.
	f.rowOf(t, token, f.queueOK(t, `{"type":"broken"}`), "failed")
	for _, c := range []struct{ query, open, broken string }{
		{"status=staged,failed", "processed:0 project:demo staged:1", "failed:1"},
		{"status=processed", "processed:1 project:demo staged:0", "failed:0"},
		{"status=failed", "processed:0 project:demo staged:0", "failed:1"},
	} {
		status, out := f.do(t, http.MethodGet, "/v1/admin/counts?project=demo&"+c.query, "", token)
		if status != 200 {
			t.Fatalf("counts?%s: %d %v", c.query, status, out)
		}
		for _, tr := range out["triggers"].([]any) {
			got, want := fmt.Sprint(tr), map[any]string{"open": c.open, "broken": c.broken}[tr.(map[string]any)["trigger"]]
			if !strings.Contains(got, want) {
				t.Errorf("counts?%s: %s, want %s", c.query, got, want)
			}
		}
	}
	if status, out := f.do(t, http.MethodGet, "/v1/admin/counts?status=staged,done", "", token); status != 400 ||
		!strings.Contains(fmt.Sprint(out["error"]), `status: "done" is not a status`) {
		t.Errorf("counts of a status that is none: %d %v", status, out)
	}
	if status, out := f.do(t, http.MethodGet, "/v1/admin/counts?since=all", "", token); status != 200 || out["since"] != nil {
		t.Errorf("counts of all time: %d %v", status, out)
	}
	if status, out := f.do(t, http.MethodGet, "/v1/admin/counts?since=last-week", "", token); status != 400 ||
		!strings.Contains(fmt.Sprint(out["error"]), `since: "last-week" is not a time`) {
		t.Errorf("counts with a bad since: %d %v", status, out)
	}
}

// TestAdminNodes lists the nodes of the store: alive while their last
// heartbeat is recent.
func TestAdminNodes(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	ctx := context.Background()
	if err := f.st.Heartbeat(ctx, "api-test", "v1", time.Now(), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db(t).Exec(ctx, `INSERT INTO nodes VALUES ('gone', 'v0', now() - interval '1 hour', now() - interval '1 minute', 0)`); err != nil {
		t.Fatal(err)
	}
	status, out := f.do(t, http.MethodGet, "/v1/admin/nodes", "", token)
	nodes, _ := out["nodes"].([]any)
	if status != 200 || len(nodes) != 2 {
		t.Fatalf("nodes: %d %v", status, out)
	}
	for _, n := range nodes {
		n := n.(map[string]any)
		if want := n["id"] == "api-test"; n["alive"] != want || (want && n["rows_held"] != 2.0) {
			t.Errorf("node %v: alive %v, want %v", n["id"], n["alive"], want)
		}
	}
}
