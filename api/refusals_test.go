package api_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
)

// TestEventsTheStoreRefusesAre400s has the store refuse an event's data
// for a reason no retry changes (a check constraint here): the client is
// told, with a 400, that sending it again will not help, and nothing of the
// store is named; the log has the reason.
func TestEventsTheStoreRefusesAre400s(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	if _, err := f.db(t).Exec(context.Background(),
		`ALTER TABLE event_logs ADD CONSTRAINT no_poison CHECK (payload::text NOT LIKE '%poison%')`); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"type":"open","data":"poison"}`, `{"type":"open","data":"poison","isSynchronous":true}`} {
		status, out := f.post(t, queue, body, "")
		msg, _ := out["error"].(string)
		if status != 400 || !strings.Contains(msg, "will not help") || strings.Contains(msg, "no_poison") {
			t.Errorf("%s: %d %v, want 400 saying a retry will not help, without the store's error", body, status, out)
		}
	}
	if n := f.count(t); n != 0 {
		t.Errorf("refused events left %d rows", n)
	}
	if !strings.Contains(f.log.String(), "no_poison") {
		t.Errorf("the log lacks the store's reason:\n%s", f.log.String())
	}
	if status, out := f.post(t, queue, `{"type":"open","data":"fine"}`, ""); status != 200 {
		t.Errorf("an event the store takes: %d %v", status, out)
	}
}

// TestFailedSyncCallsDoNotNameTheWebhook: a synchronous caller whose
// webhook cannot be reached learns that, not the webhook's address.
func TestFailedSyncCallsDoNotNameTheWebhook(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	f := demoNode(t, "{default: allow}", fmt.Sprintf(`- {name: gone, type: gone, url: "http://%s/internal/hook", retries: 0}`, addr))
	status, out := f.post(t, queue, `{"type":"gone","isSynchronous":true}`, "")
	msg, _ := out["error"].(string)
	if status != 502 || !strings.Contains(msg, "could not be reached") || strings.Contains(msg, addr) || strings.Contains(msg, "internal/hook") {
		t.Fatalf("sync call to a webhook nothing listens on: %d %v, want 502 saying it could not be reached, without its address", status, out)
	}
}
