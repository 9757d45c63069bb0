package store_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/triggerd/triggerd/store"
)

// BenchmarkInsert measures group-committed inserts on their own: 32
// goroutines each insert one row at a time and wait for its commit.
func BenchmarkInsert(b *testing.B) {
	st := open(b)
	ctx := context.Background()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			row := staged(time.Now().Add(time.Hour), "")
			if err := st.Insert(ctx, []store.Event{row}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
}
