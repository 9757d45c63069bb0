package store

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// writerMetrics measures the group-committed writer (writer.go).
type writerMetrics struct {
	batchRows prometheus.Histogram
	latency   prometheus.Histogram
}

func newWriterMetrics(reg prometheus.Registerer) *writerMetrics {
	m := &writerMetrics{
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "triggerd_store_batch_rows",
			Help:    "Rows (events, outcomes and file index entries) written by each group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 to 1024
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "triggerd_store_write_seconds",
			Help:    "How long each group commit took, from its first statement to the answer of its commit.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
	}
	reg.MustRegister(m.batchRows, m.latency)
	return m
}

// observe counts one commit of batch that took took.
func (m *writerMetrics) observe(batch []*writeOp, took time.Duration) {
	if m == nil {
		return
	}
	rows := 0
	for _, op := range batch {
		rows += op.size()
	}
	m.batchRows.Observe(float64(rows))
	m.latency.Observe(took.Seconds())
}

// StagedCap bounds the rows the staged and due gauges count: above it,
// both say "at least".
const StagedCap = 100_000

// stagedEvery is how long a reading of the staged and due gauges is kept.
const stagedEvery = 5 * time.Second

// stagedSQL counts staged rows, and those due now, among at most
// StagedCap of them: an index-only scan of event_logs_due, cut short.
const stagedSQL = `
	SELECT count(*), count(*) FILTER (WHERE due_at <= now())
	FROM (SELECT due_at FROM event_logs WHERE status = 'staged' LIMIT $1) s`

// stagedCollector reads the staged and due rows at scrape time, at most
// once per stagedEvery.
type stagedCollector struct {
	s      *Store
	staged *prometheus.Desc
	due    *prometheus.Desc

	mu          sync.Mutex
	read        time.Time
	nStaged, nD int64
	ok          bool
}

func (c *stagedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.staged
	ch <- c.due
}

func (c *stagedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.read) >= stagedEvery {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.s.pool.QueryRow(ctx, stagedSQL, StagedCap).Scan(&c.nStaged, &c.nD)
		cancel()
		c.ok, c.read = err == nil, time.Now()
	}
	if !c.ok {
		return // an outage shows as the series missing, not as 0
	}
	ch <- prometheus.MustNewConstMetric(c.staged, prometheus.GaugeValue, float64(c.nStaged))
	ch <- prometheus.MustNewConstMetric(c.due, prometheus.GaugeValue, float64(c.nD))
}

// registerMetrics registers the store's series on reg: the writer's and
// the staged and due gauges.
func (s *Store) registerMetrics(reg prometheus.Registerer) {
	s.metrics = newWriterMetrics(reg)
	reg.MustRegister(&stagedCollector{
		s: s,
		staged: prometheus.NewDesc("triggerd_events_staged",
			"Rows of event_logs staged (waiting or in flight), in every node's store; counted up to 100000.", nil, nil),
		due: prometheus.NewDesc("triggerd_events_due",
			"Staged rows already due, among those triggerd_events_staged counts; read at most every 5 s.", nil, nil),
	})
}
