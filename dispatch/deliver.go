package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

const (
	// readLimit caps how much of a webhook's answer is read for "response".
	readLimit = 1 << 20
	// keepLimit caps the answer kept in invocation_logs.
	keepLimit = 64 << 10
	// errorBodyLimit caps the answer quoted in an attempt's error.
	errorBodyLimit = 200
)

// encodeEvent renders a row as its structured-mode CloudEvents 1.0 body.
// It is written by hand: the data is JSON already (the store's json column
// checked it), and re-encoding it cost a tenth of a delivery's CPU.
func encodeEvent(r *store.Event, source string) ([]byte, error) {
	data := r.Payload
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	typ, err := json.Marshal(r.Type)
	if err != nil {
		return nil, fmt.Errorf("encode CloudEvent %s: %w", r.ID, err)
	}
	src, err := json.Marshal(source)
	if err != nil {
		return nil, fmt.Errorf("encode CloudEvent %s: %w", r.ID, err)
	}
	b := make([]byte, 0, len(data)+len(typ)+len(src)+160)
	b = append(b, `{"specversion":"1.0","id":"`...)
	b = append(b, r.ID.String()...)
	b = append(b, `","type":`...)
	b = append(b, typ...)
	b = append(b, `,"source":`...)
	b = append(b, src...)
	b = append(b, `,"time":"`...)
	b = r.EventTime.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":"application/json","data":`...)
	b = append(b, data...)
	return append(b, '}'), nil
}

// attemptResult is what one POST to a webhook came to.
type attemptResult struct {
	started    time.Time
	duration   time.Duration
	status     int             // 0 when no HTTP answer came
	body       string          // the answer, capped at keepLimit
	response   json.RawMessage // the answer's "response" field
	err        string          // empty on success
	retryAfter time.Duration   // asked for by a 429 or 503
	aborted    bool            // shutdown cut the attempt short: it does not count
}

// attempt POSTs j's CloudEvent to its trigger's webhook once.
func (d *Dispatcher) attempt(ctx context.Context, j *job) attemptResult {
	t := j.lane.trig
	res := attemptResult{started: time.Now()}
	fail := func(format string, args ...any) attemptResult {
		res.err = fmt.Sprintf(format, args...)
		res.duration = time.Since(res.started)
		return res
	}
	if j.body == nil {
		body, err := encodeEvent(&j.row, d.opts.NodeID)
		if err != nil {
			return fail("%v", err)
		}
		j.body = body
	}
	token, err := j.lane.proj.keys.NodeToken(d.opts.NodeID, res.started)
	if err != nil {
		return fail("sign X-SC-Token: %v", err)
	}
	actx, cancel := context.WithTimeout(ctx, t.Timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, t.URL, bytes.NewReader(j.body))
	if err != nil {
		return fail("build request: %v", err)
	}
	for k, v := range t.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-SC-Token", token)
	if d.opts.UserAgent != "" {
		req.Header.Set("User-Agent", d.opts.UserAgent)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			res.aborted = true
			return fail("shutdown interrupted the attempt")
		case errors.Is(err, context.DeadlineExceeded):
			return fail("no answer within the trigger's timeout (%s)", t.Timeout())
		default:
			return fail("%s", describeError(err))
		}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, readLimit+1))
	res.status = resp.StatusCode
	res.body = keep(body)
	if err != nil {
		if ctx.Err() != nil {
			res.aborted = true
		}
		return fail("webhook answered %s but reading the body failed: %s", resp.Status, describeError(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		hint := ""
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			hint = " (redirects are not followed: point the trigger's url at the final address)"
		}
		return fail("webhook answered %s%s%s", resp.Status, quoteBody(body), hint)
	}
	res.response = responseField(body)
	res.duration = time.Since(res.started)
	return res
}

// responseField returns the "response" member of a JSON object body, or nil.
func responseField(body []byte) json.RawMessage {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || len(body) > readLimit {
		return nil
	}
	var v struct {
		Response json.RawMessage `json:"response"`
	}
	if json.Unmarshal(body, &v) != nil || v.Response == nil {
		return nil
	}
	return v.Response
}

// keep caps an answer for invocation_logs, on a UTF-8 boundary.
func keep(body []byte) string {
	if len(body) <= keepLimit {
		return strings.ToValidUTF8(string(body), "\uFFFD")
	}
	cut := keepLimit
	for cut > 0 && !utf8.RuneStart(body[cut]) {
		cut--
	}
	return strings.ToValidUTF8(string(body[:cut]), "\uFFFD") + fmt.Sprintf("…[%d more bytes not kept]", len(body)-cut)
}

// quoteBody quotes the start of an answer for an error message.
func quoteBody(body []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(body), "?"))
	if s == "" {
		return ""
	}
	if len(s) > errorBodyLimit {
		cut := errorBodyLimit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return ": " + s
}

// describeError says what a failed request ran into.
func describeError(err error) string {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryDelay is the wait before retry n (1 for the first retry): initial ×
// 2^(n-1) capped at max, spread by up to ±20%, then raised to a webhook's
// Retry-After, and never above max.
func retryDelay(b config.Backoff, n int, retryAfter time.Duration) time.Duration {
	initial, ceiling := b.Initial.Std(), b.Max.Std()
	wait := initial
	for i := 1; i < n && wait < ceiling; i++ {
		wait *= 2
	}
	wait = min(wait, ceiling)
	wait = time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))
	wait = max(wait, retryAfter)
	return min(wait, ceiling)
}

// newClient is the default webhook client: many keep-alive connections per
// host, and redirects returned as answers rather than followed.
func newClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 256
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
