package store_test

import (
	"context"
	"fmt"
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
			if err := st.Insert(ctx, []store.EventLog{row}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkApplyFiles measures the file source's writes: each op puts 1,000
// new paths in the index with one event row each, in one call.
func BenchmarkApplyFiles(b *testing.B) {
	st := open(b)
	ctx := context.Background()
	const perCall = 1000
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		changes := make([]store.IndexChange, perCall)
		for j := range changes {
			changes[j] = store.IndexChange{
				Entry:  store.FileEntry{Path: fmt.Sprintf("d%d/f%d", i, j), Type: store.FileTypeFile, Size: 100, Modified: start},
				Events: []store.EventLog{staged(time.Now().Add(time.Hour), "")},
			}
		}
		if _, err := st.ApplyFiles(ctx, "p", "up", changes); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*perCall)/time.Since(start).Seconds(), "files/s")
}
