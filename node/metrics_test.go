package node_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// scrape reads the series a node serves at url, parsed.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: not the Prometheus text format: %v", url, err)
	}
	return fams
}

// value is the value of the series of fams named name whose labels
// include labels (name=value pairs), summed over the others; a
// histogram's is its count. found says whether any series matched.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, found bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
series:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue series
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v, found
}

// TestMetricsCountKnownTraffic runs a node with a separate metrics_listen
// and a watched directory holding one file, sends it known events (three
// delivered, one that fails for good after a retry, one synchronous, one
// delayed by an hour and one no trigger takes) and checks each series on
// /metrics; /metrics is then not on the API's address.
func TestMetricsCountKnownTraffic(t *testing.T) {
	var bad atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			bad.Add(1)
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, `{"response":"ok"}`)
	}))
	defer hook.Close()
	url, schema := pgtest.Schema(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := nodetest.WriteProjectConfig(t, "metrics", url, schema,
		fmt.Sprintf("    storage:\n      uploads: {path: %q, settle: 100ms}\n", dir), fmt.Sprintf(
			"      - {name: ok, type: order.created, url: %[1]s/ok}\n"+
				"      - {name: later, type: order.later, url: %[1]s/ok}\n"+
				"      - {name: bad, type: order.bad, url: %[1]s/bad, retries: 1, retry_backoff: {initial: 100ms, max: 100ms}}\n"+
				"      - {name: sync, type: order.sync, url: %[1]s/ok}\n"+
				"      - {name: files, type: FILE_CREATE, url: %[1]s/ok}\n", hook.URL))
	metricsAddr := nodetest.FreeAddr(t)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "metrics_listen: %s\n", metricsAddr)
	f.Close()
	node := nodetest.Start(t, path)
	queue := "http://" + node.Addr + "/v1/api/demo/event-triggers/queue"
	send := func(body string, want int) {
		t.Helper()
		resp, err := http.Post(queue, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("queue %s: %d %s, want %d", body, resp.StatusCode, msg, want)
		}
	}
	send(`{"type":"order.later","delay":3600}`, http.StatusOK) // before any scrape: the gauges read it
	for range 3 {
		send(`{"type":"order.created"}`, http.StatusOK)
	}
	send(`{"type":"order.bad"}`, http.StatusOK)
	send(`{"type":"nobody.handles.this"}`, http.StatusOK)
	send(`{"type":"order.sync","isSynchronous":true}`, http.StatusOK)

	metricsURL := "http://" + metricsAddr + "/metrics"
	var fams map[string]*dto.MetricFamily
	waittest.For(t, 20*time.Second, func() error {
		fams = scrape(t, metricsURL)
		ok, _ := value(fams, "triggerd_deliveries_total", "trigger", "ok", "outcome", "success")
		failed, _ := value(fams, "triggerd_deliveries_total", "trigger", "bad", "outcome", "failed")
		files, _ := value(fams, "triggerd_deliveries_total", "trigger", "files", "outcome", "success")
		if ok != 3 || failed != 1 || files != 1 {
			return fmt.Errorf("deliveries counted: %v successes of ok, want 3; %v failures for good of bad, want 1; %v successes of files, want 1", ok, failed, files)
		}
		// The gauge is read at most every 5 s: an earlier reading may
		// count the rows still in flight then.
		if staged, _ := value(fams, "triggerd_events_staged"); staged != 1 {
			return fmt.Errorf("triggerd_events_staged = %v, want 1 (the delayed event)", staged)
		}
		return nil
	})
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"triggerd_events_staged_total", []string{"project", "demo", "type", "order.created", "source", "custom"}, 3},
		{"triggerd_events_staged_total", []string{"project", "demo", "type", "order.bad", "source", "custom"}, 1},
		{"triggerd_events_staged_total", []string{"project", "demo", "type", "order.sync", "source", "custom"}, 1},
		{"triggerd_events_staged_total", []string{"project", "demo", "type", "order.later", "source", "custom"}, 1},
		{"triggerd_events_staged_total", []string{"type", "nobody.handles.this"}, 0},
		{"triggerd_events_staged_total", []string{"project", "demo", "type", "FILE_CREATE", "source", "file"}, 1},
		{"triggerd_events_staged_total", []string{"source", "db"}, 0},
		{"triggerd_deliveries_total", []string{"project", "demo", "trigger", "ok", "outcome", "success"}, 3},
		{"triggerd_deliveries_total", []string{"trigger", "bad", "outcome", "failed_attempt"}, 1},
		{"triggerd_deliveries_total", []string{"trigger", "bad", "outcome", "failed"}, 1},
		{"triggerd_deliveries_total", []string{"trigger", "bad", "outcome", "success"}, 0},
		{"triggerd_deliveries_total", []string{"trigger", "sync", "outcome", "success"}, 1},
		{"triggerd_deliveries_total", []string{"trigger", "later"}, 0},
		{"triggerd_delivery_duration_seconds", []string{"project", "demo", "trigger", "ok"}, 3},
		{"triggerd_delivery_duration_seconds", []string{"trigger", "bad"}, 2},
		{"triggerd_sync_calls_total", []string{"outcome", "success"}, 1},
		{"triggerd_sync_calls_total", nil, 1},
		{"triggerd_http_requests_total", []string{"route", "/v1/api/{project}/event-triggers/queue", "code", "200"}, 7},
		{"triggerd_events_staged", nil, 1}, // the delayed event
		{"triggerd_events_due", nil, 0},
		{"triggerd_storage_watching", []string{"project", "demo", "storage", "uploads"}, 1},
		{"triggerd_storage_files_indexed", []string{"project", "demo", "storage", "uploads"}, 1},
		{"triggerd_storage_watches", []string{"project", "demo", "storage", "uploads"}, 1},
		{"triggerd_storage_rescans_total", []string{"project", "demo", "storage", "uploads"}, 1}, // at start-up
		{"triggerd_storage_overflows_total", []string{"project", "demo", "storage", "uploads"}, 0},
	}
	for _, c := range checks {
		if got, _ := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := bad.Load(); n != 2 {
		t.Errorf("the failing webhook got %d attempts, want 2", n)
	}
	// The rows and outcomes went through the group-committed writer: 6
	// custom rows staged (none for the type no trigger takes), 7 outcomes
	// and the file's index entry and row, in some number of commits; the
	// watcher may write more of its index.
	if rows := sum(fams, "triggerd_store_batch_rows"); rows < 15 {
		t.Errorf("triggerd_store_batch_rows sums to %v, want at least 15 rows", rows)
	}
	if n, _ := value(fams, "triggerd_store_write_seconds"); n == 0 {
		t.Error("triggerd_store_write_seconds counts no commit")
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, found := value(fams, name); !found {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
	// With metrics_listen, the API's address does not serve /metrics.
	resp, err := http.Get("http://" + node.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the API's address with metrics_listen set: %d, want 404", resp.StatusCode)
	}
}

// sum is the sum of the observations of the histogram name, over its series.
func sum(fams map[string]*dto.MetricFamily, name string) float64 {
	var s float64
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			s += m.GetHistogram().GetSampleSum()
		}
	}
	return s
}

// TestMetricsOnTheAPIAddress checks that without metrics_listen the API's
// address serves /metrics, with no token, and counts its own requests by
// route template, not by path.
func TestMetricsOnTheAPIAddress(t *testing.T) {
	url, schema := pgtest.Schema(t)
	node := nodetest.Start(t, nodetest.WriteConfig(t, "metrics-api", url, schema, "      - {name: t, type: x, url: http://127.0.0.1:1/}\n"))
	for _, p := range []string{"/healthz", "/nope/1", "/nope/2"} {
		resp, err := http.Get("http://" + node.Addr + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	fams := scrape(t, "http://"+node.Addr+"/metrics")
	if n, _ := value(fams, "triggerd_http_requests_total", "route", "/healthz", "code", "200"); n != 1 {
		t.Errorf("healthz requests: %v, want 1", n)
	}
	if n, _ := value(fams, "triggerd_http_requests_total", "route", "unmatched", "code", "404"); n != 2 {
		t.Errorf("unmatched requests: %v, want 2", n)
	}
	if _, found := value(fams, "triggerd_http_requests_total", "route", "/metrics"); found {
		t.Error("/metrics counts itself among the API's requests")
	}
}

// TestMetricsOfADatabase checks the series of a database source: the node
// streams it, its row changes are counted as staged from source db and
// delivered, and the time since the last change and the slot's lag are
// shown.
func TestMetricsOfADatabase(t *testing.T) {
	c := newCapture(t)
	node := nodetest.Start(t, c.config("metrics-db"))
	url := "http://" + node.Addr + "/metrics"
	db := []string{"project", "demo", "database", "app"}
	waittest.For(t, 20*time.Second, func() error {
		if v, _ := value(scrape(t, url), "triggerd_database_streaming", db...); v != 1 {
			return fmt.Errorf("triggerd_database_streaming = %v, want 1", v)
		}
		return nil
	})
	fams := scrape(t, url)
	if _, found := value(fams, "triggerd_database_last_change_age_seconds", db...); found {
		t.Error("triggerd_database_last_change_age_seconds is shown before any change")
	}
	if _, err := c.db.Exec(t.Context(), `INSERT INTO items VALUES (1, 'a'), (2, 'b')`); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, 20*time.Second, func() error {
		fams = scrape(t, url)
		if v, _ := value(fams, "triggerd_deliveries_total", "trigger", "items", "outcome", "success"); v != 2 {
			return fmt.Errorf("deliveries of items: %v, want 2", v)
		}
		return nil
	})
	if v, _ := value(fams, "triggerd_events_staged_total", "project", "demo", "type", "DB_INSERT", "source", "db"); v != 2 {
		t.Errorf("rows staged from the database: %v, want 2", v)
	}
	if age, found := value(fams, "triggerd_database_last_change_age_seconds", db...); !found || age < 0 || age > 20 {
		t.Errorf("triggerd_database_last_change_age_seconds = %v (shown: %v), want between 0 and 20", age, found)
	}
	// The slot is confirmed as the rows are logged; the server's WAL moves
	// on with other tests' writes, so the lag is small, not 0.
	if lag, found := value(fams, "triggerd_database_replication_lag_bytes", db...); !found || lag < 0 || lag > 64<<20 {
		t.Errorf("triggerd_database_replication_lag_bytes = %v (shown: %v), want between 0 and 64 MiB", lag, found)
	}
}
