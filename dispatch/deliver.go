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
	"net/url"
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

// The Content-Type of each format's body.
const (
	// contentTypeCloudEvent is the CloudEvents JSON format's media type,
	// which tells a receiver that the body is a structured-mode CloudEvent.
	contentTypeCloudEvent = "application/cloudevents+json"
	// contentTypeJSON is the data's media type, its datacontenttype: the
	// body of a binary-mode delivery, and the envelope's.
	contentTypeJSON = "application/json"
)

// encodeBody renders a row as the body of its trigger's format: the data
// alone for binary mode (JSON null when the event has none, as the
// structured body's "data" is), else the structured-mode CloudEvent.
func encodeBody(r *store.EventLog, source string, f config.Format) ([]byte, error) {
	if f != config.FormatBinary {
		return encodeEvent(r, source)
	}
	if len(r.Payload) == 0 {
		return []byte("null"), nil
	}
	return r.Payload, nil
}

// AttemptBody returns the request body of attempt in of row r: the copy
// the attempt logged or, for an attempt that logged its format instead,
// the row rendered again in that format with the attempt's node as the
// source, as the attempt sent it.
func AttemptBody(r *store.EventLog, in *store.Invocation) ([]byte, error) {
	if in.RequestFormat == "" {
		return in.RequestBody, nil
	}
	return encodeBody(r, in.NodeID, config.Format(in.RequestFormat))
}

// setFormatHeaders sets the headers of a delivery's format: its
// Content-Type and, in binary mode, the CloudEvent's other attributes as
// ce- headers.
func setFormatHeaders(h http.Header, r *store.EventLog, source string, f config.Format) {
	switch f {
	case config.FormatStructured:
		h.Set("Content-Type", contentTypeCloudEvent)
	case config.FormatEnvelope:
		h.Set("Content-Type", contentTypeJSON)
	case config.FormatBinary:
		h.Set("Content-Type", contentTypeJSON)
		h.Set("Ce-Specversion", "1.0")
		h.Set("Ce-Id", r.ID.String())
		h.Set("Ce-Source", headerValue(source))
		h.Set("Ce-Type", headerValue(r.Type))
		h.Set("Ce-Time", r.EventTime.UTC().Format(time.RFC3339Nano))
	}
}

// headerValue percent-encodes an attribute for its ce- header as the
// CloudEvents HTTP binding asks: space, '"', '%' and every byte outside
// printable ASCII (so each byte of a character beyond ASCII) become %XY.
func headerValue(s string) string {
	escape := func(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }
	n := 0
	for i := range len(s) {
		if escape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := range len(s) {
		if c := s[i]; escape(c) {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// encodeEvent renders a row as its structured-mode CloudEvents 1.0 body
// in the JSON format. It is written by hand: the data is JSON already
// (the store's json column checked it), and re-encoding it cost a tenth
// of a delivery's CPU.
func encodeEvent(r *store.EventLog, source string) ([]byte, error) {
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

// noAnswer begins the error of an attempt that timed out.
const noAnswer = "no answer within the trigger's timeout"

// notRecorded stands for a webhook's answer that the store refused.
const notRecorded = "[not recorded: the store refused the answer; triggerd's log says why]"

// withoutAnswer is the result with nothing of the webhook's answer in it
// but its status, for a store that refused the answer.
func (r attemptResult) withoutAnswer() attemptResult {
	r.body, r.response = notRecorded, nil
	switch {
	case r.err == "":
	case r.status != 0:
		r.err = fmt.Sprintf("webhook answered %d %s %s", r.status, http.StatusText(r.status), notRecorded)
	default:
		r.err = "the attempt failed " + notRecorded
	}
	return r
}

// attempt POSTs j's CloudEvent to its trigger's webhook once, in the
// trigger's format.
func (d *Dispatcher) attempt(ctx context.Context, j *job) attemptResult {
	set := j.lane.settings()
	t := set.trig
	res := attemptResult{started: time.Now()}
	fail := func(format string, args ...any) attemptResult {
		res.err = fmt.Sprintf(format, args...)
		res.duration = time.Since(res.started)
		return res
	}
	if j.body == nil || j.format != t.Format {
		body, err := encodeBody(&j.row, d.opts.NodeID, t.Format)
		if err != nil {
			return fail("%v", err)
		}
		j.body, j.format = body, t.Format
	}
	token, err := j.lane.proj.keys.NodeToken(d.opts.NodeID, res.started)
	if err != nil {
		return fail("sign X-SC-Token: %v", err)
	}
	actx, cancel := context.WithTimeout(ctx, t.Timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, t.URL, bytes.NewReader(j.body))
	if err != nil {
		return fail("build request: %s", describeError(err))
	}
	for k, v := range t.Headers {
		req.Header.Set(k, v)
	}
	setFormatHeaders(req.Header, &j.row, d.opts.NodeID, t.Format)
	req.Header.Set("X-SC-Token", token)
	if s := set.signer; s != nil {
		// Each attempt signs anew, at its own time, the exact body sent.
		s.Sign(req.Header, j.row.ID.String(), res.started, j.body)
	}
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
			return fail("%s (%s)", noAnswer, t.Timeout())
		default:
			return fail("%s", describeError(err))
		}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, readLimit+1))
	res.status = resp.StatusCode
	res.body = keep(body, resp.ContentLength)
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

// responseField returns the "response" member of a JSON object body, or
// nil. Bytes that are not UTF-8 (which can only sit inside its strings)
// become U+FFFD, so that the store's json column takes it.
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
	if !utf8.Valid(v.Response) {
		return json.RawMessage(bytes.ToValidUTF8(v.Response, []byte("\uFFFD")))
	}
	return v.Response
}

// keep renders an answer for invocation_logs as text (see store.Text),
// capped at keepLimit bytes on a character boundary. A cut answer ends
// with a note of its size: declared is its Content-Length (-1 when
// unknown); body holds up to readLimit+1 bytes of it.
func keep(body []byte, declared int64) string {
	if len(body) <= keepLimit {
		return store.Text(string(body))
	}
	cut := keepLimit
	for cut > 0 && !utf8.RuneStart(body[cut]) {
		cut--
	}
	size := fmt.Sprintf("%d", len(body))
	switch {
	case declared >= 0 && len(body) > readLimit:
		size = fmt.Sprintf("%d", declared)
	case len(body) > readLimit:
		size = fmt.Sprintf("more than %d", readLimit)
	}
	return store.Text(string(body[:cut])) + fmt.Sprintf("…[%d of %s bytes kept]", cut, size)
}

// quoteBody quotes the start of an answer for an error message.
func quoteBody(body []byte) string {
	cut := min(len(body), errorBodyLimit)
	for cut > 0 && cut < len(body) && !utf8.RuneStart(body[cut]) {
		cut--
	}
	s := strings.TrimSpace(store.Text(string(body[:cut])))
	if s == "" {
		return ""
	}
	if cut < len(body) {
		s += "…"
	}
	return ": " + s
}

// describeError says what a failed request ran into, with the webhook's
// url redacted (see redactURL).
func describeError(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		urlErr.URL = redactURL(urlErr.URL)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

// redactURL hides what a url may carry as a secret: the password of its
// user info and the values of its query (as in ?token=...).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(the trigger's url)"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
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
