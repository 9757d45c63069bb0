package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/triggerd/triggerd/dispatch"
)

// BenchmarkScheduledLateness schedules events 200 ms ahead, 1,000 a
// second, and reports how late each reached the webhook after its time:
// p50, p99 and the worst. The periodic poll is the production default (1 s),
// so lateness under it shows that due rows are attempted by timers, not
// found by the poll. Run it with a fixed count, e.g. -benchtime 5000x.
func BenchmarkScheduledLateness(b *testing.B) {
	const (
		lead     = 200 * time.Millisecond
		interval = time.Millisecond
	)
	e := newEnv(b)
	var mu sync.Mutex
	late := make([]time.Duration, 0, b.N)
	arrived := make(chan struct{}, b.N)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		var ev struct {
			Data struct {
				FireAt int64 `json:"fire_at"`
			} `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			b.Errorf("receiver: %v", err)
		}
		mu.Lock()
		late = append(late, at.Sub(time.Unix(0, ev.Data.FireAt)))
		mu.Unlock()
		arrived <- struct{}{}
	}))
	b.Cleanup(recv.Close)
	n := e.start("a", trigger("t", "x", recv.URL, ""), dispatch.Options{Poll: time.Second})
	ctx := context.Background()

	b.ResetTimer()
	next := time.Now()
	for range b.N {
		fire := time.Now().Add(lead)
		data := json.RawMessage(fmt.Sprintf(`{"fire_at":%d}`, fire.UnixNano()))
		if _, _, err := n.d.Enqueue(ctx, dispatch.Event{Project: "p", Type: "x", Data: data, FireAt: fire}); err != nil {
			b.Fatal(err)
		}
		next = next.Add(interval)
		time.Sleep(time.Until(next))
	}
	timeout := time.After(lead + 30*time.Second)
	for range b.N {
		select {
		case <-arrived:
		case <-timeout:
			b.Fatalf("only %d of %d scheduled events arrived", len(late), b.N)
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(late)
	pct := func(p float64) float64 {
		return float64(late[int(p*float64(len(late)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.5), "late-p50-ms")
	b.ReportMetric(pct(0.99), "late-p99-ms")
	b.ReportMetric(pct(1), "late-max-ms")
}
