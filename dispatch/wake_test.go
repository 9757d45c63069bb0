package dispatch_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// TestRedeliveredRowsWakeEveryNode fails a row on node a, stops a, and
// redelivers the row through the store, as the admin API does on any
// node: node b, whose lanes poll only every minute, delivers it at once.
func TestRedeliveredRowsWakeEveryNode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := newHook(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			http.Error(w, "not yet", http.StatusInternalServerError)
		}
	})
	triggers := trigger("t", "x", h.URL, "retries: 0")
	a := e.start("a", triggers, dispatch.Options{Poll: time.Minute})
	b := e.start("b", triggers, dispatch.Options{Poll: time.Minute})
	id, _, err := a.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x"})
	if err != nil {
		t.Fatal(err)
	}
	a.waitStatus(t, id, store.StatusFailed, 10*time.Second)
	if err := a.shutdown(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // b's lanes have polled at start; the next poll is a minute away
	start := time.Now()
	done, err := b.st.Redeliver(context.Background(), store.EventQuery{Project: "p", Trigger: "t"}, "redelivered by test")
	if err != nil || done.Rows != 1 {
		t.Fatalf("redeliver: %+v, %v", done, err)
	}
	h.next(t, 10*time.Second) // the failed attempt
	got := h.next(t, 5*time.Second)
	if took := got.at.Sub(start); took > 10*time.Second {
		t.Fatalf("the redelivered row reached the webhook %s after the redelivery, want well within b's poll of a minute", took)
	}
	b.waitStatus(t, id, store.StatusProcessed, 5*time.Second)
}
