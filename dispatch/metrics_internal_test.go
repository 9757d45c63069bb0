package dispatch

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/triggerd/triggerd/store"
)

// BenchmarkMetricsPerEvent measures what the metrics add to one event
// delivered at the first try: its row counted as staged, and its outcome
// and the attempt's duration counted as recorded.
func BenchmarkMetricsPerEvent(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry())
	rows := []store.EventLog{{ID: uuid.New(), Project: "demo", Trigger: "bench", Type: "bench"}}
	out := store.Outcome{Status: store.StatusProcessed}
	b.ReportAllocs()
	for b.Loop() {
		m.stagedRows(rows, nil, sourceCustom)
		m.outcome(&rows[0], &out, time.Millisecond)
	}
}
