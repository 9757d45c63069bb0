package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// TestAttemptLogRendersTheBodySent checks that the log of attempts, which
// keeps each attempt's format rather than a copy of its body, gives back
// the exact bytes the webhook received, in every format: for a first
// attempt made from memory, with an event time in nanoseconds, and for a
// retry made from the row read back from the store.
func TestAttemptLogRendersTheBodySent(t *testing.T) {
	t.Parallel()
	for _, format := range []config.Format{config.FormatStructured, config.FormatEnvelope, config.FormatBinary} {
		t.Run(string(format), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			})
			n := e.start("node-a", trigger("t", "x", h.URL, "format: "+string(format)+", retries: 1, retry_backoff: {initial: 50ms}"), dispatch.Options{Poll: 50 * time.Millisecond})
			at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
			data := json.RawMessage(`{"to": "user1@email.com", "n": [1, 2.50]}`)
			id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x", Data: data, Time: at, FireAt: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			sent := [][]byte{h.next(t, 5*time.Second).body, h.next(t, 5*time.Second).body}
			row := n.waitStatus(t, id, store.StatusProcessed, 5*time.Second)[0]
			got, err := n.st.Event(context.Background(), row.ID)
			if err != nil || len(got.Invocations) != 2 {
				t.Fatalf("event %+v: %v; want 2 attempts", got, err)
			}
			for i, in := range got.Invocations {
				body, err := dispatch.AttemptBody(&got.EventLog, &in)
				if err != nil || !bytes.Equal(body, sent[i]) {
					t.Errorf("attempt %d: the log renders %s (%v), the webhook got %s", i+1, body, err, sent[i])
				}
				if in.RequestFormat != string(format) || len(in.RequestBody) != 0 {
					t.Errorf("attempt %d logged format %q and %d bytes of body; want %q and no copy", i+1, in.RequestFormat, len(in.RequestBody), format)
				}
			}
			if format != config.FormatBinary && !bytes.Contains(sent[0], []byte(`"time":"2026-01-02T03:04:05.123456Z"`)) {
				t.Errorf("sent %s: want the event's time to the microsecond, as the log keeps it", sent[0])
			}
		})
	}
}

// TestAttemptBodyOfAnOlderAttempt checks that an attempt logged with a
// copy of its body, as before attempts logged their format, shows that copy.
func TestAttemptBodyOfAnOlderAttempt(t *testing.T) {
	row := store.EventLog{Type: "x", Payload: json.RawMessage(`{}`)}
	in := store.Invocation{NodeID: "n", RequestBody: []byte(`{"kept":"as sent"}`)}
	if body, err := dispatch.AttemptBody(&row, &in); err != nil || string(body) != `{"kept":"as sent"}` {
		t.Errorf("body %s, %v: want the copy", body, err)
	}
}
