package node

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newRegistry is a node's own registry of series, with the process's and
// Go runtime's; the store, the dispatcher, the API and the sources add
// theirs. Each node has its own, so that two nodes in one process (as in
// tests) never share a series.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return reg
}

// metricsHandler serves reg's series in the Prometheus text format.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// withMetrics serves GET and HEAD /metrics with metrics, and every other
// request with api (which takes paths as sent: no http.ServeMux, which
// would clean them).
func withMetrics(api, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			metrics.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// slotTimeout bounds the read of a database's slot at a scrape.
const slotTimeout = 2 * time.Second

// sourcesCollector reports, at scrape time, the state of the sources this
// node holds (nodeSources.held's figures) and the lag of the slots it
// streams.
type sourcesCollector struct {
	ns                          nodeSources
	log                         *slog.Logger
	streaming, sinceChange, lag *prometheus.Desc
	watching, indexed, watches  *prometheus.Desc
	sinceRescan, rescans        *prometheus.Desc
	overflows                   *prometheus.Desc
}

func newSourcesCollector(ns nodeSources, log *slog.Logger) *sourcesCollector {
	db := []string{"project", "database"}
	dir := []string{"project", "storage"}
	return &sourcesCollector{
		ns:          ns,
		log:         log,
		streaming:   prometheus.NewDesc("triggerd_database_streaming", "1 while this node streams the database's slot, else 0.", db, nil),
		sinceChange: prometheus.NewDesc("triggerd_database_last_change_age_seconds", "Seconds since the commit of the last row change this node received from the database; absent until one comes.", db, nil),
		lag:         prometheus.NewDesc("triggerd_database_replication_lag_bytes", "Bytes of WAL the database's server has written past the slot's confirmed position, for the databases this node streams.", db, nil),
		watching:    prometheus.NewDesc("triggerd_storage_watching", "1 while this node watches the directory, else 0.", dir, nil),
		indexed:     prometheus.NewDesc("triggerd_storage_files_indexed", "Files in the directory's index, for the directories this node watches.", dir, nil),
		watches:     prometheus.NewDesc("triggerd_storage_watches", "Folders of the directory with a kernel watch, for the directories this node watches.", dir, nil),
		rescans:     prometheus.NewDesc("triggerd_storage_rescans_total", "Comparisons of the directory with its index by this node (at the start of each session, after an overflow, and for folders the watch lost).", dir, nil),
		overflows:   prometheus.NewDesc("triggerd_storage_overflows_total", "Times an event queue of the directory's watch overflowed on this node, each followed by a rescan.", dir, nil),
		sinceRescan: prometheus.NewDesc("triggerd_storage_last_rescan_age_seconds", "Seconds since this node last compared the directory with its index; absent until it has.", dir, nil),
	}
}

func (c *sourcesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.streaming, c.sinceChange, c.lag, c.watching, c.indexed, c.watches, c.sinceRescan, c.rescans, c.overflows} {
		ch <- d
	}
}

func (c *sourcesCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range c.ns.dbs {
		st := s.State()
		ch <- prometheus.MustNewConstMetric(c.streaming, prometheus.GaugeValue, flag(st.Streaming), s.Project(), s.Alias())
		if !st.LastChange.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.sinceChange, prometheus.GaugeValue, now.Sub(st.LastChange).Seconds(), s.Project(), s.Alias())
		}
		if !st.Streaming {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), slotTimeout)
		slot, err := s.Slot(ctx)
		cancel()
		if err != nil {
			c.log.Debug("reading a slot's lag for /metrics failed", "project", s.Project(), "database", s.Alias(), "err", err)
		}
		if err == nil && slot.Exists {
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(slot.Lag), s.Project(), s.Alias())
		}
	}
	for _, s := range c.ns.dirs {
		st := s.State()
		ch <- prometheus.MustNewConstMetric(c.watching, prometheus.GaugeValue, flag(st.Watching), s.Project(), s.Alias())
		ch <- prometheus.MustNewConstMetric(c.rescans, prometheus.CounterValue, float64(st.Rescans), s.Project(), s.Alias())
		ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(st.Overflows), s.Project(), s.Alias())
		if !st.Watching {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.indexed, prometheus.GaugeValue, float64(st.Indexed), s.Project(), s.Alias())
		ch <- prometheus.MustNewConstMetric(c.watches, prometheus.GaugeValue, float64(st.Watches), s.Project(), s.Alias())
		if !st.LastRescan.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.sinceRescan, prometheus.GaugeValue, now.Sub(st.LastRescan).Seconds(), s.Project(), s.Alias())
		}
	}
}

// flag is 1 for true and 0 for false.
func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
