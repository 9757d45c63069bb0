package cdc_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
)

// data decodes an event's data.
func data(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("data %s: %v", raw, err)
	}
	return m
}

// byLSN sorts receipts by their change's position: deliveries to
// different triggers may arrive in any order.
func byLSN(t *testing.T, got []dispatchtest.Receipt) []dispatchtest.Receipt {
	t.Helper()
	lsn := func(r dispatchtest.Receipt) pglogrepl.LSN {
		var d struct{ LSN string }
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatal(err)
		}
		l, err := pglogrepl.ParseLSN(d.LSN)
		if err != nil {
			t.Fatalf("lsn %q: %v", d.LSN, err)
		}
		return l
	}
	slices.SortStableFunc(got, func(a, b dispatchtest.Receipt) int { return cmp.Compare(lsn(a), lsn(b)) })
	return got
}

func TestInsertUpdateDelete(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY, name text, email text)`)
	r.mustStart(r.config("n1", `
- {name: ins, type: DB_INSERT, url: "{hook}/ins", options: {db: app, col: users}}
- {name: upd, type: DB_UPDATE, url: "{hook}/upd", options: {col: users}}
- {name: del, type: DB_DELETE, url: "{hook}/del", options: {col: public.users}}
`, ""), cdc.Options{})
	r.waitStreaming()
	r.exec(`INSERT INTO users VALUES (1, 'ann', 'ann@example.com')`)
	r.exec(`UPDATE users SET name = 'anne' WHERE id = 1`)
	r.exec(`UPDATE users SET id = 2 WHERE id = 1`)
	r.exec(`DELETE FROM users WHERE id = 2`)
	got := byLSN(t, r.hook.Wait(t, 4, 10*time.Second))
	want := []struct {
		typ    string
		doc    any
		before any
		find   any
	}{
		{"DB_INSERT", map[string]any{"id": 1.0, "name": "ann", "email": "ann@example.com"}, nil, map[string]any{"id": 1.0}},
		{"DB_UPDATE", map[string]any{"id": 1.0, "name": "anne", "email": "ann@example.com"}, map[string]any{"id": 1.0}, map[string]any{"id": 1.0}},
		{"DB_UPDATE", map[string]any{"id": 2.0, "name": "anne", "email": "ann@example.com"}, map[string]any{"id": 1.0}, map[string]any{"id": 2.0}},
		{"DB_DELETE", nil, map[string]any{"id": 2.0}, map[string]any{"id": 2.0}},
	}
	var lastLSN string
	for i, w := range want {
		ev := got[i]
		d := data(t, ev.Data)
		if ev.Type != w.typ || !reflect.DeepEqual(d["doc"], w.doc) || !reflect.DeepEqual(d["before"], w.before) || !reflect.DeepEqual(d["find"], w.find) {
			t.Errorf("event %d: %s %s, want %s doc %v before %v find %v", i, ev.Type, ev.Data, w.typ, w.doc, w.before, w.find)
		}
		if d["db"] != "app" || d["schema"] != "public" || d["col"] != "users" {
			t.Errorf("event %d: where: %s", i, ev.Data)
		}
		if _, ok := d["xid"].(float64); !ok {
			t.Errorf("event %d: xid: %s", i, ev.Data)
		}
		commit, err := time.Parse(time.RFC3339Nano, d["commit_time"].(string))
		if err != nil || ev.Time != d["commit_time"] || time.Since(commit) > time.Minute {
			t.Errorf("event %d: CloudEvent time %s, commit_time %v", i, ev.Time, d["commit_time"])
		}
		lsn, _ := d["lsn"].(string)
		if lsn == "" || lsn == lastLSN {
			t.Errorf("event %d: lsn %q", i, lsn)
		}
		lastLSN = lsn
	}
}

func TestTypedValuesAndTOAST(t *testing.T) {
	t.Parallel()
	r := newRig(t, `
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE things (
	id bigint PRIMARY KEY, f float8, n numeric, ok bool, t text, ts timestamptz, d date,
	j jsonb, a int[], tags text[], raw bytea, u uuid, m mood, nothing text, big text);
ALTER TABLE things ALTER COLUMN big SET STORAGE EXTERNAL;`)
	r.mustStart(r.config("n1", `
- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: things}}
- {name: upd, type: DB_UPDATE, url: "{hook}", options: {col: things}}
`, ""), cdc.Options{})
	r.waitStreaming()
	big := strings.Repeat("0123456789", 1000) // stored out of line, uncompressed
	r.exec(`INSERT INTO things VALUES (9007199254740993, 1.5, 12345678901234567890.000000001, true, 'a "quoted"
line', '2026-11-25 08:00:00.123456+02', '2026-11-25', '{"k": [1, {"x": null}]}', '{1,2,NULL}', '{"a,b", ""}',
'\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'sad', NULL, $1)`, big)
	r.exec(`UPDATE things SET t = 'changed' WHERE id = 9007199254740993`)
	r.exec(`ALTER TABLE things REPLICA IDENTITY FULL`)
	r.exec(`UPDATE things SET t = 'again' WHERE id = 9007199254740993`)
	got := byLSN(t, r.hook.Wait(t, 3, 10*time.Second))

	var ins struct{ Doc map[string]json.RawMessage }
	if err := json.Unmarshal(got[0].Data, &ins); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": `9007199254740993`, "f": `1.5`, "n": `"12345678901234567890.000000001"`, "ok": `true`,
		"t": `"a \"quoted\"\nline"`, "ts": `"2026-11-25T06:00:00.123456Z"`, "d": `"2026-11-25"`,
		"j": `{"k":[1,{"x":null}]}`, "a": `[1,2,null]`, "tags": `["a,b",""]`, "raw": `"AP8Q"`,
		"u": `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, "m": `"sad"`, "nothing": `null`,
	}
	for col, w := range want {
		var compact bytes.Buffer
		if err := json.Compact(&compact, ins.Doc[col]); err != nil || compact.String() != w {
			t.Errorf("doc.%s = %s, want %s", col, ins.Doc[col], w)
		}
	}
	if !bytes.Equal(ins.Doc["big"], []byte(strconv.Quote(big))) {
		t.Errorf("doc.big is not the inserted text (%d bytes)", len(ins.Doc["big"]))
	}

	// REPLICA IDENTITY DEFAULT: the unchanged TOAST value is not sent, so it
	// is left out of doc and named, never given a wrong value.
	upd := data(t, got[1].Data)
	doc := upd["doc"].(map[string]any)
	if _, has := doc["big"]; has || !reflect.DeepEqual(upd["unchanged_toast"], []any{"big"}) || doc["t"] != "changed" {
		t.Errorf("update under DEFAULT: %s", got[1].Data)
	}
	if !reflect.DeepEqual(upd["before"], map[string]any{"id": 9007199254740993.0}) {
		t.Errorf("before under DEFAULT holds the key only: %v", upd["before"])
	}
	// REPLICA IDENTITY FULL: the old row has every column, big included.
	full := data(t, got[2].Data)
	doc, before := full["doc"].(map[string]any), full["before"].(map[string]any)
	if doc["big"] != big || before["big"] != big || before["t"] != "changed" || doc["t"] != "again" || full["unchanged_toast"] != nil {
		t.Errorf("update under FULL: doc.t %v, before.t %v, big in doc %v, in before %v, unchanged_toast %v",
			doc["t"], before["t"], doc["big"] == big, before["big"] == big, full["unchanged_toast"])
	}
}

func TestUpdateColumnFilter(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric, note text);
		ALTER TABLE orders REPLICA IDENTITY FULL`)
	r.mustStart(r.config("n1", `
- {name: audit, type: DB_UPDATE, url: "{hook}/audit", options: {col: orders, columns: "status, total"}}
- {name: marker, type: DB_DELETE, url: "{hook}/marker", options: {col: orders}}
`, ""), cdc.Options{})
	r.waitStreaming()
	r.exec(`INSERT INTO orders VALUES (1, 'new', 10, 'x')`)
	r.exec(`UPDATE orders SET note = 'y' WHERE id = 1`)             // no filtered column
	r.exec(`UPDATE orders SET status = 'new' WHERE id = 1`)         // set, but to the same value
	r.exec(`UPDATE orders SET status = 'paid' WHERE id = 1`)        // fires
	r.exec(`UPDATE orders SET total = 12, note = 'z' WHERE id = 1`) // fires
	r.exec(`UPDATE orders SET total = NULL WHERE id = 1`)           // fires: a value became NULL
	r.exec(`DELETE FROM orders WHERE id = 1`)                       // the marker: everything before it is in
	r.hook.Wait(t, 4, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // more deliveries, if any, would arrive
	got := byLSN(t, r.hook.Receipts())
	var statuses []any
	for _, g := range got[:len(got)-1] {
		d := data(t, g.Data)
		statuses = append(statuses, []any{d["doc"].(map[string]any)["status"], d["doc"].(map[string]any)["total"]})
	}
	want := []any{[]any{"paid", "10"}, []any{"paid", "12"}, []any{"paid", nil}}
	if len(got) != 4 || got[3].Type != "DB_DELETE" || !reflect.DeepEqual(statuses, want) {
		t.Errorf("filtered updates: %v (%d events), want %v then the delete", statuses, len(got), want)
	}
}

func TestTransactions(t *testing.T) {
	t.Parallel()
	r := newRig(t, `CREATE TABLE items (id int PRIMARY KEY, n int)`)
	r.mustStart(r.config("n1", `
- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: items}}
- {name: upd, type: DB_UPDATE, url: "{hook}", options: {col: items}}
- {name: del, type: DB_DELETE, url: "{hook}", options: {col: items}}
`, ""), cdc.Options{})
	r.waitStreaming()
	r.exec(`BEGIN; INSERT INTO items VALUES (1, 1), (2, 2); UPDATE items SET n = 3 WHERE id = 1; DELETE FROM items WHERE id = 2; COMMIT`)
	r.exec(`BEGIN; INSERT INTO items VALUES (7, 7); UPDATE items SET n = 70 WHERE id = 1; ROLLBACK`)
	r.exec(`INSERT INTO items VALUES (3, 3)`)
	r.hook.Wait(t, 5, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // the rolled back changes, if delivered, would arrive
	got := byLSN(t, r.hook.Receipts())
	if len(got) != 5 {
		t.Fatalf("%d events, want 4 from the committed transaction and 1 after the rolled back one", len(got))
	}
	var types []string
	xids := map[any]int{}
	for _, g := range got {
		types = append(types, g.Type)
		xids[data(t, g.Data)["xid"]]++
	}
	if !slices.Equal(types, []string{"DB_INSERT", "DB_INSERT", "DB_UPDATE", "DB_DELETE", "DB_INSERT"}) || len(xids) != 2 {
		t.Errorf("events %v in %d transactions", types, len(xids))
	}
	if first, last := data(t, got[0].Data), data(t, got[3].Data); first["commit_time"] != last["commit_time"] || got[0].Time != got[3].Time {
		t.Errorf("one transaction, two commit times: %v %v", first["commit_time"], last["commit_time"])
	}
	// Each row is logged with its delivery's outcome, as its attempt ends
	// (see TestFreshChangesAreLoggedWithTheirOutcome); all five are.
	ctx := context.Background()
	conn := r.connect(r.storeURL)
	waittest.For(t, 10*time.Second, func() error {
		var rows, processed int
		err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'processed') FROM `+
			pgx.Identifier{r.storeSchema, "event_logs"}.Sanitize()).Scan(&rows, &processed)
		if err != nil || rows != 5 || processed != 5 {
			return fmt.Errorf("event_logs holds %d rows, %d processed (%v); want 5, all processed", rows, processed, err)
		}
		return nil
	})
}

func TestPartitionedAndQuotedTables(t *testing.T) {
	t.Parallel()
	r := newRig(t, `
CREATE TABLE measurements (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Orders" ("Id" int PRIMARY KEY);`)
	r.mustStart(r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}", options: {col: 'measurements, "Sales"."Orders"'}}`, ""), cdc.Options{})
	r.waitStreaming()
	r.exec(`INSERT INTO measurements VALUES (1, '2025-06-01'), (2, '2026-06-01'); INSERT INTO "Sales"."Orders" VALUES (7)`)
	got := byLSN(t, r.hook.Wait(t, 3, 10*time.Second))
	var where []string
	for _, g := range got {
		d := data(t, g.Data)
		where = append(where, fmt.Sprint(d["schema"], ".", d["col"], " ", d["find"]))
	}
	want := []string{"public.measurements map[at:2025-06-01 id:1]", "public.measurements map[at:2026-06-01 id:2]", "Sales.Orders map[Id:7]"}
	if !slices.Equal(where, want) {
		t.Errorf("events %q, want %q (partitions under their root's name)", where, want)
	}
}
