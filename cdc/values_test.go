package cdc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/triggerd/triggerd/store/pgtest"
)

// valuesConn connects to a fresh database with the walsender's settings
// and creates the user-defined types the tests use.
func valuesConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"DateStyle": "ISO", "TimeZone": "UTC", "IntervalStyle": "postgres",
		"extra_float_digits": "3", "bytea_output": "hex",
	} {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `CREATE TYPE mood AS ENUM ('sad', 'happy', 'with space', 'NULL');
		CREATE TYPE pair AS (a int, b text);
		CREATE DOMAIN posint AS int CHECK (VALUE > 0);
		CREATE DOMAIN small AS posint CHECK (VALUE < 100);
		CREATE DOMAIN doc AS jsonb;
		CREATE DOMAIN intlist AS int[];
		CREATE DOMAIN moment AS timestamptz;
		CREATE DOMAIN place AS box`); err != nil {
		t.Fatal(err)
	}
	return conn
}

// queryValues runs sql with the simple protocol and returns the text form
// and type of each column of the one row its SELECT returns; e learns the
// types.
func queryValues(t testing.TB, conn *pgx.Conn, e *valueEncoder, sql string) (texts [][]byte, oids []uint32) {
	t.Helper()
	results, err := conn.PgConn().Exec(context.Background(), sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	i := slices.IndexFunc(results, func(r *pgconn.Result) bool { return r.FieldDescriptions != nil })
	if i < 0 {
		t.Fatalf("%s: no rows", sql)
	}
	r := results[i]
	if len(r.Rows) != 1 {
		t.Fatalf("%s: %d rows", sql, len(r.Rows))
	}
	for _, f := range r.FieldDescriptions {
		oids = append(oids, f.DataTypeOID)
	}
	if err := e.learn(context.Background(), conn, oids); err != nil {
		t.Fatal(err)
	}
	return r.Rows[0], oids
}

// int2vectorOID is the type of a list of int2 written 1 2 3, as in pg_index.indkey.
const int2vectorOID = 22

// compact returns the compact form of JSON, failing the test if it is invalid.
func compact(t *testing.T, what string, js []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, js); err != nil {
		t.Fatalf("%s is not JSON: %s: %v", what, js, err)
	}
	return b.String()
}

// TestAppendJSON encodes values of every family as Postgres sends them.
func TestAppendJSON(t *testing.T) {
	t.Parallel()
	conn := valuesConn(t)
	longBytea := `"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 1000)) + `"`
	tests := []struct {
		expr, want string
		timeZone   string // the session's, when not UTC
		typ        string // the type pgoutput names, when not the result's: a domain's, which results name by its base type
	}{
		{expr: `(-32768)::int2`, want: `-32768`},
		{expr: `2147483647::int4`, want: `2147483647`},
		{expr: `'-9223372036854775808'::int8`, want: `-9223372036854775808`},
		{expr: `4294967295::oid`, want: `4294967295`},
		{expr: `0.1::float4`, want: `0.1`},
		{expr: `'1.5e30'::float4`, want: `1.5e+30`},
		{expr: `1.0000000000000002::float8`, want: `1.0000000000000002`},
		{expr: `'1e-7'::float8`, want: `1e-07`},
		{expr: `'-0'::float8`, want: `-0`},
		{expr: `'NaN'::float4`, want: `"NaN"`},
		{expr: `'Infinity'::float8`, want: `"Infinity"`},
		{expr: `'-Infinity'::float8`, want: `"-Infinity"`},
		{expr: `12345678901234567890.000000001::numeric`, want: `"12345678901234567890.000000001"`},
		{expr: `1.50::numeric(10,3)`, want: `"1.500"`},
		{expr: `'-1.5e-3'::numeric`, want: `"-0.0015"`},
		{expr: `'NaN'::numeric`, want: `"NaN"`},
		{expr: `true`, want: `true`},
		{expr: `false`, want: `false`},
		{expr: `E'say "hi" \\ new\nline\ttab\x01\x1f é 😀 \u2028 <&>'::text`,
			want: `"say \"hi\" \\ new\nline\ttab\u0001\u001f é 😀 \u2028 <&>"`},
		{expr: `''::text`, want: `""`},
		{expr: `'abc'::varchar(10)`, want: `"abc"`},
		{expr: `'ab'::char(4)`, want: `"ab  "`},
		{expr: `'pg_class'::name`, want: `"pg_class"`},
		{expr: `'x'::"char"`, want: `"x"`},
		{expr: `'2026-11-25 08:00:00.123456+00'::timestamptz`, want: `"2026-11-25T08:00:00.123456Z"`},
		{expr: `'2026-11-25 08:00:00'::timestamptz`, want: `"2026-11-25T08:00:00Z"`},
		{expr: `'2026-01-02 03:04:05+05:30'::timestamptz`, want: `"2026-01-01T21:34:05Z"`},
		{expr: `'2026-01-02 03:04:05.5+05:30'::timestamptz`, want: `"2026-01-01T21:34:05.5Z"`, timeZone: "Asia/Kolkata"},
		{expr: `'1900-01-01 00:00:00+00'::timestamptz`, want: `"1900-01-01T00:00:00Z"`, timeZone: "Europe/Amsterdam"},
		{expr: `'infinity'::timestamptz`, want: `"infinity"`},
		{expr: `'-infinity'::timestamptz`, want: `"-infinity"`},
		{expr: `'0044-03-15 12:00:00+00 BC'::timestamptz`, want: `"-000043-03-15T12:00:00Z"`},
		{expr: `'0001-01-01 00:00:00+00 BC'::timestamptz`, want: `"0000-01-01T00:00:00Z"`},
		{expr: `'4714-11-24 00:00:00+00 BC'::timestamptz`, want: `"-004713-11-24T00:00:00Z"`},
		{expr: `'0044-03-15 00:00:00+00 BC'::timestamptz`, want: `"-000043-03-15T00:00:00Z"`, timeZone: "Asia/Kolkata"},
		{expr: `'0001-01-01 02:00:00+00'::timestamptz`, want: `"0001-01-01T02:00:00Z"`, timeZone: "Etc/GMT+5"},
		{expr: `'0001-12-31 23:00:00+00 BC'::timestamptz`, want: `"0000-12-31T23:00:00Z"`, timeZone: "Etc/GMT-5"},
		{expr: `'10000-01-01 00:00:00+00'::timestamptz`, want: `"+010000-01-01T00:00:00Z"`},
		{expr: `'10000-01-01 03:00:00+00'::timestamptz`, want: `"+010000-01-01T03:00:00Z"`, timeZone: "Etc/GMT+5"},
		{expr: `'294276-12-31 23:59:59.999999+00'::timestamptz`, want: `"+294276-12-31T23:59:59.999999Z"`},
		{expr: `'2026-11-25 08:00:00.5'::timestamp`, want: `"2026-11-25T08:00:00.5"`},
		{expr: `'2026-11-25 08:00:00'::timestamp`, want: `"2026-11-25T08:00:00"`},
		{expr: `'infinity'::timestamp`, want: `"infinity"`},
		{expr: `'0044-03-15 12:00:00.25 BC'::timestamp`, want: `"-000043-03-15T12:00:00.25"`},
		{expr: `'294276-12-31 23:59:59.999999'::timestamp`, want: `"+294276-12-31T23:59:59.999999"`},
		{expr: `'2026-11-25'::date`, want: `"2026-11-25"`},
		{expr: `'-infinity'::date`, want: `"-infinity"`},
		{expr: `'0044-03-15 BC'::date`, want: `"-000043-03-15"`},
		{expr: `'0001-02-29 BC'::date`, want: `"0000-02-29"`},
		{expr: `'5874897-12-31'::date`, want: `"+5874897-12-31"`},
		{expr: `'{2026-11-25,0044-03-15 BC,infinity}'::date[]`, want: `["2026-11-25","-000043-03-15","infinity"]`},
		{expr: `'{"a": [1, 2.50, {"b": null}],  "c": "x"}'::json`, want: `{"a":[1,2.50,{"b":null}],"c":"x"}`},
		{expr: `'{"b": [true, {"c": "é\n"}], "a": 1.50}'::jsonb`, want: `{"a":1.50,"b":[true,{"c":"é\n"}]}`},
		{expr: `'"s"'::jsonb`, want: `"s"`},
		{expr: `'null'::jsonb`, want: `null`},
		{expr: `'{1,2,3}'::int4[]`, want: `[1,2,3]`},
		{expr: `ARRAY[1,NULL,3]::int8[]`, want: `[1,null,3]`},
		{expr: `ARRAY['a"b', 'c,d', NULL, '', 'NULL', 'back\slash', '{x}', ' sp ', 'é']::text[]`,
			want: `["a\"b","c,d",null,"","NULL","back\\slash","{x}"," sp ","é"]`},
		{expr: `ARRAY['a', 'b']::varchar[]`, want: `["a","b"]`},
		{expr: `'{1.50,NaN,12345678901234567890.000000001}'::numeric[]`, want: `["1.50","NaN","12345678901234567890.000000001"]`},
		{expr: `'{{1,2},{3,NULL}}'::int4[][]`, want: `[[1,2],[3,null]]`},
		{expr: `'[0:1]={7,8}'::int4[]`, want: `[7,8]`},
		{expr: `'[0:1][1:2]={{1,2},{3,4}}'::int4[]`, want: `[[1,2],[3,4]]`},
		{expr: `'{}'::int4[]`, want: `[]`},
		{expr: `'{t,f,NULL}'::bool[]`, want: `[true,false,null]`},
		{expr: `'{1.5,NaN,-Infinity}'::float8[]`, want: `[1.5,"NaN","-Infinity"]`},
		{expr: `ARRAY['2026-11-25 08:00:00.123456+00', 'infinity']::timestamptz[]`, want: `["2026-11-25T08:00:00.123456Z","infinity"]`},
		{expr: `'{2026-11-25,infinity}'::date[]`, want: `["2026-11-25","infinity"]`},
		{expr: `ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']::uuid[]`, want: `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`},
		{expr: `ARRAY['{"a": [1, "x,}\\\""]}', 'null', '"s"', NULL]::jsonb[]`, want: `[{"a":[1,"x,}\\\""]},null,"s",null]`},
		{expr: `ARRAY['\x0102ff'::bytea, '\x']`, want: `["AQL/",""]`},
		{expr: `ARRAY['1 day 02:00:00'::interval]`, want: `["1 day 02:00:00"]`},
		{expr: `ARRAY['(1,2),(0,0)'::box, '(3,3),(2,2)']`, want: `["(1,2),(0,0)","(3,3),(2,2)"]`},
		{expr: `ARRAY['(1,2),(0,0)'::place, NULL]`, want: `["(1,2),(0,0)",null]`},
		{expr: `ARRAY['happy'::mood, 'sad']`, want: `["happy","sad"]`},
		{expr: `ARRAY['sad'::mood, 'with space', 'NULL', NULL]`, want: `["sad","with space","NULL",null]`},
		{expr: `ARRAY[ROW(1, 'a "q"')::pair, ROW(NULL, '\')::pair, NULL]`, want: `["(1,\"a \"\"q\"\"\")","(,\"\\\\\")",null]`},
		{expr: `ARRAY[[5::posint, NULL], [7, 8]]`, typ: "posint[]", want: `[[5,null],[7,8]]`},
		{expr: `ARRAY['{"a": [1]}'::doc, NULL]`, typ: "doc[]", want: `[{"a":[1]},null]`},
		{expr: `ARRAY['2026-11-25 08:00:00+02'::moment]`, want: `["2026-11-25T06:00:00Z"]`},
		{expr: `ARRAY['08:00:00+05'::timetz, '23:59:59.5-01:30']`, want: `["08:00:00+05","23:59:59.5-01:30"]`},
		{expr: `ARRAY['1.50'::money, '-2']`, want: `["$1.50","-$2.00"]`},
		{expr: `'{"[1,3)","(,)"}'::int4range[]`, want: `["[1,3)","(,)"]`},
		{expr: `ARRAY['{[1,3), [5,7)}'::int4multirange]`, want: `["{[1,3),[5,7)}"]`},
		{expr: `ARRAY['1 2'::int2vector, '']`, want: `[[1,2],[]]`},
		{expr: `'1 -2 3'::int2vector`, want: `[1,-2,3]`},
		{expr: `''::int2vector`, want: `[]`},
		{expr: `'4 4294967295'::oidvector`, want: `[4,4294967295]`},
		{expr: `7::posint`, typ: "posint", want: `7`},
		{expr: `7::small`, typ: "small", want: `7`},
		{expr: `'{"b": 1}'::doc`, typ: "doc", want: `{"b":1}`},
		{expr: `'{1,NULL}'::intlist`, typ: "intlist", want: `[1,null]`},
		{expr: `'2026-11-25 08:00:00+02'::moment`, typ: "moment", want: `"2026-11-25T06:00:00Z"`},
		{expr: `'(1,2),(0,0)'::place`, typ: "place", want: `"(1,2),(0,0)"`},
		{expr: `'\x0102ff'::bytea`, want: `"AQL/"`},
		{expr: `''::bytea`, want: `""`},
		{expr: `decode(repeat('ab', 1000), 'hex')`, want: longBytea},
		{expr: `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid`, want: `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
		{expr: `'1 year 2 mons 3 days 04:05:06.7'::interval`, want: `"1 year 2 mons 3 days 04:05:06.7"`},
		{expr: `'192.168.0.1/24'::inet`, want: `"192.168.0.1/24"`},
		{expr: `'happy'::mood`, want: `"happy"`},
		{expr: `ROW(1, 'a "q"')::pair`, want: `"(1,\"a \"\"q\"\"\")"`},
	}
	e := newValueEncoder()
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			sql := "SELECT " + tt.expr
			if tt.timeZone != "" {
				sql = "SET TimeZone = '" + tt.timeZone + "'; " + sql + "; RESET TimeZone"
			}
			texts, oids := queryValues(t, conn, e, sql)
			if tt.typ != "" {
				typ, _ := queryValues(t, conn, e, "SELECT '"+tt.typ+"'::regtype::oid")
				oid, err := strconv.ParseUint(string(typ[0]), 10, 32)
				if err != nil {
					t.Fatal(err)
				}
				oids[0] = uint32(oid)
				if err := e.learn(context.Background(), conn, oids); err != nil {
					t.Fatal(err)
				}
			}
			got := e.appendJSON([]byte("prefix "), oids[0], texts[0])
			got, ok := bytes.CutPrefix(got, []byte("prefix "))
			if !ok {
				t.Fatalf("appendJSON overwrote dst: %s", got)
			}
			if g, w := compact(t, "output", got), compact(t, "want", []byte(tt.want)); g != w {
				t.Errorf("appendJSON(%d, %q) = %s, want %s", oids[0], texts[0], g, w)
			}
		})
	}
}

// TestAppendJSONMalformed feeds text Postgres does not send: numbers and
// arrays that do not parse become strings, and nothing panics.
func TestAppendJSONMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		oid        uint32
		text, want string
	}{
		{pgtype.Int4OID, `12a`, `"12a"`},
		{pgtype.Int4OID, ``, `""`},
		{pgtype.Float8OID, `1.`, `"1."`},
		{pgtype.Float8OID, `.5`, `".5"`},
		{pgtype.Float8OID, `1e`, `"1e"`},
		{pgtype.Float8OID, `01`, `"01"`},
		{pgtype.BoolOID, `true`, `"true"`},
		{pgtype.JSONBOID, `{"a":`, `"{\"a\":"`},
		{pgtype.ByteaOID, `\x0`, `"\\x0"`},
		{pgtype.ByteaOID, `\xzz`, `"\\xzz"`},
		{pgtype.ByteaOID, `\001`, `"\\001"`},
		{pgtype.TimestamptzOID, `2026-13-01 00:00:00+00`, `"2026-13-01 00:00:00+00"`},
		{pgtype.TextOID, "bad \xff utf-8", `"bad \ufffd utf-8"`},
		{4294967295, `x"y`, `"x\"y"`},
		{4294967295, `{1,2}`, `"{1,2}"`},
		{pgtype.Int4ArrayOID, `{1,2`, `"{1,2"`},
		{pgtype.Int4ArrayOID, `{1,}`, `"{1,}"`},
		{pgtype.Int4ArrayOID, `{{1}`, `"{{1}"`},
		{pgtype.Int4ArrayOID, `{1}x`, `"{1}x"`},
		{pgtype.Int4ArrayOID, `[0:1]`, `"[0:1]"`},
		{pgtype.Int4ArrayOID, `{`, `"{"`},
		{pgtype.Int4ArrayOID, ``, `""`},
		{pgtype.Int4ArrayOID, `{x}`, `["x"]`},
		{pgtype.TextArrayOID, `{"a}`, `"{\"a}"`},
		{pgtype.TextArrayOID, `{"a\`, `"{\"a\\"`},
		{pgtype.TextArrayOID, `{"a\"b`, `"{\"a\\\"b"`},
		{pgtype.TextArrayOID, `{"a"b}`, `"{\"a\"b}"`},
		{int2vectorOID, `1  2`, `"1  2"`},
		{int2vectorOID, `1 x`, `[1,"x"]`},
		{int2vectorOID, ` `, `" "`},
	}
	e := newValueEncoder()
	var oids []uint32
	for _, tt := range tests {
		oids = append(oids, tt.oid)
	}
	if err := e.learn(context.Background(), valuesConn(t), oids); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if got := e.appendJSON(nil, tt.oid, []byte(tt.text)); string(got) != tt.want {
			t.Errorf("appendJSON(%d, %q) = %s, want %s", tt.oid, tt.text, got, tt.want)
		}
	}
}

// FuzzAppendJSON checks that any text of any type gives valid JSON, and
// that strings are escaped as encoding/json escapes them.
func FuzzAppendJSON(f *testing.F) {
	oids := []uint32{pgtype.Int8OID, pgtype.Float8OID, pgtype.BoolOID, pgtype.JSONBOID,
		pgtype.ByteaOID, pgtype.TimestamptzOID, pgtype.DateOID, pgtype.TextOID,
		pgtype.TextArrayOID, pgtype.JSONBArrayOID, pgtype.BoxArrayOID, int2vectorOID}
	for _, s := range []string{`-1.5e+30`, `t`, `{"a":[1]}`, `\x00ff`, `2026-11-25 08:00:00.5+05:30`,
		`0044-03-15 12:00:00+05:30 BC`, `294276-12-31 23:59:59.999999`, `1 2 3`,
		`[0:1]={{"a\"b",NULL},{c,"d"}}`, "\x01\"\\\xe2\x80\xa8\xff<>"} {
		for _, oid := range oids {
			f.Add(oid, s)
		}
	}
	e := newValueEncoder()
	if err := e.learn(context.Background(), valuesConn(f), oids); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, oid uint32, text string) {
		got := e.appendJSON(nil, oid, []byte(text))
		if !json.Valid(got) {
			t.Fatalf("appendJSON(%d, %q) = %s, not JSON", oid, text, got)
		}
		if oid != pgtype.TextOID {
			return
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(text); err != nil {
			t.Fatal(err)
		}
		if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
			t.Fatalf("appendJSON(text, %q) = %s, encoding/json gives %s", text, got, w)
		}
	})
}

// BenchmarkAppendJSON encodes a typical row: int8, text, numeric,
// timestamptz, bool and jsonb.
func BenchmarkAppendJSON(b *testing.B) {
	conn := valuesConn(b)
	e := newValueEncoder()
	texts, oids := queryValues(b, conn, e, `SELECT 1234567::int8, 'order shipped to "Main St"'::text,
		19.99::numeric, now()::timestamptz, true, '{"sku": "A-1", "qty": 2, "tags": ["x"]}'::jsonb`)
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		dst = dst[:0]
		for i, text := range texts {
			dst = e.appendJSON(dst, oids[i], text)
		}
	}
}
