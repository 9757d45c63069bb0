package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/triggerd/triggerd/store/pgtest"
)

// benchNode runs a node whose "bench" type goes to a receiver answering
// {"response": {"ok": true}} at once, and returns the API's and the
// receiver's URLs and the receiver's count of deliveries.
func benchNode(b *testing.B) (apiURL, receiverURL string, received *atomic.Int64) {
	b.Helper()
	receiverURL, received = benchReceiver(b)
	url, schema := pgtest.Schema(b)
	text := fmt.Sprintf(`
node_id: bench
store: {url: %q, schema: %s, max_conns: 32}
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: bench-secret-0123456789abcdef0123}]
    rules: {default: allow}
    triggers:
      - {name: bench, type: bench, url: %q, concurrency: 64}
`, url, schema, receiverURL)
	apiURL, _ = startNode(b, text, nil)
	return apiURL + "/v1/api/demo/event-triggers/queue", receiverURL, received
}

// benchReceiver runs a webhook answering {"response": {"ok": true}} at
// once, and returns its URL and its count of deliveries.
func benchReceiver(b *testing.B) (string, *atomic.Int64) {
	b.Helper()
	received := new(atomic.Int64)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(`{"response": {"ok": true}}`))
		received.Add(1)
	}))
	b.Cleanup(recv.Close)
	return recv.URL, received
}

// client is an HTTP client with enough keep-alive connections for the
// benchmark's concurrency.
func client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	return &http.Client{Transport: tr}
}

// post sends body and fails the benchmark unless the answer is 200.
func post(b *testing.B, c *http.Client, url string, body []byte) {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Errorf("status %d", resp.StatusCode)
	}
}

// BenchmarkQueueAsync measures durable intake: 32 concurrent clients post
// events, each answered once its row is committed. In "stored" the events
// are scheduled an hour ahead, so intake runs alone; in "delivered" they
// are due at once and the node delivers them to a local receiver while
// taking more, and the benchmark also reports the end-to-end rate, from
// the first post to the last delivery.
func BenchmarkQueueAsync(b *testing.B) {
	for _, c := range []struct {
		name  string
		body  string
		await bool
	}{
		{"stored", `{"type":"bench","data":{"to":"user1@email.com","subject":"hello"},"delay":3600}`, false},
		{"delivered", `{"type":"bench","data":{"to":"user1@email.com","subject":"hello"}}`, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			url, _, received := benchNode(b)
			hc := client()
			body := []byte(c.body)
			b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					post(b, hc, url, body)
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			if !c.await {
				return
			}
			deadline := time.Now().Add(2 * time.Minute)
			for received.Load() < int64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d events delivered after 2 minutes", received.Load(), b.N)
				}
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "delivered/s")
		})
	}
}

// BenchmarkSyncOverhead compares a synchronous queue request with posting
// the same CloudEvent-sized body to the receiver directly, one at a time,
// and reports the medians and their difference.
func BenchmarkSyncOverhead(b *testing.B) {
	url, recv, _ := benchNode(b)
	c := client()
	syncBody := []byte(`{"type":"bench","data":{"to":"user1@email.com"},"isSynchronous":true}`)
	direct := []byte(`{"specversion":"1.0","id":"01a206cc-6450-750b-9e28-6abc5ecbd4ae","type":"bench","source":"bench","time":"2026-11-23T05:06:28.050644396Z","datacontenttype":"application/json","data":{"to":"user1@email.com"}}`)
	for range 50 { // warm connections and statement caches
		post(b, c, url, syncBody)
		post(b, c, recv, direct)
	}
	viaSync := make([]time.Duration, 0, b.N)
	viaDirect := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		post(b, c, recv, direct)
		t1 := time.Now()
		post(b, c, url, syncBody)
		viaDirect = append(viaDirect, t1.Sub(t0))
		viaSync = append(viaSync, time.Since(t1))
	}
	b.StopTimer()
	ds, ss := median(viaDirect), median(viaSync)
	b.ReportMetric(ms(ds), "direct-p50-ms")
	b.ReportMetric(ms(ss), "sync-p50-ms")
	b.ReportMetric(ms(ss-ds), "overhead-p50-ms")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
