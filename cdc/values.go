package cdc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// valueEncoder turns pgoutput's text-format column values into typed JSON.
// It expects the walsender's DateStyle=ISO, TimeZone=UTC and
// bytea_output=hex, and is not safe for concurrent use.
type valueEncoder struct {
	types   map[uint32]typeInfo // the types learned from the catalog
	unquote []byte              // scratch for array elements with backslash escapes
}

// typeInfo is what the catalog says of a type beyond the type itself: what
// a domain stands for, and what an array holds.
type typeInfo struct {
	base   uint32 // a domain's base type, itself not a domain; 0 for other types
	elem   uint32 // the element type of an array, int2vector or oidvector
	delim  byte   // what separates an array's elements
	vector bool   // an int2vector or oidvector, written 1 2 3 rather than {1,2,3}
}

// newValueEncoder returns an encoder that knows no types beyond those it
// converts by their OID: learn teaches it the others.
func newValueEncoder() *valueEncoder {
	return &valueEncoder{types: make(map[uint32]typeInfo)}
}

// learn looks up in the catalog the types of oids the encoder does not
// know yet, and the types those are made of: domains' base types and
// arrays' element types. A type the catalog does not have is learned as
// one without structure, its values written as text.
func (e *valueEncoder) learn(ctx context.Context, conn *pgx.Conn, oids []uint32) error {
	type entry struct {
		base, elem uint32
		delim      string
		vector     bool
	}
	found := make(map[uint32]entry)
	var todo []uint32
	want := func(oid uint32) {
		if _, ok := e.types[oid]; !ok && oid != 0 && !slices.Contains(todo, oid) {
			if _, ok := found[oid]; !ok {
				todo = append(todo, oid)
			}
		}
	}
	for _, oid := range oids {
		want(oid)
	}
	for len(todo) > 0 {
		batch := todo
		todo = nil
		// Types with an element type that are not written as lists of
		// it, such as point (two float8), are plain values.
		rows, err := conn.Query(ctx, `SELECT t.oid, t.typbasetype,
			CASE WHEN t.typoutput IN ('array_out'::regproc, 'int2vectorout'::regproc, 'oidvectorout'::regproc) THEN t.typelem ELSE 0 END,
			coalesce(e.typdelim::text, ','), t.typoutput IN ('int2vectorout'::regproc, 'oidvectorout'::regproc)
			FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem WHERE t.oid = ANY($1)`, batch)
		if err != nil {
			return fmt.Errorf("look up column types: %w", err)
		}
		for _, oid := range batch {
			found[oid] = entry{}
		}
		var oid uint32
		var en entry
		_, err = pgx.ForEachRow(rows, []any{&oid, &en.base, &en.elem, &en.delim, &en.vector}, func() error {
			found[oid] = en
			want(en.base)
			want(en.elem)
			return nil
		})
		if err != nil {
			return fmt.Errorf("look up column types: %w", err)
		}
	}
	// A domain stands for the type at the end of its chain of domains.
	baseOf := func(oid uint32) uint32 {
		for {
			next := found[oid].base
			if t, ok := e.types[oid]; ok {
				next = t.base
			}
			if next == 0 {
				return oid
			}
			oid = next
		}
	}
	for oid, en := range found {
		t := typeInfo{elem: en.elem, delim: ',', vector: en.vector}
		if en.base != 0 {
			t = typeInfo{base: baseOf(oid)}
		} else if len(en.delim) == 1 {
			t.delim = en.delim[0]
		}
		e.types[oid] = t
	}
	return nil
}

// Layouts of Postgres' ISO output; the offset of a timestamptz has the
// minutes and seconds only when they are not zero. Years before 1 are
// written with a BC suffix, and years past 9999 with more digits.
var (
	timestamptzLayouts = []string{
		"2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999Z07:00:00",
	}
	timestampLayouts = []string{"2006-01-02 15:04:05.999999999"}
	dateLayouts      = []string{time.DateOnly}
)

// appendJSON appends the JSON form of one non-NULL value of type oid,
// given in Postgres text format. What it cannot decode it appends as a
// JSON string of the text.
func (e *valueEncoder) appendJSON(dst []byte, oid uint32, text []byte) []byte {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID,
		pgtype.Float4OID, pgtype.Float8OID:
		if isJSONNumber(text) { // NaN and ±Infinity are not
			return append(dst, text...)
		}
	case pgtype.BoolOID:
		switch string(text) {
		case "t":
			return append(dst, "true"...)
		case "f":
			return append(dst, "false"...)
		}
	case pgtype.TimestamptzOID:
		return appendTime(dst, text, timestamptzLayouts, "-01-02T15:04:05.999999999Z07:00")
	case pgtype.TimestampOID:
		return appendTime(dst, text, timestampLayouts, "-01-02T15:04:05.999999999")
	case pgtype.DateOID:
		return appendTime(dst, text, dateLayouts, "-01-02")
	case pgtype.JSONOID, pgtype.JSONBOID:
		if json.Valid(text) {
			return append(dst, text...)
		}
	case pgtype.ByteaOID:
		return appendBytea(dst, text)
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID,
		pgtype.NumericOID, pgtype.UUIDOID:
		// Strings, without looking for a domain or an array.
	default:
		t := e.types[oid]
		switch {
		case t.base != 0:
			return e.appendJSON(dst, t.base, text)
		case t.vector:
			if out, ok := e.appendVector(dst, text, t.elem); ok {
				return out
			}
		case t.elem != 0:
			if out, ok := e.appendArray(dst, text, t.elem, t.delim); ok {
				return out
			}
		}
	}
	return appendString(dst, text)
}

// appendVector appends the JSON array for an int2vector or oidvector: its
// elements, of type elem, separated by single spaces.
func (e *valueEncoder) appendVector(dst, text []byte, elem uint32) ([]byte, bool) {
	dst = append(dst, '[')
	for i := 0; len(text) > 0; i++ {
		v, rest := text, text[len(text):]
		if j := bytes.IndexByte(text, ' '); j >= 0 {
			v, rest = text[:j], text[j+1:]
			if len(rest) == 0 {
				return dst, false
			}
		}
		if len(v) == 0 {
			return dst, false
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = e.appendJSON(dst, elem, v)
		text = rest
	}
	return append(dst, ']'), true
}

// appendArray appends the JSON array for an array literal such as
// {1,2}, {{"a b",NULL}} or [0:1]={1,2}, reporting false when the text is
// not one. The elements, never arrays themselves, have type elem.
func (e *valueEncoder) appendArray(dst, text []byte, elem uint32, delim byte) ([]byte, bool) {
	if len(text) > 0 && text[0] == '[' { // dimensions with lower bounds other than 1
		i := bytes.IndexByte(text, '=')
		if i < 0 {
			return dst, false
		}
		text = text[i+1:]
	}
	dst, rest, ok := e.appendDimension(dst, text, elem, delim)
	return dst, ok && len(rest) == 0
}

// appendDimension appends the JSON array for the braced list at the start
// of s and returns the text after it.
func (e *valueEncoder) appendDimension(dst, s []byte, elem uint32, delim byte) (out, rest []byte, ok bool) {
	if len(s) < 2 || s[0] != '{' {
		return dst, nil, false
	}
	dst = append(dst, '[')
	if s[1] == '}' {
		return append(dst, ']'), s[2:], true
	}
	for s = s[1:]; len(s) > 0; s = s[1:] {
		switch s[0] {
		case '{':
			if dst, s, ok = e.appendDimension(dst, s, elem, delim); !ok {
				return dst, nil, false
			}
		case '"':
			var v []byte
			if v, s, ok = e.unquoteElement(s); !ok {
				return dst, nil, false
			}
			dst = e.appendJSON(dst, elem, v)
		default:
			i := 0
			for i < len(s) && s[i] != delim && s[i] != '}' {
				i++
			}
			if i == 0 {
				return dst, nil, false
			}
			if v := s[:i]; len(v) == 4 && bytes.EqualFold(v, []byte("NULL")) {
				dst = append(dst, "null"...)
			} else {
				dst = e.appendJSON(dst, elem, v)
			}
			s = s[i:]
		}
		if len(s) == 0 || s[0] != delim {
			break
		}
		dst = append(dst, ',')
	}
	if len(s) == 0 || s[0] != '}' {
		return dst, nil, false
	}
	return append(dst, ']'), s[1:], true
}

// unquoteElement returns the value of the double-quoted array element at
// the start of s, and the text after it. A value with backslash escapes
// is unescaped into the encoder's scratch buffer.
func (e *valueEncoder) unquoteElement(s []byte) (v, rest []byte, ok bool) {
	s = s[1:]
	i := bytes.IndexAny(s, `"\`)
	if i < 0 {
		return nil, nil, false
	}
	if s[i] == '"' {
		return s[:i], s[i+1:], true
	}
	buf := append(e.unquote[:0], s[:i]...) //nolint:gocritic // reuses e.unquote's array; kept in e.unquote below
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			e.unquote = buf
			return buf, s[i+1:], true
		case '\\':
			if i++; i == len(s) {
				return nil, nil, false
			}
			buf = append(buf, s[i])
		default:
			buf = append(buf, c)
		}
	}
	return nil, nil, false
}

// appendTime appends the date or time in text, Postgres's ISO form read
// with the first of layouts that fits, as a JSON string of ISO 8601: the
// year, then the rest in UTC formatted as out. Years are numbered as ISO
// 8601 numbers them (1 BC is 0000, 2 BC -0001), and those before 0000 or
// past 9999 have a sign and at least six digits. infinity and -infinity,
// and text that is no time, become strings of the text.
func appendTime(dst, text []byte, layouts []string, out string) []byte {
	t, shift, ok := parseTime(string(text), layouts)
	if !ok {
		return appendString(dst, text)
	}
	t = t.UTC()
	dst = append(dst, '"')
	switch y := t.Year() + shift; {
	case 0 <= y && y <= 9999:
		dst = appendDigits(dst, y, 4)
	case y < 0:
		dst = appendDigits(append(dst, '-'), -y, 6)
	default:
		dst = appendDigits(append(dst, '+'), y, 6)
	}
	dst = t.AppendFormat(dst, out)
	return append(dst, '"')
}

// parseTime reads s with the first of layouts that fits. A year Go cannot
// read, written with BC or with more than four digits, is read as the
// year between 2000 and 2399 at the same place in the Gregorian calendar's
// 400-year cycle, and shift is what to add to the time's year.
func parseTime(s string, layouts []string) (t time.Time, shift int, ok bool) {
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, 0, true
		}
	}
	s, bc := strings.CutSuffix(s, " BC")
	i := strings.IndexByte(s, '-')
	if i < 4 || strings.Trim(s[:i], "0123456789") != "" {
		return time.Time{}, 0, false
	}
	year, err := strconv.Atoi(s[:i])
	if err != nil {
		return time.Time{}, 0, false
	}
	if bc {
		year = 1 - year
	}
	in := 2000 + (year%400+400)%400
	s = strconv.Itoa(in) + s[i:]
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, year - in, true
		}
	}
	return time.Time{}, 0, false
}

// appendDigits appends n, which is not negative, with at least width digits.
func appendDigits(dst []byte, n, width int) []byte {
	for w, p := 1, 10; w < width; w, p = w+1, p*10 {
		if n < p {
			dst = append(dst, '0')
		}
	}
	return strconv.AppendInt(dst, int64(n), 10)
}

// appendBytea appends bytea's hex form \x0a1b… as a JSON string in
// standard base64.
func appendBytea(dst, text []byte) []byte {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' || len(text)%2 != 0 {
		return appendString(dst, text)
	}
	start := len(dst)
	dst = append(dst, '"')
	var chunk [384]byte // a multiple of 3, so only the last chunk is padded
	for hx := text[2:]; len(hx) > 0; {
		n := min(len(hx)/2, len(chunk))
		if _, err := hex.Decode(chunk[:n], hx[:2*n]); err != nil {
			return appendString(dst[:start], text)
		}
		dst = base64.StdEncoding.AppendEncode(dst, chunk[:n])
		hx = hx[2*n:]
	}
	return append(dst, '"')
}

// isJSONNumber reports whether s is a number in JSON's grammar.
func isJSONNumber(s []byte) bool {
	digits := func(i int) int {
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		i = digits(i)
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return false
		}
		i = j
	}
	return i == len(s)
}

// appendString appends s as a JSON string escaped as encoding/json does
// without HTML escaping: invalid UTF-8 becomes U+FFFD and U+2028 and
// U+2029 are escaped.
func appendString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= ' ' && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
