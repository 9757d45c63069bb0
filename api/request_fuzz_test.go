package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxErrorLen bounds an error message about a body: a sentence of about
// 250 bytes and at most one piece of the client's text, cut to maxQuoted
// bytes, which quoting can make four times as long (\x01 for one byte).
const maxErrorLen = 1024

// queueSeeds are bodies for FuzzQueueRequest to start from: every case the
// decoder answers, and the bounds it keeps.
var queueSeeds = []string{
	// well formed
	`{"type":"sent-email"}`,
	`{"type":"sent-email","data":{"to":"user1@email.com"},"timestamp":1767225600000,"delay":30,"isSynchronous":true}`,
	`{"type":"t","payload":[1,2],"timestamp":"2026-01-01T00:00:00Z","delay":0.5}`,
	`{"type":"t","data":null,"payload":null,"timestamp":null,"delay":null,"isSynchronous":null}`,
	`{"type":"t","timestamp":"1767225600000"}`,
	` {"type":"t"} ` + "\n",
	// as Space Cloud's JS and Go clients send them
	`{"type":"t","delay":0,"payload":{"to":"a@b.c"},"options":{},"isSynchronous":false,"timestamp":"2026-11-30T13:08:41.677Z"}`,
	`{"type":"t","delay":2,"timestamp":"","payload":{},"options":null,"isSynchronous":true}`,
	`{"type":"t","timestamp":"2026-11-30T13:08:44+05:30","options":{"db":"app"}}`,
	`{"type":"t","options":"x"}`, `{"type":"t","options":[]}`, `{"type":"t","options":1}`, `{"type":"t","timestamp":" "}`,
	// empty, not an object, null, trailing data
	``, " \t\r\n", `null`, `[1,2]`, `[`, `"x"`, `5`, `1e400`, `true`, `}`, `]`,
	`{"type":"t"} {}`, `{"type":"t"}]`, `{"type":"t"}}`, `{"type":"t"} null`, `null {}`,
	`{"type":"t"}` + "\u00a0",
	// malformed
	`{"type": "t",`, `{`, `{"type"`, `{"type":`, `{"type":"t",}`, `{1:2}`, `{"a" 1}`, `{"type":[1,}`,
	// unknown fields, missing or bad type
	`{"type":"t","isSyncronous":true}`, `{"Type":"t"}`, `{"data":{}}`, `{"type":""}`, `{"type":"   "}`,
	`{"type":5}`, `{"type":null}`, `{"type":["t"]}`,
	`{"type":"t","` + strings.Repeat("k", 3000) + `":1}`,
	// data and payload
	`{"type":"t","data":1,"payload":2}`, `{"type":"t","data":null,"payload":2}`,
	// invalid UTF-8 in several places
	"{\"type\":\"t\",\"data\":{\"s\":\"a\xffb\"}}",
	"{\"type\":\"t\",\"data\":{\"k\xfe\":1}}",
	"{\"type\":\"t\",\"payload\":\"\xe2\x82\"}",
	"{\"type\":\"t\",\"data\":\"\xc0\x80\"}",
	"{\"type\":\"t\",\"data\":[\"\xed\xa0\x80\"]}",
	"{\"type\":\"op\xc3en\"}",
	"{\"type\":\"t\",\"\xff\":1}",
	"{\"type\":\"t\",\"timestamp\":\"2026\xff\"}",
	"\xff", "{\"type\":\"t\"}\xff", "\xef\xbb\xbf{\"type\":\"t\"}",
	// escapes in data are kept
	`{"type":"t","data":{"nul":"a\u0000b","lone":"\ud800","k\u0000":[1,"\udfff"]}}`,
	// NUL, control characters and U+FFFD in type
	`{"type":"a\u0000b"}`, `{"type":"a\u001fb"}`, `{"type":"a\tb"}`, `{"type":"a\u007f"}`,
	`{"type":"a\u0085b"}`, "{\"type\":\"a\xc2\x85\"}", `{"type":"a\ud800"}`, `{"type":"\ufffd"}`,
	"{\"type\":\"a\xef\xbf\xbd\"}", "{\"type\":\"a\tb\"}",
	// duplicate keys: refused at the top, kept in data
	`{"type":"a","type":"b"}`, `{"type":"t","typ\u0065":"u"}`, `{"type":"t","data":1,"data":2}`,
	`{"type":"t","payload":1,"payload":2}`, `{"type":"t","delay":1,"delay":1}`,
	`{"type":"t","data":{"k":1,"k":2,"n":{"k":[],"k":{}}}}`,
	// timestamps at and beyond both bounds, offsets
	`{"type":"t","timestamp":0}`, `{"type":"t","timestamp":-1}`, `{"type":"t","timestamp":-0}`,
	`{"type":"t","timestamp":0.5}`, `{"type":"t","timestamp":-0.5}`,
	`{"type":"t","timestamp":253402300799999}`, `{"type":"t","timestamp":253402300800000}`,
	`{"type":"t","timestamp":253402300799999.9}`, `{"type":"t","timestamp":1e400}`,
	`{"type":"t","timestamp":"253402300799999"}`, `{"type":"t","timestamp":"-1"}`,
	`{"type":"t","timestamp":"9999-12-31T23:59:59.999Z"}`, `{"type":"t","timestamp":"9999-12-31T23:59:59.9999Z"}`,
	`{"type":"t","timestamp":"9999-12-31T23:00:00-05:00"}`, `{"type":"t","timestamp":"9999-12-31T18:59:59.999-05:00"}`,
	`{"type":"t","timestamp":"1970-01-01T00:00:00Z"}`, `{"type":"t","timestamp":"1969-12-31T23:59:59.999Z"}`,
	`{"type":"t","timestamp":"1970-01-01T00:30:00+01:00"}`, `{"type":"t","timestamp":"1970-01-01T01:00:00+01:00"}`,
	`{"type":"t","timestamp":"0001-01-01T00:00:00Z"}`, `{"type":"t","timestamp":"0000-01-01T00:00:00+23:59"}`,
	`{"type":"t","timestamp":"yesterday"}`, `{"type":"t","timestamp":true}`, `{"type":"t","timestamp":{}}`,
	`{"type":"t","timestamp":"` + strings.Repeat("9", 3000) + `"}`,
	`{"type":"t","timestamp":` + strings.Repeat("9", 3000) + `}`,
	`{"type":"t","timestamp":"` + strings.Repeat("\\u0001", 500) + `"}`,
	// delays: with the bounds, fractional, huge, negative, not numbers
	`{"type":"t","timestamp":253402300799999,"delay":0.001}`, `{"type":"t","timestamp":253402300799000,"delay":0.999}`,
	`{"type":"t","timestamp":"9999-12-31T23:00:00Z","delay":3600}`,
	`{"type":"t","delay":0.0000000001}`, `{"type":"t","delay":1e-400}`, `{"type":"t","delay":-0}`,
	`{"type":"t","delay":-1}`, `{"type":"t","delay":-1e-9}`, `{"type":"t","delay":1e300}`, `{"type":"t","delay":1e400}`,
	`{"type":"t","delay":3153600000}`, `{"type":"t","delay":3153600000.5}`,
	`{"type":"t","delay":"NaN"}`, `{"type":"t","delay":"Infinity"}`, `{"type":"t","delay":"30"}`, `{"type":"t","delay":NaN}`,
	`{"type":"t","delay":"soon"}`, `{"type":"t","delay":[1]}`,
	`{"type":"t","delay":-` + strings.Repeat("1", 3000) + `}`,
	`{"type":"t","delay":` + strings.Repeat("1", 3000) + `}`,
	// isSynchronous not a bool
	`{"type":"t","isSynchronous":"yes"}`, `{"type":"t","isSynchronous":1}`, `{"type":"t","isSynchronous":false}`,
}

// FuzzQueueRequest feeds parseQueueRequest arbitrary bodies. It must not
// panic; what it accepts must be an event the store keeps and the API can
// deliver; what it refuses it must explain in a short, valid UTF-8 message.
func FuzzQueueRequest(f *testing.F) {
	for _, s := range queueSeeds {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 25, 8, 8, 36, 273000000, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseQueueRequest(body, now)
		if err != nil {
			if msg := err.Error(); !utf8.ValidString(msg) || len(msg) > maxErrorLen || msg == "" {
				t.Fatalf("error message of %d bytes (valid UTF-8: %t): %q", len(msg), utf8.ValidString(msg), msg)
			}
			return
		}
		// An accepted body is one valid JSON object in UTF-8, whose type
		// is the one encoding/json reads.
		var fields map[string]json.RawMessage
		if !utf8.Valid(body) || json.Unmarshal(body, &fields) != nil || fields == nil {
			t.Fatalf("accepted a body that is not one JSON object in UTF-8: %q", body)
		}
		var typ string
		if json.Unmarshal(fields["type"], &typ) != nil || typ != req.Type {
			t.Fatalf("accepted type %q, encoding/json reads %s", req.Type, fields["type"])
		}
		if strings.TrimSpace(req.Type) == "" || !utf8.ValidString(req.Type) {
			t.Fatalf("accepted type %q", req.Type)
		}
		for _, r := range req.Type {
			if unicode.IsControl(r) || r == utf8.RuneError {
				t.Fatalf("accepted type %q with %U", req.Type, r)
			}
		}
		if req.Data != nil && (!json.Valid(req.Data) || !utf8.Valid(req.Data) || isNull(req.Data)) {
			t.Fatalf("accepted data %q", req.Data)
		}
		if !inRange(req.Time) || !inRange(req.FireAt) {
			t.Fatalf("accepted time %s and fire time %s", req.Time, req.FireAt)
		}
		if d := req.FireAt.Sub(req.Time); d < 0 || d > maxDelay {
			t.Fatalf("accepted a delay of %s", d)
		}
		// Go can write both times, as the store's readers do.
		if _, err := json.Marshal([]time.Time{req.Time, req.FireAt}); err != nil {
			t.Fatalf("accepted times Go cannot encode: %v", err)
		}
	})
}
