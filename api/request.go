package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// queueRequest is a validated queue body.
type queueRequest struct {
	Type        string
	Data        json.RawMessage // nil is null
	Time        time.Time       // when the event occurred
	FireAt      time.Time       // when to deliver it: Time plus the delay
	Synchronous bool
}

// maxDelay bounds delay so that scheduled times stay representable.
const maxDelay = 100 * 365 * 24 * time.Hour

// queueFields are the fields of a queue body, and bodyFields names them
// for error messages.
var queueFields = []string{"type", "data", "payload", "timestamp", "delay", "isSynchronous", "options"}

const bodyFields = "type, data (or payload), timestamp, delay, isSynchronous, options"

// parseQueueRequest reads a queue body, saying precisely what is wrong with
// a bad one. now is the default timestamp.
func parseQueueRequest(body []byte, now time.Time) (queueRequest, error) {
	var req queueRequest
	if len(trimJSONSpace(body)) == 0 {
		return req, errors.New(`the body is empty: send a JSON object such as {"type": "sent-email", "data": {...}}`)
	}
	// encoding/json lets invalid UTF-8 through inside strings (into data
	// untouched, elsewhere as U+FFFD), and the store refuses it.
	if i := invalidUTF8(body); i >= 0 {
		return req, fmt.Errorf("the body is not valid UTF-8 at byte offset %d (%#x): JSON text must be UTF-8; send binary data encoded, as base64 for example", i, body[i])
	}
	fields, err := decodeFields(body, queueFields, bodyFields)
	if err != nil {
		return req, err
	}

	raw, ok := fields["type"]
	if !ok {
		return req, errors.New(`type is missing: name the event type, as in "type": "sent-email"`)
	}
	if err := json.Unmarshal(raw, &req.Type); err != nil || strings.TrimSpace(req.Type) == "" {
		return req, errors.New(`type must be a non-empty string, as in "type": "sent-email"`)
	}
	if err := checkType(req.Type); err != nil {
		return req, err
	}

	data, hasData := fields["data"]
	payload, hasPayload := fields["payload"]
	switch {
	case hasData && hasPayload:
		return req, errors.New("give data or payload (its older name), not both")
	case hasPayload:
		data = payload
	}
	if !isNull(data) {
		req.Data = data
	}

	// Space Cloud's Go client sends "timestamp": "" when no time is set.
	req.Time = now
	if raw, ok := fields["timestamp"]; ok && !isNull(raw) && string(trimJSONSpace(raw)) != `""` {
		t, err := parseTimestamp(raw)
		if err != nil {
			return req, err
		}
		req.Time = t
	}
	req.FireAt = req.Time

	if raw, ok := fields["delay"]; ok && !isNull(raw) {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return req, errors.New("delay must be a number of seconds, as in \"delay\": 30")
		}
		// A number too large for a float64 is ±Inf with ErrRange: too long,
		// or negative.
		secs, err := n.Float64()
		switch {
		case err != nil && !errors.Is(err, strconv.ErrRange):
			return req, errors.New("delay must be a number of seconds, as in \"delay\": 30")
		case secs < 0:
			return req, fmt.Errorf("delay must be 0 or more seconds, got %s", clip(n.String()))
		case secs > maxDelay.Seconds():
			return req, fmt.Errorf("delay of %s seconds is too long: the limit is %d seconds (100 years)", clip(n.String()), int64(maxDelay.Seconds()))
		}
		req.FireAt = req.Time.Add(time.Duration(secs * float64(time.Second)))
	}
	if !inRange(req.FireAt) {
		return req, fmt.Errorf("timestamp plus delay falls after %s: delivery times run from %s, in UTC; send an earlier timestamp or a shorter delay", lastTime, timeRange)
	}

	if raw, ok := fields["isSynchronous"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &req.Synchronous); err != nil {
			return req, errors.New("isSynchronous must be true or false")
		}
	}

	// Space Cloud's clients always send options: {}, null, or what the
	// caller set. Space Cloud matched it against a trigger's options, which
	// custom-event triggers here do not have, so it is ignored.
	if raw, ok := fields["options"]; ok && !isNull(raw) && trimJSONSpace(raw)[0] != '{' {
		return req, errors.New("options must be an object or null; triggerd ignores it (Space Cloud's clients send {} or null)")
	}
	return req, nil
}

// decodeFields reads a body that is one JSON object into its fields,
// refusing a field that is not among known (named in messages as
// described). A field given twice is refused too: parsers differ on which
// of the two counts (encoding/json takes the last), and a proxy checking
// the first would see another value than triggerd.
func decodeFields(body []byte, known []string, described string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("the body is not a JSON object: %s", describeJSONError(err))
	}
	switch tok.(type) {
	case nil:
		return nil, errors.New(`the body is null: send a JSON object such as {"type": "sent-email"}`)
	case string:
		return nil, errors.New("the body is not a JSON object: found a JSON string where an object belongs")
	case json.Number:
		return nil, errors.New("the body is not a JSON object: found a JSON number where an object belongs")
	case bool:
		return nil, errors.New("the body is not a JSON object: found a JSON boolean where an object belongs")
	}
	if tok != json.Delim('{') { // a closing bracket is a syntax error
		return nil, errors.New("the body is not a JSON object: found a JSON array where an object belongs")
	}
	fields := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("the body is not a JSON object: %s", describeJSONError(err))
		}
		key := tok.(string) // the decoder takes nothing else where a key belongs
		if !slices.Contains(known, key) {
			return nil, fmt.Errorf("unknown field %s: the body takes %s", quote(key), described)
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, fmt.Errorf("the body is not a JSON object: %s", describeJSONError(err))
		}
		if _, ok := fields[key]; ok {
			return nil, fmt.Errorf("field %s appears twice: give each field once", quote(key))
		}
		fields[key] = value
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("the body is not a JSON object: %s", describeJSONError(err))
	}
	if len(trimJSONSpace(body[dec.InputOffset():])) > 0 {
		return nil, errors.New("the body has data after its JSON object: send one object")
	}
	return fields, nil
}

// trimJSONSpace trims the whitespace JSON allows around values.
func trimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

// invalidUTF8 returns the offset of b's first byte that is not part of a
// valid UTF-8 character, or -1 when b is valid UTF-8.
func invalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// checkType refuses a type that is not printable text: control characters
// (a JSON escape can carry a NUL, which the store cannot keep), and U+FFFD,
// which is what encoding/json makes of an escaped lone surrogate.
func checkType(t string) error {
	for i, r := range t {
		switch {
		case unicode.IsControl(r):
			return fmt.Errorf("type contains a control character (U+%04X) at byte %d: use printable text, as in \"type\": \"sent-email\"", r, i)
		case r == utf8.RuneError:
			return fmt.Errorf("type contains U+FFFD at byte %d, the replacement character (an escaped lone surrogate such as \\ud800 decodes to it): use printable text, as in \"type\": \"sent-email\"", i)
		}
	}
	return nil
}

// timestampHint says what a timestamp may be.
const timestampHint = "timestamp must be epoch milliseconds (a number such as 1767225600000) or an RFC 3339 string such as \"2026-01-01T00:00:00Z\""

// parseTimestamp reads epoch milliseconds (a number, or a string of digits)
// or an RFC 3339 string.
func parseTimestamp(raw json.RawMessage) (time.Time, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return fromMillis(n)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return time.Time{}, errors.New(timestampHint)
	}
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return fromMillis(json.Number(s))
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s; %s is neither", timestampHint, quote(s))
	}
	if !inRange(t) {
		return time.Time{}, fmt.Errorf("timestamp %s is out of range: event times run from %s, in UTC", quote(s), timeRange)
	}
	return t, nil
}

// Event and delivery times run over what epoch milliseconds cover from
// 1970 to year 9999, the last year Go's time encoding writes.
const (
	maxMillis = 253402300799999
	lastTime  = "9999-12-31T23:59:59.999Z"
	timeRange = "1970-01-01T00:00:00Z to " + lastTime
)

// inRange reports whether t is within timeRange.
func inRange(t time.Time) bool {
	return !t.Before(time.UnixMilli(0)) && !t.After(time.UnixMilli(maxMillis))
}

// fromMillis converts epoch milliseconds within timeRange.
func fromMillis(n json.Number) (time.Time, error) {
	ms, err := n.Float64()
	if err != nil || ms < 0 || ms > maxMillis {
		return time.Time{}, fmt.Errorf("timestamp %s is out of range: epoch milliseconds run from 0 to %d (%s)", clip(n.String()), maxMillis, timeRange)
	}
	return time.UnixMilli(int64(ms)), nil
}

// isNull reports whether a field is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// describeJSONError turns a decoding error into a sentence: where the
// syntax breaks, or that the body ends too early.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("%v (at byte offset %d)", syn, syn.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF): // the body is not empty
		return "it ends too early"
	}
	return err.Error()
}
