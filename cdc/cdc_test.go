package cdc_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/triggerd/triggerd/cdc"
)

const slot = "triggerd_p_app"

// data decodes an event's data.
func data(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("data %s: %v", raw, err)
	}
	return m
}

func TestInsertUpdateDelete(t *testing.T) {
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY, name text, email text)`)
	r.mustStart(r.config("n1", `
- {name: ins, type: DB_INSERT, url: "{hook}/ins", options: {db: app, col: users}}
- {name: upd, type: DB_UPDATE, url: "{hook}/upd", options: {col: users}}
- {name: del, type: DB_DELETE, url: "{hook}/del", options: {col: public.users}}
`, ""), cdc.Options{})
	r.waitStreaming(slot)
	r.exec(`INSERT INTO users VALUES (1, 'ann', 'ann@example.com')`)
	r.exec(`UPDATE users SET name = 'anne' WHERE id = 1`)
	r.exec(`UPDATE users SET id = 2 WHERE id = 1`)
	r.exec(`DELETE FROM users WHERE id = 2`)
	got := r.hook.wait(t, 4, 10*time.Second)
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
