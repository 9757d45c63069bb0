package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAdminPurge purges events by status and filter: the failed ones
// first, then every outcome; staged events stay, and so do events whose
// outcome came after the time given. Each bad body is refused, naming
// what is wrong, and the route needs an admin token.
func TestAdminPurge(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	var broken, done, later []any
	for range 3 {
		broken = append(broken, f.queueOK(t, `{"type":"broken"}`))
		done = append(done, f.queueOK(t, `{"type":"open"}`))
		later = append(later, f.queueOK(t, `{"type":"open","delay":3600}`))
	}
	for i := range 3 {
		f.rowOf(t, token, broken[i], "failed")
		f.rowOf(t, token, done[i], "processed")
	}
	before := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	gone := func(batches []any) {
		t.Helper()
		for _, b := range batches {
			if evs, _ := f.events(t, token, "batch_id="+fmt.Sprint(b)); len(evs) != 0 {
				t.Errorf("event %v is still listed after its purge: %v", b, evs)
			}
		}
	}
	// Nothing reached its outcome an hour ago.
	status, out := f.post(t, "/v1/admin/events/purge", `{"before":"`+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)+`"}`, token)
	if status != 200 || out["purged"] != 0.0 {
		t.Fatalf("purge before an hour ago: %d %v, want 0 purged", status, out)
	}
	status, out = f.post(t, "/v1/admin/events/purge", `{"before":"`+before+`","statuses":["failed"],"project":"demo"}`, token)
	if status != 200 || out["purged"] != 3.0 {
		t.Fatalf("purge the failed events: %d %v, want 3 purged", status, out)
	}
	gone(broken)
	for _, b := range done {
		f.rowOf(t, token, b, "processed")
	}
	status, out = f.post(t, "/v1/admin/events/purge", `{"before":"`+before+`"}`, token)
	if status != 200 || out["purged"] != 3.0 {
		t.Fatalf("purge every outcome: %d %v, want 3 purged", status, out)
	}
	gone(done)
	for _, b := range later {
		f.rowOf(t, token, b, "staged")
	}

	for _, c := range []struct {
		body, want string
		status     int
	}{
		{`{}`, "before is required", 400},
		{`{"statuses":["failed"]}`, "before is required", 400},
		{`{"before":"yesterday"}`, `before: "yesterday" is not a time: write RFC 3339`, 400},
		{`{"before":"` + before + `","statuses":["staged"]}`, "statuses: staged events are never purged", 400},
		{`{"before":"` + before + `","statuses":["done"]}`, `statuses: "done" is not a status: use processed, failed or cancelled`, 400},
		{`{"before":"` + before + `","status":"failed"}`, `unknown field "status"`, 400},
	} {
		status, out := f.post(t, "/v1/admin/events/purge", c.body, token)
		if msg, _ := out["error"].(string); status != c.status || !strings.Contains(msg, c.want) {
			t.Errorf("POST purge %s: %d %v, want %d containing %q", c.body, status, out, c.status, c.want)
		}
	}
	if status, out := f.post(t, "/v1/admin/events/purge", `{"before":"`+before+`"}`, ""); status != 401 {
		t.Errorf("purge without a token: %d %v, want 401", status, out)
	}
	for _, b := range later {
		f.rowOf(t, token, b, "staged")
	}
}
