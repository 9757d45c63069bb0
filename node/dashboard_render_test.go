package node_test

import (
	"context"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/prometheus/promql"

	"github.com/triggerd/triggerd/internal/browsertest"
)

// The page's geometry, as Grafana lays out its grid: 24 columns, rows of
// 30 px, 8 px between panels.
const (
	pageWidth = 1600
	gridGap   = 8
	gridRow   = 30
)

// palette is the order in which series get colours.
var palette = [...]string{"#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#37872d", "#fade2a", "#c4162a"}

// writeDashboardShot draws d's panels from results (keyed by panel id and
// refId) on one page, as Grafana would lay them out, and writes a
// screenshot of it, taken in headless Chromium, to path.
func writeDashboardShot(t *testing.T, d dashboard, results map[string]promql.Matrix, start, end time.Time, every time.Duration, path string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `<!doctype html><meta charset="utf-8"><style>
body{margin:0;background:#111217;color:#ccccdc;font:13px/1.3 "Liberation Sans",Arial,sans-serif;width:%dpx}
header{padding:12px 16px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:18px;margin:0;color:#fff}
header span{color:#8e8e99}
main{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:%dpx;gap:%dpx;padding:0 %dpx}
.row{font-size:15px;font-weight:600;color:#fff;align-self:end}
.panel{background:#181b1f;border:1px solid #2c2e33;border-radius:2px;overflow:hidden;display:flex;flex-direction:column}
.panel h2{font-size:13px;font-weight:600;margin:6px 8px 0;color:#ccccdc}
.stat{flex:1;display:flex;align-items:center;justify-content:center;font-size:34px;font-weight:600;color:#73bf69;position:relative}
.stat svg{position:absolute;bottom:0;left:0}
.stat b{position:relative}
.legend{display:flex;flex-wrap:wrap;gap:2px 12px;padding:0 8px 6px;font-size:12px}
.legend i{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}
footer{padding:12px 16px;color:#8e8e99}
</style>`, pageWidth, gridRow, gridGap, gridGap)
	fmt.Fprintf(&b, `<header><h1>%s</h1><span>Job: triggerd</span><span>Node: All</span><span>Project: All</span><span>%s to %s</span></header><main>`,
		html.EscapeString(d.Title), start.Format("15:04:05"), end.Format("15:04:05"))
	col := float64(pageWidth-2*gridGap-23*gridGap) / 24
	for _, p := range d.Panels {
		g := p.GridPos
		place := fmt.Sprintf(`style="grid-column:%d/span %d;grid-row:%d/span %d"`, g.X+1, g.W, g.Y+1, g.H)
		if p.Type == "row" {
			fmt.Fprintf(&b, `<div class="row" %s>%s</div>`, place, html.EscapeString(p.Title))
			continue
		}
		w := int(float64(g.W)*col) + (g.W-1)*gridGap
		h := g.H*gridRow + (g.H-1)*gridGap
		fmt.Fprintf(&b, `<div class="panel" %s><h2>%s</h2>`, place, html.EscapeString(p.Title))
		var lines []line
		for _, q := range p.Targets {
			for _, s := range results[fmt.Sprint(p.ID, q.RefID)] {
				lines = append(lines, line{legend(q.LegendFormat, s), s.Floats})
			}
		}
		unit := p.FieldConfig.Defaults.Unit
		if p.Type == "stat" {
			v := math.NaN()
			if len(lines) > 0 {
				v = lastValue(lines[0].points)
			}
			text := formatValue(v, unit)
			if p.FieldConfig.Defaults.Decimals != nil && !math.IsNaN(v) {
				text = formatValue(math.Round(v), "none")
			}
			fmt.Fprintf(&b, `<div class="stat">%s<b>%s</b></div></div>`, sparkline(lines, start, end, w, h-30), html.EscapeString(text))
			continue
		}
		legendRows := (len(lines) + 2) / 3
		fmt.Fprint(&b, chart(lines, unit, start, end, w, h-28-legendRows*17))
		b.WriteString(`<div class="legend">`)
		for i, l := range lines {
			fmt.Fprintf(&b, `<span><i style="background:%s"></i>%s</span>`, palette[i%len(palette)], html.EscapeString(l.name))
		}
		b.WriteString(`</div></div>`)
	}
	fmt.Fprintf(&b, `</main><footer>deploy/grafana/triggerd.json, drawn by node/dashboard_test.go (not by Grafana): every query evaluated by Prometheus's PromQL engine over scrapes of a node every %s, %s of traffic.</footer>`,
		every, end.Sub(start).Round(time.Second))

	page := filepath.Join(t.TempDir(), "dashboard.html")
	if err := os.WriteFile(page, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(browsertest.Open(t, pageWidth, 900), time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+page)); err != nil {
		t.Fatalf("opening the drawn dashboard: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// line is one series of a panel: its legend and its points.
type line struct {
	name   string
	points []promql.FPoint
}

// legendLabel matches {{label}} in a legend format.
var legendLabel = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)

// legend is a series' name in the legend: format with each {{label}}
// replaced by the series' label, or the labels themselves.
func legend(format string, s promql.Series) string {
	if format == "" {
		return s.Metric.String()
	}
	return legendLabel.ReplaceAllStringFunc(format, func(m string) string {
		return s.Metric.Get(legendLabel.FindStringSubmatch(m)[1])
	})
}

func lastValue(points []promql.FPoint) float64 {
	for i := len(points) - 1; i >= 0; i-- {
		if !math.IsNaN(points[i].F) {
			return points[i].F
		}
	}
	return math.NaN()
}

// scale maps the run's times and values to an area of w by h pixels
// whose top left corner is at (x0, y0).
type scale struct {
	start, end   int64
	top          float64
	x0, y0, w, h float64
}

func (s scale) at(p promql.FPoint) (float64, float64) {
	x := s.x0 + s.w*float64(p.T-s.start)/float64(max(1, s.end-s.start))
	y := s.y0 + s.h - s.h*p.F/s.top
	return x, y
}

// path is an SVG path through a series' points, broken where it has none.
func (s scale) path(points []promql.FPoint) string {
	var b strings.Builder
	move := true
	for _, p := range points {
		if math.IsNaN(p.F) || math.IsInf(p.F, 0) {
			move = true
			continue
		}
		x, y := s.at(p)
		cmd := "L"
		if move {
			cmd, move = "M", false
		}
		fmt.Fprintf(&b, "%s%.1f %.1f", cmd, x, y)
	}
	return b.String()
}

// top is a round number at or above every value of lines (1 when all are 0).
func top(lines []line) float64 {
	m := 0.0
	for _, l := range lines {
		for _, p := range l.points {
			if !math.IsNaN(p.F) && !math.IsInf(p.F, 0) {
				m = max(m, p.F)
			}
		}
	}
	if m <= 0 {
		return 1
	}
	step := math.Pow(10, math.Floor(math.Log10(m)))
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*step >= m {
			return f * step
		}
	}
	return 10 * step
}

// chart draws a time series panel's lines with a y axis in unit and the
// run's start, middle and end on the x axis.
func chart(lines []line, unit string, start, end time.Time, w, h int) string {
	s := scale{start: start.UnixMilli(), end: end.UnixMilli(), top: top(lines), x0: 62, y0: 8, w: float64(w) - 74, h: float64(h) - 30}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" font-size="11" fill="#8e8e99">`, w, h)
	for i := 0; i <= 4; i++ {
		v := s.top * float64(i) / 4
		_, y := s.at(promql.FPoint{T: s.start, F: v})
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#2c2e33"/><text x="%.0f" y="%.1f" text-anchor="end">%s</text>`,
			s.x0, s.x0+s.w, y, y, s.x0-6, y+4, html.EscapeString(formatValue(v, unit)))
	}
	for i, at := range []time.Time{start, start.Add(end.Sub(start) / 2), end} {
		x, _ := s.at(promql.FPoint{T: at.UnixMilli()})
		anchor := [...]string{"start", "middle", "end"}[i]
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="%s">%s</text>`, x, s.y0+s.h+18, anchor, at.Format("15:04:05"))
	}
	for i, l := range lines {
		c := palette[i%len(palette)]
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, s.path(l.points), c)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// sparkline draws a stat panel's first series as a faint area under its value.
func sparkline(lines []line, start, end time.Time, w, h int) string {
	if len(lines) == 0 {
		return ""
	}
	s := scale{start: start.UnixMilli(), end: end.UnixMilli(), top: top(lines[:1]), w: float64(w), h: float64(h) * 0.6, y0: float64(h) * 0.4}
	return fmt.Sprintf(`<svg width="%d" height="%d"><path d="%s" fill="none" stroke="#73bf69" stroke-opacity="0.5" stroke-width="1.5"/></svg>`,
		w, h, s.path(lines[0].points))
}

// formatValue writes v in a Grafana unit: ops, reqps, s, bytes,
// percentunit, short or none.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "No data"
	}
	switch unit {
	case "ops":
		return si(v) + " ops/s"
	case "reqps":
		return si(v) + " req/s"
	case "s":
		switch {
		case v == 0:
			return "0 s"
		case v < 1e-3:
			return trim(v*1e6) + " µs"
		case v < 1:
			return trim(v*1e3) + " ms"
		}
		return trim(v) + " s"
	case "bytes":
		for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
			if math.Abs(v) < 1024 || u == "GiB" {
				return trim(v) + " " + u
			}
			v /= 1024
		}
	case "percentunit":
		return trim(v*100) + "%"
	case "none":
		return trim(v)
	}
	return si(v)
}

// si writes v with k or M for thousands and millions.
func si(v float64) string {
	switch {
	case math.Abs(v) >= 1e6:
		return trim(v/1e6) + " M"
	case math.Abs(v) >= 1e3:
		return trim(v/1e3) + " k"
	}
	return trim(v)
}

// trim writes v with at most three significant digits past the point.
func trim(v float64) string {
	s := fmt.Sprintf("%.3g", v)
	if strings.Contains(s, "e") {
		s = fmt.Sprintf("%.0f", v)
	}
	return s
}
