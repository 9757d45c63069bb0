package dispatch

import (
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/triggerd/triggerd/store"
)

// Metrics counts what the dispatcher stages and delivers. Build it with
// NewMetrics on the node's registry; a nil *Metrics counts nothing.
type Metrics struct {
	staged     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	sync       *prometheus.CounterVec
}

// The sources of staged events, the values of the source label.
const (
	sourceCustom = "custom"
	sourceDB     = "db"
	sourceFile   = "file"
)

// NewMetrics registers the dispatcher's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		staged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "triggerd_events_staged_total",
			Help: "Rows staged in event_logs, one per trigger that takes an event, by project, event type and source (custom, db, file).",
		}, []string{"project", "type", "source"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "triggerd_deliveries_total",
			Help: "Delivery outcomes recorded by this node, by project, trigger and outcome (success, failed_attempt, failed, cancelled).",
		}, []string{"project", "trigger", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "triggerd_delivery_duration_seconds",
			Help:    "How long each webhook attempt took, by trigger (project/trigger).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"project", "trigger"}),
		sync: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "triggerd_sync_calls_total",
			Help: "Synchronous queue calls answered, by outcome (success, failed, no_trigger, timeout, error).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.staged, m.deliveries, m.duration, m.sync)
	return m
}

// stagedRows counts rows written, as source; written nil means all.
func (m *Metrics) stagedRows(rows []store.EventLog, written map[uuid.UUID]bool, source string) {
	if m == nil {
		return
	}
	for i := range rows {
		r := &rows[i]
		if written != nil && !written[r.ID] {
			continue
		}
		m.staged.WithLabelValues(r.Project, r.Type, source).Inc()
	}
}

// outcome counts an attempt's recorded outcome and its duration.
func (m *Metrics) outcome(row *store.EventLog, out *store.Outcome, took time.Duration) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(row.Project, row.Trigger).Observe(took.Seconds())
	m.delivery(row, outcomeName(out.Status))
}

// delivery counts a delivery of row that ends as outcome.
func (m *Metrics) delivery(row *store.EventLog, outcome string) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(row.Project, row.Trigger, outcome).Inc()
}

// outcomeName is the outcome label of a recorded status.
func outcomeName(s store.Status) string {
	switch s {
	case store.StatusProcessed:
		return "success"
	case store.StatusStaged:
		return "failed_attempt"
	case store.StatusFailed:
		return "failed"
	default:
		return "cancelled"
	}
}

// call counts a synchronous call's answer.
func (m *Metrics) call(outcome string) {
	if m == nil {
		return
	}
	m.sync.WithLabelValues(outcome).Inc()
}
