package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/node"
	"github.com/triggerd/triggerd/store/pgtest"
)

// consoleRows is how many event_logs rows BenchmarkConsolePages fills.
const consoleRows = 1_000_000

// consolePage is what a page of Mission Control asks the server for on its
// first render: after the session, its requests at once.
type consolePage struct {
	name     string
	requests []string // paths, each requested with the session's cookie
}

// BenchmarkConsolePages measures, at the server, what Mission Control's
// pages ask of a node whose store holds 1,000,000 rows in event_logs
// (pgtest.FillHistory): each page's first render as a browser makes it
// (GET /mission-control/session, then the page's admin requests at once,
// so the page takes as long as the session and its slowest request), and
// each request alone. A list update on Event logs is its first request
// alone (request/events). It reports ms/page (with the median and the
// slowest page) and ms/request; the aim is under 100 ms each.
func BenchmarkConsolePages(b *testing.B) {
	apiURL, c, first := consoleBenchNode(b)
	newest := firstEventID(b, c, apiURL+"/v1/admin/events?limit=1")
	failed := firstEventID(b, c, apiURL+"/v1/admin/events?limit=1&status=failed")
	now := time.Now().UTC()
	stamp := func(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339)) }
	deep := first.Add(consoleRows / 2 * time.Second)
	hourAgo := stamp(now.Add(-time.Hour))
	lastHour := "since=" + hourAgo
	longAgo := "since=" + stamp(deep) + "&until=" + stamp(deep.Add(time.Hour))

	events := func(filter string) string {
		if filter == "" {
			return "/v1/admin/events?limit=50"
		}
		return "/v1/admin/events?limit=50&" + filter
	}
	pages := []consolePage{
		{"triggers", []string{"/v1/admin/triggers", "/v1/admin/counts?status=staged,failed"}},
		{"events", []string{events("")}},
		{"events-type", []string{events("type=type4")}},
		{"events-trigger", []string{events("trigger=t7")}},
		{"events-project-trigger", []string{events("project=p1&trigger=t7")}},
		{"events-processed", []string{events("status=processed")}},
		{"events-failed", []string{events("status=failed")}},
		{"events-staged", []string{events("status=staged")}},
		{"events-cancelled", []string{events("status=cancelled")}},
		{"events-trigger-failed", []string{events("project=p1&trigger=t3&status=failed")}},
		{"events-trigger-failed-none", []string{events("project=p1&trigger=t7&status=failed")}},
		{"events-last-hour", []string{events(lastHour)}},
		{"events-hour-long-ago", []string{events(longAgo)}},
		{"events-trigger-hour-long-ago", []string{events("project=p1&trigger=t7&" + longAgo)}},
		{"events-id", []string{events("id=" + newest)}},
		{"event-opened", []string{"/v1/admin/events/" + failed}},
		{"sources", []string{"/v1/admin/sources", "/v1/admin/nodes"}},
		{"overview", []string{"/v1/admin/activity?since=" + stamp(now.Add(-time.Hour).Truncate(time.Minute)), "/v1/admin/triggers",
			"/v1/admin/counts?status=staged", "/v1/admin/nodes"}},
	}
	for _, p := range pages {
		for _, path := range p.requests {
			get(b, c, apiURL+path) // each answers 200 before it is timed
		}
	}
	if b.Failed() {
		b.FailNow()
	}
	for _, p := range pages {
		b.Run("page/"+p.name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				get(b, c, apiURL+"/mission-control/session")
				var wg sync.WaitGroup
				for _, path := range p.requests {
					wg.Go(func() { get(b, c, apiURL+path) })
				}
				wg.Wait()
				took = append(took, time.Since(t0))
			}
			b.ReportMetric(msPer(b), "ms/page")
			slices.Sort(took)
			b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
			b.ReportMetric(ms(took[len(took)-1]), "max-ms")
		})
	}
	seen := map[string]bool{}
	request := func(name, path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		b.Run("request/"+name, func(b *testing.B) {
			for b.Loop() {
				get(b, c, apiURL+path)
			}
			b.ReportMetric(msPer(b), "ms/request")
		})
	}
	request("session", "/mission-control/session")
	for _, p := range pages {
		for _, path := range p.requests {
			name := p.name
			if len(p.requests) > 1 {
				name += "/" + strings.TrimPrefix(strings.SplitN(path, "?", 2)[0], "/v1/admin/")
			}
			request(name, path)
		}
	}
}

// consoleBenchNode runs a node (package node, as triggerd serve does, for
// the trigger and source routes it adds to the API) with the admin API,
// whose projects p0 and p1 have the triggers of pgtest.FillHistory's rows
// (webhooks to a local receiver that answers at once). It fills the store
// with consoleRows rows, waits until the node has delivered the rows
// already due, and logs in to Mission Control. It returns the API's URL, a
// client holding the session cookie, and the time of the oldest row.
func consoleBenchNode(b *testing.B) (string, *http.Client, time.Time) {
	b.Helper()
	recv, _ := benchReceiver(b)
	dbURL, schema := pgtest.Schema(b)
	var triggers [2]strings.Builder
	for i := range 20 {
		fmt.Fprintf(&triggers[i%2], "      - {name: t%d, type: type%d, url: %q}\n", i, i, recv)
	}
	project := func(id int) string {
		return fmt.Sprintf(`  - id: p%d
    secrets: [{kid: k1, alg: HS256, secret: bench-secret-0123456789abcdef0123}]
    rules: {default: allow}
    triggers:
%s`, id, triggers[id].String())
	}
	text := fmt.Sprintf("listen: 127.0.0.1:0\nnode_id: bench\nstore: {url: %q, schema: %s, max_conns: 32}\n%sprojects:\n%s%s",
		dbURL, schema, adminSection, project(0), project(1))
	cfg, err := config.Parse("console-bench.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	addr := make(chan string, 1)
	n, err := node.New(cfg, node.Options{Version: "bench", Started: func(a string) { addr <- a }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("node: %v", err)
		}
	})
	var apiURL string
	select {
	case a := <-addr:
		apiURL = "http://" + a
	case err := <-done:
		b.Fatalf("the node stopped before listening: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("the node did not listen within 30 s")
	}
	pool := pgtest.Pool(b, dbURL, schema)
	first := pgtest.FillHistory(b, pool, consoleRows)
	// The staged rows older than a day are due: let the node deliver them,
	// so that the pages are measured on a quiet node.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var due int
		if err := pool.QueryRow(b.Context(), `SELECT count(*) FROM event_logs WHERE status = 'staged' AND due_at <= now()`).Scan(&due); err != nil {
			b.Fatal(err)
		}
		if due == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d due rows still staged after 2 minutes", due)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := pool.Exec(b.Context(), `VACUUM ANALYZE event_logs`); err != nil {
		b.Fatal(err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	c := client()
	c.Jar = jar
	resp, err := c.Post(apiURL+"/mission-control/login", "application/json", strings.NewReader(`{"user":"ops","password":"`+adminPassword+`"}`))
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("console login: %s", resp.Status)
	}
	return apiURL, c, first
}

// get fails the benchmark unless url answers 200, and returns the body.
// It may run on any goroutine.
func get(b *testing.B, c *http.Client, url string) []byte {
	resp, err := c.Get(url)
	if err != nil {
		b.Error(err)
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Error(err)
	}
	if resp.StatusCode != 200 {
		b.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body
}

// firstEventID returns the id of the first event of a page of the events.
func firstEventID(b *testing.B, c *http.Client, url string) string {
	b.Helper()
	var page struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	if err := json.Unmarshal(get(b, c, url), &page); err != nil || len(page.Events) == 0 {
		b.Fatalf("GET %s: no event (%v)", url, err)
	}
	return page.Events[0].ID
}

// msPer is the mean time of one of the benchmark's loops, in milliseconds.
func msPer(b *testing.B) float64 {
	return float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
}
