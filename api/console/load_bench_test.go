package console_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// BenchmarkEventLogsUnderLoad measures how Event logs, unfiltered, keeps
// up while 1,000 events a second are queued (32 clients, paced) for 10 s
// and each is delivered: in the page, the longest pause of a 20 ms timer,
// the time spent in long tasks (over 50 ms), how often the page read the
// list, and how long a click on a row took to show its attempts (one
// click a second). The node, its store and Chromium share the machine.
//
//	go test -run '^$' -bench BenchmarkEventLogsUnderLoad -benchtime 1x ./api/console
func BenchmarkEventLogsUnderLoad(b *testing.B) {
	const (
		rate    = 1000
		clients = 32
		load    = 10 * time.Second
	)
	base := startNode(b)
	p := openBrowser(b, base)
	p.do("logging in", chromedp.Navigate(base+"/mission-control/"), chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("login-user"), adminUser), chromedp.SendKeys(chromedp.ID("login-password"), adminPassword),
		chromedp.Click(chromedp.ID("login-submit")), chromedp.WaitVisible(chromedp.ID("logout")))
	queue(b, base, `{"type": "work", "data": {"first": true}}`)
	p.show("events")
	p.waitFor("the first row", `document.querySelectorAll('tr[data-batch-id]').length > 0`)
	for b.Loop() {
		p.do("watching the page", chromedp.Evaluate[chromedp.Void](`
			performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();
			window.maxGap = 0; window.lastTick = performance.now();
			window.ticker = setInterval(() => { const now = performance.now(); window.maxGap = Math.max(window.maxGap, now - window.lastTick); window.lastTick = now; }, 20);
			window.longTasks = 0;
			new PerformanceObserver((list) => { for (const e of list.getEntries()) window.longTasks += e.duration; }).observe({ type: 'longtask' });`))
		start := time.Now()
		var sent atomic.Int64
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				every := time.Second * clients / rate
				next := start.Add(every * time.Duration(c) / clients)
				for next.Before(start.Add(load)) {
					time.Sleep(time.Until(next))
					next = next.Add(every)
					resp, err := http.Post(base+"/v1/api/demo/event-triggers/queue", "application/json", strings.NewReader(`{"type": "work", "data": {"n": 1}}`))
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					sent.Add(1)
				}
			})
		}
		// One click a second on the newest row's id: the time until its
		// attempts, or its "no attempt yet", show (polled every 2 ms).
		var clicks []float64
		for time.Since(start) < load-time.Second {
			time.Sleep(time.Second)
			ms, err := chromedp.Run(p.ctx, chromedp.Evaluate[float64](`new Promise((done) => {
				const t0 = performance.now();
				document.querySelector('tr[data-batch-id] [data-testid=open]').click();
				const check = () => {
					const d = document.querySelector('tr.detail');
					if (d && d.querySelector('[data-testid=attempts], [data-testid=no-attempts]')) done(performance.now() - t0);
					else if (performance.now() - t0 > 5000) done(-1);
					else setTimeout(check, 2);
				};
				check();
			})`, chromedp.EvalAwaitPromise))
			if err != nil {
				b.Fatalf("clicking a row: %v", err)
			}
			if ms < 0 {
				b.Fatal("a row's attempts did not show within 5 s of a click")
			}
			clicks = append(clicks, ms)
			p.do("closing the row", chromedp.Evaluate[chromedp.Void](`document.querySelector('tr.detail')?.previousElementSibling.querySelector('[data-testid=open]').click()`))
		}
		wg.Wait()
		took := time.Since(start)
		time.Sleep(time.Second)
		reads := eval[int](p, `performance.getEntriesByType('resource').filter((e) => e.name.includes('/v1/admin/events?')).length`)
		gap := eval[float64](p, `clearInterval(window.ticker), window.maxGap`)
		long := eval[float64](p, `window.longTasks`)
		slices.Sort(clicks)
		b.ReportMetric(float64(sent.Load())/took.Seconds(), "events/s")
		b.ReportMetric(gap, "max-pause-ms")
		b.ReportMetric(long, "long-task-ms")
		b.ReportMetric(float64(reads)/(took.Seconds()+1), "list-reads/s")
		if len(clicks) > 0 {
			b.ReportMetric(clicks[len(clicks)/2], "click-p50-ms")
			b.ReportMetric(clicks[len(clicks)-1], "click-max-ms")
		}
	}
}
