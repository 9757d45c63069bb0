package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
)

// dashboardFile is the Grafana dashboard that deploy/ ships.
const dashboardFile = "../deploy/grafana/triggerd.json"

// dashboard is the part of Grafana's dashboard JSON model the test reads.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			IncludeAll bool   `json:"includeAll"`
			AllValue   string `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit     string `json:"unit"`
			Decimals *int   `json:"decimals"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardFile, err)
	}
	return d
}

// TestGrafanaDashboardLayout checks the dashboard's shape as Grafana reads
// it: unique panel ids on a 24-column grid with no overlap, every panel
// described and reading the dashboard's data source variable, and every
// query variable offering "All".
func TestGrafanaDashboardLayout(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("uid %q, title %q, schemaVersion %d: all three are needed for an import", d.UID, d.Title, d.SchemaVersion)
	}
	ids := map[int]bool{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.X < 0 || g.W <= 0 || g.H <= 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, taken := cells[[2]int{x, y}]; taken {
					t.Fatalf("panel %q overlaps %q at column %d, row %d", p.Title, other, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Type != "timeseries" && p.Type != "stat" {
			t.Errorf("panel %q: type %q, want timeseries or stat", p.Title, p.Type)
		}
		if p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: data source %+v, want the dashboard's ${datasource}", p.Title, p.Datasource)
		}
		if p.Title == "" || p.Description == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d: a title, a description and a query are needed", p.ID)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if refs[q.RefID] || q.RefID == "" {
				t.Errorf("panel %q: refId %q is empty or used twice", p.Title, q.RefID)
			}
			refs[q.RefID] = true
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && (!v.IncludeAll || v.AllValue != ".*") {
			t.Errorf("variable %s: offer All, with allValue .* (a regex the queries match with =~)", v.Name)
		}
	}
}

// expand replaces the dashboard's variables in a query as Grafana does
// with "All" chosen: each query variable by its allValue, and
// $__rate_interval by rateInterval.
func (d dashboard) expand(expr, rateInterval string) string {
	expr = strings.ReplaceAll(expr, "$__rate_interval", rateInterval)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			expr = strings.ReplaceAll(expr, "$"+v.Name, v.AllValue)
		}
	}
	return expr
}

// dashboardRun is how long TestGrafanaDashboard runs its traffic, how
// often it scrapes and the rate interval its queries use: short in CI,
// longer for a screenshot.
type dashboardRun struct {
	length, every time.Duration
	rateInterval  string
}

// TestGrafanaDashboard runs a node with all three sources and steady
// traffic (custom events, some synchronous, some to a webhook that always
// fails; rows inserted into a captured table; files written into a
// watched directory), scrapes its /metrics as Prometheus does (adding job
// and instance), and evaluates every query of the dashboard over the
// scrapes with Prometheus's own PromQL engine. Every query must parse and return data;
// every metric a query names must be one the node serves, and every
// triggerd_ series the node serves must be on some panel.
//
// With TRIGGERD_SCREENSHOTS set to a folder, it runs for 90 s and writes
// grafana-dashboard.png there: the panels drawn from those results (by
// this test, not by Grafana) in headless Chromium.
func TestGrafanaDashboard(t *testing.T) {
	d := readDashboard(t)
	run := dashboardRun{length: 10 * time.Second, every: 250 * time.Millisecond, rateInterval: "2s"}
	shots := os.Getenv("TRIGGERD_SCREENSHOTS")
	if shots != "" {
		run = dashboardRun{length: 90 * time.Second, every: time.Second, rateInterval: "10s"}
	}

	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/bad" {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"response":"ok"}`)
	}))
	defer hook.Close()
	c := newCapture(t)
	dir := t.TempDir()
	config := nodetest.WriteProjectConfig(t, "dashboard", c.storeURL, c.schema,
		c.databases()+fmt.Sprintf("    storage:\n      uploads: {path: %q, settle: 100ms}\n", dir), fmt.Sprintf(
			"      - {name: items, type: DB_INSERT, url: %[1]s/items, options: {db: app, col: items}}\n"+
				"      - {name: uploads, type: FILE_CREATE, url: %[1]s/files, options: {store: uploads}}\n"+
				"      - {name: orders, type: order.created, url: %[1]s/orders}\n"+
				"      - {name: quotes, type: quote.asked, url: %[1]s/quotes}\n"+
				"      - {name: invoices, type: invoice.sent, url: %[1]s/bad, retries: 1, retry_backoff: {initial: 200ms, max: 200ms}}\n",
			hook.URL))
	node := nodetest.Start(t, config)
	metricsURL := "http://" + node.Addr + "/metrics"
	waittest.For(t, 20*time.Second, func() error {
		if v, _ := value(scrape(t, metricsURL), "triggerd_database_streaming"); v != 1 {
			return fmt.Errorf("the node does not stream the database yet")
		}
		return nil
	})

	ctx, stop := context.WithCancel(t.Context())
	trafficDone := make(chan error, 1)
	go func() { trafficDone <- dashboardTraffic(ctx, node.Addr, c, dir, run.length) }()

	db := scrapes{}
	start := time.Now()
	tick := time.NewTicker(run.every)
	for now := start; now.Sub(start) <= run.length; now = <-tick.C {
		db.add(scrape(t, metricsURL), now)
	}
	tick.Stop()
	stop()
	if err := <-trafficDone; err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	last := scrape(t, metricsURL)

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 10_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	queryable := db.queryable()
	parse := parser.NewParser(parser.Options{})
	results := map[string]promql.Matrix{} // by panel id and refId
	named := map[string]bool{}
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			expr := d.expand(q.Expr, run.rateInterval)
			parsed, err := parse.ParseExpr(expr)
			if err != nil {
				t.Errorf("panel %q, query %s: %v", p.Title, q.RefID, err)
				continue
			}
			parser.Inspect(parsed, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					named[vs.Name] = true
				}
				return nil
			})
			rq, err := engine.NewRangeQuery(t.Context(), queryable, nil, expr, start, end, run.every)
			if err != nil {
				t.Fatalf("panel %q, query %s: %v", p.Title, q.RefID, err)
			}
			res := rq.Exec(t.Context())
			if res.Err != nil {
				t.Errorf("panel %q, query %s (%s): %v", p.Title, q.RefID, expr, res.Err)
				continue
			}
			m, err := res.Matrix()
			if err != nil {
				t.Fatalf("panel %q, query %s: %v", p.Title, q.RefID, err)
			}
			if !hasValue(m) {
				t.Errorf("panel %q, query %s returns no data after %s of traffic: %s", p.Title, q.RefID, run.length, expr)
			}
			results[fmt.Sprint(p.ID, q.RefID)] = m
		}
	}

	served := map[string]bool{} // every series name in the scrape, histograms' parts included
	for name, f := range last {
		for _, s := range flatten(f) {
			served[s.Get(model.MetricNameLabel)] = true
		}
		if strings.HasPrefix(name, "triggerd_") && !named[name] && !named[name+"_bucket"] && !named[name+"_count"] {
			t.Errorf("the node serves %s, which no panel shows", name)
		}
	}
	for name := range named {
		if !served[name] {
			t.Errorf("a panel reads %s, which the node does not serve", name)
		}
	}
	if shots != "" && !t.Failed() {
		writeDashboardShot(t, d, results, start, end, run.every, filepath.Join(shots, "grafana-dashboard.png"))
	}
}

// dashboardTraffic sends TestGrafanaDashboard's traffic until ctx ends:
// its rate of custom events rises at a third of length and falls back at
// two thirds, so the charts have a shape.
func dashboardTraffic(ctx context.Context, addr string, c *capture, dir string, length time.Duration) error {
	queue := "http://" + addr + "/v1/api/demo/event-triggers/queue"
	post := func(body string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, queue, strings.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("queue %s: %d %s", body, resp.StatusCode, msg)
		}
		return nil
	}
	if err := post(`{"type":"order.created","delay":3600}`); err != nil { // staged until after the run
		return err
	}
	began := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		orders := 2
		if e := time.Since(began); e > length/3 && e < 2*length/3 {
			orders = 6
		}
		steps := []string{}
		for range orders {
			steps = append(steps, `{"type":"order.created","data":{"total":12}}`)
		}
		if i%5 == 0 {
			steps = append(steps, `{"type":"invoice.sent","data":{"n":1}}`)
		}
		if i%3 == 0 {
			steps = append(steps, `{"type":"quote.asked","isSynchronous":true}`)
		}
		for _, body := range steps {
			if err := post(body); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		if _, err := c.db.Exec(ctx, `INSERT INTO items VALUES ($1, 'x')`, i); err != nil && ctx.Err() == nil {
			return fmt.Errorf("insert into items: %w", err)
		}
		if i%4 == 0 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.txt", i)), []byte("x"), 0o600); err != nil {
				return err
			}
		}
	}
}

// scrapes holds what TestGrafanaDashboard scraped, by series, with the
// labels a Prometheus scrape job adds (job and instance).
type scrapes map[string]*scraped

type scraped struct {
	labels  labels.Labels
	samples []chunks.Sample
}

// add adds a scrape taken at time at.
func (db scrapes) add(fams map[string]*dto.MetricFamily, at time.Time) {
	for _, f := range fams {
		for _, s := range flatten(f) {
			b := labels.NewBuilder(s.Labels)
			b.Set("job", "triggerd")
			b.Set("instance", "node-1")
			l := b.Labels()
			key := l.String()
			if db[key] == nil {
				db[key] = &scraped{labels: l}
			}
			db[key].samples = append(db[key].samples, point{at.UnixMilli(), s.V})
		}
	}
}

// queryable serves the scrapes to Prometheus's query engine: a selection
// is the series whose labels match, sorted by their labels.
func (db scrapes) queryable() promstorage.Queryable {
	return &promstorage.MockQueryable{MockQuerier: &promstorage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *promstorage.SelectHints, matchers ...*labels.Matcher) promstorage.SeriesSet {
			set := &seriesSet{}
			for _, s := range db {
				if !slices.ContainsFunc(matchers, func(m *labels.Matcher) bool { return !m.Matches(s.labels.Get(m.Name)) }) {
					set.series = append(set.series, promstorage.NewListSeries(s.labels, s.samples))
				}
			}
			slices.SortFunc(set.series, func(a, b promstorage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
			return set
		},
	}}
}

// seriesSet is a promstorage.SeriesSet over a slice.
type seriesSet struct {
	series []promstorage.Series
	next   int // 1 + the index of the series At returns
}

func (s *seriesSet) Next() bool {
	s.next++
	return s.next <= len(s.series)
}
func (s *seriesSet) At() promstorage.Series            { return s.series[s.next-1] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// point is a float sample, as the query engine reads them.
type point struct {
	t int64
	v float64
}

func (p point) T() int64                      { return p.t }
func (p point) ST() int64                     { return 0 }
func (p point) F() float64                    { return p.v }
func (p point) H() *histogram.Histogram       { return nil }
func (p point) FH() *histogram.FloatHistogram { return nil }
func (p point) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (p point) Copy() chunks.Sample           { return p }

// sample is one series' value in a scrape.
type sample struct {
	labels.Labels
	V float64
}

// flatten turns a metric family into series as Prometheus stores them: a
// histogram into its _bucket (by le), _sum and _count series, a summary
// into its quantiles, _sum and _count.
func flatten(f *dto.MetricFamily) []sample {
	var out []sample
	for _, m := range f.GetMetric() {
		series := func(suffix string, v float64, extra ...string) {
			b := labels.NewBuilder(labels.EmptyLabels())
			b.Set(model.MetricNameLabel, f.GetName()+suffix)
			for _, l := range m.GetLabel() {
				b.Set(l.GetName(), l.GetValue())
			}
			for i := 0; i+1 < len(extra); i += 2 {
				b.Set(extra[i], extra[i+1])
			}
			out = append(out, sample{b.Labels(), v})
		}
		le := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
		switch {
		case m.Counter != nil:
			series("", m.GetCounter().GetValue())
		case m.Gauge != nil:
			series("", m.GetGauge().GetValue())
		case m.Untyped != nil:
			series("", m.GetUntyped().GetValue())
		case m.Histogram != nil:
			h := m.GetHistogram()
			for _, b := range h.GetBucket() {
				series("_bucket", float64(b.GetCumulativeCount()), "le", le(b.GetUpperBound()))
			}
			series("_bucket", float64(h.GetSampleCount()), "le", "+Inf")
			series("_sum", h.GetSampleSum())
			series("_count", float64(h.GetSampleCount()))
		case m.Summary != nil:
			s := m.GetSummary()
			for _, q := range s.GetQuantile() {
				series("", q.GetValue(), "quantile", le(q.GetQuantile()))
			}
			series("_sum", s.GetSampleSum())
			series("_count", float64(s.GetSampleCount()))
		}
	}
	return out
}

// hasValue says whether a query's result has a number at some step.
func hasValue(m promql.Matrix) bool {
	for _, s := range m {
		if slices.ContainsFunc(s.Floats, func(p promql.FPoint) bool { return !math.IsNaN(p.F) }) {
			return true
		}
	}
	return false
}
