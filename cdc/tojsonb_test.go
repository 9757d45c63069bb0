package cdc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
)

// samples holds SQL expressions of values of each type, edge values
// included, by type name: every base, range, multirange and domain type
// the server has built in, and the test's own types.
var samples = map[string][]string{
	"bool":                         {`true`, `false`},
	"bytea":                        {`'\x'`, `'\x00ff10'`, `decode(repeat('ab', 300), 'hex')`},
	"char":                         {`'x'`, `'"'`, `'\'`},
	"name":                         {`'pg_class'`, `'with "quote", {brace} and space'`},
	"int8":                         {`-9223372036854775808`, `9223372036854775807`, `0`},
	"int2":                         {`-32768`, `32767`},
	"int2vector":                   {`'1 -2 32767'`, `''`},
	"int4":                         {`-2147483648`, `2147483647`},
	"regproc":                      {`'now'`, `'-'`},
	"text":                         {`E'a "quoted" \\ line\nwith\ttab, é, 😀 and \u2028'`, `''`, `'NULL'`, `'{a,b}'`},
	"oid":                          {`0`, `4294967295`},
	"tid":                          {`'(0,1)'`, `'(4294967295,65535)'`},
	"xid":                          {`'0'`, `'4294967295'`},
	"cid":                          {`'0'`, `'4294967295'`},
	"oidvector":                    {`'1 4294967295'`, `''`},
	"json":                         {`'{"b": [1, 2.50, {"c": null}], "a": "x"}'`, `'"s"'`, `'{"a": 1, "a": 2}'`, `'1e400'`, `'[]'`, `'null'`},
	"xml":                          {`'<a href="x">t &amp; é</a>'`, `''`},
	"point":                        {`'(1.5,-2)'`, `'(NaN,Infinity)'`},
	"lseg":                         {`'[(0,0),(1,1)]'`},
	"path":                         {`'((0,0),(1,1),(2,0))'`, `'[(0,0),(1,1)]'`},
	"box":                          {`'(1,2),(0,0)'`, `'(3,3),(2,2)'`},
	"polygon":                      {`'((0,0),(1,1),(1,0))'`},
	"line":                         {`'{1,-1,0}'`},
	"float4":                       {`0.1`, `'1.5e30'`, `'-0'`, `'NaN'`, `'Infinity'`, `'-Infinity'`, `'1e-45'`, `'3.4028235e38'`},
	"float8":                       {`'1.0000000000000002'`, `'5e-324'`, `'1.7976931348623157e308'`, `'-0'`, `'NaN'`, `'Infinity'`, `'-Infinity'`},
	"circle":                       {`'<(1,2),3>'`},
	"macaddr8":                     {`'08:00:2b:01:02:03:04:05'`},
	"money":                        {`'1.50'`, `'-92233720368547758.08'`},
	"macaddr":                      {`'08:00:2b:01:02:03'`},
	"inet":                         {`'192.168.0.1/24'`, `'::1'`},
	"cidr":                         {`'10.0.0.0/8'`, `'2001:db8::/32'`},
	"aclitem":                      {`makeaclitem(0, (SELECT oid FROM pg_roles WHERE rolname = current_user), 'SELECT', true)`},
	"bpchar":                       {`'ab  '`, `''`},
	"varchar":                      {`'abc'`, `''`},
	"date":                         {`'2026-11-25'`, `'infinity'`, `'-infinity'`, `'4714-11-24 BC'`, `'0001-02-29 BC'`, `'0001-01-01'`, `'9999-12-31'`, `'10000-01-01'`, `'5874897-12-31'`},
	"time":                         {`'00:00:00'`, `'23:59:59.999999'`, `'24:00:00'`},
	"timestamp":                    {`'2026-11-25 08:00:00.5'`, `'infinity'`, `'-infinity'`, `'4714-11-24 00:00:00 BC'`, `'0001-12-31 23:59:59.999999 BC'`, `'9999-12-31 23:59:59.999999'`, `'10000-01-01 00:00:00'`, `'294276-12-31 23:59:59.999999'`},
	"timestamptz":                  {`'2026-11-25 08:00:00.123456+00'`, `'2026-01-02 03:04:05.5+05:30'`, `'infinity'`, `'-infinity'`, `'4714-11-24 00:00:00+00 BC'`, `'0001-12-31 23:00:00-02 BC'`, `'9999-12-31 23:00:00-05'`, `'294276-12-31 23:59:59.999999+00'`},
	"interval":                     {`'1 year 2 mons 3 days 04:05:06.7'`, `'-178000000 years'`, `'0'`},
	"timetz":                       {`'08:00:00+05'`, `'23:59:59.5-01:30'`, `'00:00:00+15:59'`},
	"bit":                          {`'1'`, `'101'`},
	"varbit":                       {`''`, `'101010'`},
	"numeric":                      {`'12345678901234567890.000000001'`, `'-0.0015'`, `'NaN'`, `'Infinity'`, `'-Infinity'`, `'1e-20'`, `'0'`},
	"refcursor":                    {`'cur'`},
	"regprocedure":                 {`'now()'`, `'sum(int4)'`},
	"regoper":                      {`'||/'`},
	"regoperator":                  {`'+(int4,int4)'`, `'-(NONE,int4)'`},
	"regclass":                     {`'pg_class'`, `'-'`},
	"regtype":                      {`'int4'`, `'timestamptz[]'`, `'"char"'`},
	"regconfig":                    {`'english'`},
	"regdictionary":                {`'simple'`},
	"regnamespace":                 {`'public'`, `'pg_catalog'`},
	"regrole":                      {`(SELECT oid FROM pg_roles WHERE rolname = current_user)::regrole`},
	"regcollation":                 {`'"C"'`, `'"POSIX"'`},
	"uuid":                         {`'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`},
	"txid_snapshot":                {`'10:20:10,14,15'`},
	"pg_lsn":                       {`'16/B374D848'`, `'0/0'`, `'FFFFFFFF/FFFFFFFF'`},
	"tsvector":                     {`'a fat cat:1A,2'`},
	"tsquery":                      {`'fat & (rat | cat)'`},
	"jsonb":                        {`'{"b": [true, {"c": "é\n"}], "a": 1.50}'`, `'"s"'`, `'null'`, `'1e-7'`, `'[]'`},
	"jsonpath":                     {`'$.a[*] ? (@ > 1)'`},
	"int4range":                    {`'[1,3)'`, `'empty'`, `'(,)'`},
	"numrange":                     {`'[1.5,2.5]'`},
	"tsrange":                      {`'["2026-01-01 00:00:00",infinity)'`},
	"tstzrange":                    {`'["2026-01-01 00:00:00+00",)'`},
	"daterange":                    {`'[2026-01-01,2026-02-01)'`},
	"int8range":                    {`'[-9223372036854775808,9223372036854775807)'`},
	"int4multirange":               {`'{[1,3), [5,7)}'`, `'{}'`},
	"nummultirange":                {`'{[1.5,2.5]}'`},
	"tsmultirange":                 {`'{["2026-01-01 00:00:00","2026-01-02 00:00:00")}'`},
	"tstzmultirange":               {`'{["2026-01-01 00:00:00+00",)}'`},
	"datemultirange":               {`'{[2026-01-01,2026-02-01), [2026-03-01,)}'`},
	"int8multirange":               {`'{(,0]}'`},
	"pg_snapshot":                  {`'10:20:10,14,15'`},
	"xid8":                         {`'0'`, `'18446744073709551615'`},
	"pg_node_tree":                 {`(SELECT proargdefaults FROM pg_proc WHERE proargdefaults IS NOT NULL ORDER BY oid LIMIT 1)`},
	"pg_ndistinct":                 {`(SELECT stxdndistinct FROM pg_statistic_ext_data LIMIT 1)`},
	"pg_dependencies":              {`(SELECT stxddependencies FROM pg_statistic_ext_data LIMIT 1)`},
	"pg_mcv_list":                  {`(SELECT stxdmcv FROM pg_statistic_ext_data LIMIT 1)`},
	"cardinal_number":              {`0`, `2147483647`},
	"character_data":               {`'abc'`},
	"sql_identifier":               {`'x'`},
	"time_stamp":                   {`'2026-11-25 08:00:00.12+00'`},
	"yes_or_no":                    {`'YES'`},
	"gtsvector":                    nil, // its input function refuses every value, and no catalog holds one
	"pg_brin_bloom_summary":        nil, // held inside BRIN indexes only
	"pg_brin_minmax_multi_summary": nil, // held inside BRIN indexes only

	// The test's own types.
	"mood":           {`'sad'`, `'with space'`, `'NULL'`, `'é"\'`},
	"pair":           {`ROW(1, 'a "q"')`, `ROW(NULL, '\')`, `ROW(-1, '')`},
	"nest":           {`ROW(ROW(2, 'x,y'), '2026-11-25 08:00:00+00', '{1,NULL}', 1.50)`},
	"posint":         {`1`, `2147483647`},
	"small":          {`99`},
	"doc":            {`'{"a": [1, "x"]}'`},
	"amount":         {`'19.99'`, `'NaN'`},
	"moment":         {`'2026-11-25 08:00:00+02'`, `'0044-03-15 12:00:00+00 BC'`},
	"blob":           {`'\xdeadbeef'`},
	"label":          {`'a,b'`},
	"intlist":        {`'{1,NULL}'`, `'{{1,2},{3,4}}'`, `'{}'`},
	"couple":         {`ROW(3, 'c')`},
	"place":          {`'(1,2),(0,0)'`},
	"ref":            {`7`},
	"ts_dom":         {`'2026-11-25 08:00:00'`},
	"day":            {`'0044-03-15 BC'`, `'2026-11-25'`},
	"hstore":         {`'a=>1, "b c"=>NULL, "q\"uote"=>"x,y"'`, `''`},
	"ghstore":        nil, // hstore's index type: its input function refuses every value
	"floatrng":       {`'[1.5,2.5)'`, `'(,)'`},
	"floatrng_multi": {`'{[1.5,2.5), [3,)}'`},
}

// typesSQL creates the test's own types: an enum, composites, domains over
// several base types (and over a domain, an array and a composite), and a
// range, which brings a multirange.
const typesSQL = `
CREATE TYPE mood AS ENUM ('sad', 'with space', 'NULL', 'é"\');
CREATE TYPE pair AS (a int, b text);
CREATE TYPE nest AS (p pair, at timestamptz, ns int[], n numeric);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN small AS posint CHECK (VALUE < 100);
CREATE DOMAIN doc AS jsonb;
CREATE DOMAIN amount AS numeric;
CREATE DOMAIN moment AS timestamptz;
CREATE DOMAIN blob AS bytea;
CREATE DOMAIN label AS text;
CREATE DOMAIN intlist AS int[];
CREATE DOMAIN couple AS pair;
CREATE DOMAIN place AS box;
CREATE DOMAIN ref AS oid;
CREATE DOMAIN ts_dom AS timestamp;
CREATE DOMAIN day AS date;
CREATE TYPE floatrng AS RANGE (subtype = float8, multirange_type_name = floatrng_multi);
CREATE TABLE stats_src (a int, b int);
INSERT INTO stats_src SELECT i % 10, i % 5 FROM generate_series(1, 1000) i;
CREATE STATISTICS stats_all (ndistinct, dependencies, mcv) ON a, b FROM stats_src;
ANALYZE stats_src;`

// difference is a documented way in which a value triggerd delivers
// differs from to_jsonb's. check reports whether ours, a leaf of the
// delivered value, stands for the same value as pg, to_jsonb's, given
// text, Postgres's text form of it.
type difference struct {
	what  string
	check func(ours, pg, text any) error
}

// differences lists every documented difference from to_jsonb (README,
// "Postgres row changes"), by the kind of value it applies to; the kind
// of a domain is its base type's, and arrays' elements have theirs. Any
// other difference fails the test. Numbers are compared by their value,
// so 1e-07 and 0.0000001, or -0 and 0, are the same.
var differences = map[string]difference{
	// numeric is a string, so that receivers whose numbers are float64
	// lose no digits; to_jsonb writes a number.
	"numeric": {"numeric as a string", func(ours, pg, _ any) error {
		s, ok := ours.(string)
		if !ok {
			return errNotString
		}
		if p, ok := pg.(string); ok { // NaN, Infinity
			return same(s == p)
		}
		return sameNumber(json.Number(s), pg)
	}},
	// oid is a number, like the other integers; to_jsonb writes a string.
	"oid": {"oid as a number", func(ours, pg, _ any) error {
		n, ok := ours.(json.Number)
		p, ok2 := pg.(string)
		if !ok || !ok2 {
			return fmt.Errorf("not a number where to_jsonb has a string")
		}
		return sameNumber(n, json.Number(p))
	}},
	// bytea is base64; to_jsonb writes its \x hex text.
	"bytea": {"bytea as base64", func(ours, pg, _ any) error {
		s, ok := ours.(string)
		p, ok2 := pg.(string)
		if !ok || !ok2 {
			return errNotString
		}
		got, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return err
		}
		want, err := hex.DecodeString(strings.TrimPrefix(p, `\x`))
		if err != nil {
			return err
		}
		return same(bytes.Equal(got, want))
	}},
	// Dates and times are ISO 8601: timestamptz in UTC with Z, where
	// to_jsonb writes the session's offset (+00:00 here); years before 1
	// AD numbered as ISO 8601 numbers them (1 BC is 0000), where to_jsonb
	// writes the year with BC; and years outside 0000-9999 with a sign and
	// six digits or more, where to_jsonb writes five digits or more.
	"time": {"ISO 8601 times", func(ours, pg, _ any) error {
		p, ok := pg.(string)
		return same(ok && ours == isoTime(p))
	}},
	// Composite values are their Postgres text; to_jsonb writes objects.
	"composite": {"composites as text", func(ours, _, text any) error {
		return same(ours == text)
	}},
	// hstore is its Postgres text; to_jsonb writes an object, through
	// the extension's cast to json.
	"hstore": {"hstore as text", func(ours, _, text any) error {
		return same(ours == text)
	}},
}

// isoTime turns to_jsonb's form of a date or time, taken in UTC, into the
// one triggerd documents.
func isoTime(s string) string {
	if s == "infinity" || s == "-infinity" {
		return s
	}
	s, bc := strings.CutSuffix(s, " BC")
	s = strings.Replace(s, "+00:00", "Z", 1)
	y, rest, _ := strings.Cut(s, "-")
	year, _ := strconv.Atoi(y)
	if bc {
		year = 1 - year
	}
	switch {
	case year < 0:
		return fmt.Sprintf("-%06d-%s", -year, rest)
	case year > 9999:
		return fmt.Sprintf("+%06d-%s", year, rest)
	}
	return fmt.Sprintf("%04d-%s", year, rest)
}

var errNotString = errors.New("not a string")

// same returns an error when ok is false.
func same(ok bool) error {
	if !ok {
		return errors.New("not the same value")
	}
	return nil
}

// sameNumber compares two JSON numbers by their exact value.
func sameNumber(a json.Number, b any) error {
	bn, ok := b.(json.Number)
	if !ok {
		return fmt.Errorf("%v is not a number", b)
	}
	x, okx := new(big.Rat).SetString(string(a))
	y, oky := new(big.Rat).SetString(string(bn))
	return same(okx && oky && x.Cmp(y) == 0)
}

// equalJSON compares decoded JSON values, numbers by their value.
func equalJSON(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		return sameNumber(a, b) == nil
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equalJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !equalJSON(v, w) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// column is a column of the test table and how to compare its values.
type column struct {
	name, typ string // the column's name and type
	kind      string // its values' (or elements') kind: a key of differences, or none
	vector    bool   // int2vector or oidvector: a value is a list of values of kind
}

// compare compares a delivered value with to_jsonb's, leaf by leaf, where
// text, Postgres's text of the value (an array of texts for an array),
// shows where the leaves are.
func (c *column) compare(ours, pg, text any) error {
	if list, ok := text.([]any); ok {
		o, ok1 := ours.([]any)
		p, ok2 := pg.([]any)
		if !ok1 || !ok2 || len(o) != len(list) || len(p) != len(list) {
			return fmt.Errorf("%v is not an array of %d like %v", ours, len(list), pg)
		}
		for i := range list {
			if err := c.compare(o[i], p[i], list[i]); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
		return nil
	}
	if text == nil { // SQL NULL
		return same(ours == nil && pg == nil)
	}
	if !c.vector {
		return c.value(ours, pg, text)
	}
	o, ok1 := ours.([]any)
	p, ok2 := pg.([]any)
	if !ok1 || !ok2 || len(o) != len(p) {
		return fmt.Errorf("%v is not a list like %v", ours, pg)
	}
	for i := range o {
		if err := c.value(o[i], p[i], nil); err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
	}
	return nil
}

// value compares one value of the column's kind.
func (c *column) value(ours, pg, text any) error {
	d, ok := differences[c.kind]
	if !ok {
		return same(equalJSON(ours, pg))
	}
	if err := d.check(ours, pg, text); err != nil {
		return fmt.Errorf("%s: %w", d.what, err)
	}
	return nil
}

// TestValuesAgainstToJSONB captures rows with a column of every type the
// server has built in and of the test's own types, each also as an array,
// holding edge values, NULLs, multi-dimensional arrays, empty arrays and
// arrays with other lower bounds; and compares every delivered value with
// Postgres's to_jsonb of it. They must be the same value but for the
// differences listed in differences.
func TestValuesAgainstToJSONB(t *testing.T) {
	t.Parallel()
	r := newRig(t, typesSQL)
	ctx := context.Background()
	conn := r.connect(r.src)
	// The session writes values as the walsender does.
	r.exec(`SET DateStyle = ISO; SET TimeZone = UTC; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET bytea_output = hex`)
	var hstore bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'hstore')`).Scan(&hstore); err != nil {
		t.Fatal(err)
	}
	if hstore {
		r.exec(`CREATE EXTENSION hstore`)
	} else {
		t.Log("hstore is not compared: the server does not have the extension (a contrib module: Debian ships it in postgresql-NN, RHEL in postgresqlNN-contrib)")
	}

	// Every base, range, multirange and domain type built in (below
	// FirstNormalObjectId), and the test's own types.
	rows, err := conn.Query(ctx, `WITH RECURSIVE base (oid, base) AS (
			SELECT oid, oid FROM pg_type WHERE typtype <> 'd'
			UNION ALL
			SELECT d.oid, base.base FROM pg_type d JOIN base ON d.typbasetype = base.oid WHERE d.typtype = 'd')
		SELECT t.typname::text, quote_ident(n.nspname) || '.' || quote_ident(t.typname),
			coalesce(quote_ident(n.nspname) || '.' || quote_ident(a.typname), ''),
			CASE WHEN b.oid = 'numeric'::regtype THEN 'numeric'
				WHEN b.oid IN ('oid'::regtype, 'oidvector'::regtype) THEN 'oid'
				WHEN b.oid = 'bytea'::regtype THEN 'bytea'
				WHEN b.oid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype) THEN 'time'
				WHEN b.typtype = 'c' THEN 'composite'
				WHEN b.typname = 'hstore' THEN 'hstore'
				ELSE '' END,
			b.oid IN ('int2vector'::regtype, 'oidvector'::regtype)
		FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
		JOIN base ON base.oid = t.oid JOIN pg_type b ON b.oid = base.base
		LEFT JOIN pg_type a ON a.oid = t.typarray
		WHERE t.typtype IN ('b', 'c', 'd', 'e', 'm', 'r') AND NOT (t.typtype = 'b' AND t.typoutput = 'array_out'::regproc)
			AND (t.oid < 16384 AND t.typrelid = 0 OR n.nspname = 'public' AND t.typname <> 'stats_src')
		ORDER BY t.oid`)
	if err != nil {
		t.Fatal(err)
	}
	type typ struct {
		Name, SQL, Array, Kind string
		Vector                 bool
	}
	types, err := pgx.CollectRows(rows, pgx.RowToStructByPos[typ])
	if err != nil {
		t.Fatal(err)
	}
	var cols []column
	var values [][]string // each column's values, as SQL
	for i, ty := range types {
		vals, ok := samples[ty.Name]
		if !ok {
			t.Errorf("type %s has no sample values: add some to samples (or nil, saying why it cannot have any)", ty.Name)
		}
		cols = append(cols, column{name: fmt.Sprintf("c%d_%s", i, ty.Name), typ: ty.SQL, kind: ty.Kind, vector: ty.Vector})
		values = append(values, vals)
		if ty.Array == "" || len(vals) == 0 {
			continue
		}
		// Arrays: NULLs, two dimensions, empty, lower bounds other than 1.
		v0, v1 := vals[0], vals[len(vals)-1]
		arr := func(s string) string { return fmt.Sprintf("%s::%s", s, ty.Array) }
		cols = append(cols, column{name: fmt.Sprintf("a%d_%s", i, ty.Name), typ: ty.Array, kind: ty.Kind, vector: ty.Vector})
		values = append(values, []string{
			arr(fmt.Sprintf("ARRAY[(%s)::%s, NULL, (%s)::%[2]s]", v0, ty.SQL, v1)),
			arr(fmt.Sprintf("ARRAY[[(%s)::%s, (%s)::%[2]s], [NULL, (%[1]s)::%[2]s]]", v0, ty.SQL, v1)),
			arr(`'{}'`),
			arr(fmt.Sprintf("('[0:1]=' || ARRAY[(%s)::%s, (%s)::%[2]s]::text)", v1, ty.SQL, v0)),
			arr("ARRAY[NULL]"),
		})
	}
	for name := range samples {
		if !slices.ContainsFunc(types, func(ty typ) bool { return ty.Name == name }) && (hstore || name != "hstore" && name != "ghstore") {
			t.Errorf("samples has type %s, which the server does not", name)
		}
	}

	// One row per sample, the last values repeated; and a row of NULLs.
	n := 0
	for _, vals := range values {
		n = max(n, len(vals))
	}
	var ddl strings.Builder
	ddl.WriteString("CREATE TABLE alltypes (id int PRIMARY KEY")
	for _, c := range cols {
		fmt.Fprintf(&ddl, ", %s %s", c.name, c.typ)
	}
	ddl.WriteString(")")
	r.exec(ddl.String())
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: alltypes}}`, ""), cdc.Options{})
	r.waitStreaming()
	for row := range n + 1 {
		var ins strings.Builder
		fmt.Fprintf(&ins, "INSERT INTO alltypes VALUES (%d", row)
		for i, c := range cols {
			switch vals := values[i]; {
			case row == n || len(vals) == 0:
				ins.WriteString(", NULL")
			default:
				fmt.Fprintf(&ins, ", (%s)::%s", vals[min(row, len(vals)-1)], c.typ)
			}
		}
		ins.WriteString(")")
		if _, err := conn.Exec(ctx, ins.String()); err != nil {
			t.Fatalf("insert row %d: %v", row, err)
		}
	}
	got := r.hook.Wait(t, n+1, 20*time.Second)

	var texts strings.Builder
	texts.WriteString("SELECT to_jsonb(alltypes)::text, to_jsonb(x)::text FROM alltypes, LATERAL (SELECT ")
	for i, c := range cols {
		if i > 0 {
			texts.WriteString(", ")
		}
		cast := "text"
		if strings.HasPrefix(c.name, "a") {
			cast = "text[]"
		}
		fmt.Fprintf(&texts, "%s::%s AS %s", c.name, cast, c.name)
	}
	texts.WriteString(") x WHERE id = $1")
	decode := func(s []byte) map[string]any {
		d := json.NewDecoder(bytes.NewReader(s))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return m
	}
	compared := 0
	for _, ev := range got {
		var data struct{ Doc json.RawMessage }
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			t.Fatal(err)
		}
		doc := decode(data.Doc)
		id, _ := doc["id"].(json.Number).Int64()
		var pgRow, textRow string
		if err := conn.QueryRow(ctx, texts.String(), id).Scan(&pgRow, &textRow); err != nil {
			t.Fatal(err)
		}
		pg, text := decode([]byte(pgRow)), decode([]byte(textRow))
		for _, c := range cols {
			ours, ok := doc[c.name]
			if !ok {
				t.Errorf("row %d: %s is missing", id, c.name)
				continue
			}
			if err := c.compare(ours, pg[c.name], text[c.name]); err != nil {
				o, _ := json.Marshal(ours)
				p, _ := json.Marshal(pg[c.name])
				t.Errorf("row %d: %s %s: delivered %s, to_jsonb %s: %v", id, c.name, c.typ, o, p, err)
			}
			compared++
		}
	}
	t.Logf("compared %d values of %d columns", compared, len(cols))
}
