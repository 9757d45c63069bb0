package cdc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// dbName is the database a URL names.
func dbName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// findSlot returns the slot named name in a listing, or nil.
func findSlot(l cdc.Listing, name string) *cdc.SlotInfo {
	for i := range l.Slots {
		if l.Slots[i].Slot == name {
			return &l.Slots[i]
		}
	}
	return nil
}

// findPub returns the publication named name in a listing, or nil.
func findPub(l cdc.Listing, name string) *cdc.PublicationInfo {
	for i := range l.Publications {
		if l.Publications[i].Publication == name {
			return &l.Publications[i]
		}
	}
	return nil
}

// exists reports whether the rig's server has a slot, and its database a
// publication, of these names.
func (r *rig) exists(slot, pub string) (hasSlot, hasPub bool) {
	r.t.Helper()
	err := r.connect(r.src).QueryRow(context.Background(), `SELECT
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)`, slot, pub).Scan(&hasSlot, &hasPub)
	if err != nil {
		r.t.Fatal(err)
	}
	return hasSlot, hasPub
}

// stream opens a replication connection that streams slot, as a node's
// session does, and closes it at cleanup.
func (r *rig) stream(slot string) *pgconn.PgConn {
	r.t.Helper()
	ctx := context.Background()
	cfg, err := pgconn.ParseConfig(r.src)
	if err != nil {
		r.t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "sources-test"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close(ctx) })
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", slot)}})
	if err != nil {
		r.t.Fatal(err)
	}
	return conn
}

// waitIdle waits until no session streams the rig's slot: a stopped
// node's walsender exits a moment after the node.
func (r *rig) waitIdle() {
	r.t.Helper()
	conn := r.connect(r.src)
	waittest.For(r.t, 10*time.Second, func() error {
		if streaming, err := cdc.Streaming(context.Background(), conn, r.slot); streaming || err != nil {
			return fmt.Errorf("slot %s is still streamed (%v)", r.slot, err)
		}
		return nil
	})
}

// streamedRig is a rig with a table users, whose node streams its slot.
func streamedRig(t *testing.T) (*rig, *config.Config, *node) {
	t.Helper()
	r := newRig(t, `CREATE TABLE users (id int PRIMARY KEY, name text)`)
	cfg := r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}/ins", options: {db: app, col: users}}`, "")
	n := r.mustStart(cfg, cdc.Options{})
	r.waitStreaming()
	return r, cfg, n
}

// forgotten creates, in the rig's database, the slot and publication of
// a database removed from the config, then writes 1,000 rows to users,
// whose WAL the slot keeps; it returns their name.
func (r *rig) forgotten() string {
	r.t.Helper()
	gone := "triggerd_gone_" + strings.TrimPrefix(r.slot, "triggerd_test_")
	r.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, gone)
	r.exec(`CREATE PUBLICATION ` + gone)
	r.exec(`INSERT INTO users SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g`)
	return gone
}

func TestSourcesListShowsSlotsWithTheirWAL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, cfg, _ := streamedRig(t)
	gone := r.forgotten()

	l := cdc.List(ctx, cfg)
	if len(l.Unread) > 0 {
		t.Fatalf("unread: %+v", l.Unread)
	}
	mine := findSlot(l, r.slot)
	if mine == nil {
		t.Fatalf("the node's slot %s is not listed: %+v", r.slot, l.Slots)
	}
	if !mine.Active || mine.PID == 0 || mine.Application != "triggerd-cdc" || mine.Plugin != "pgoutput" ||
		mine.Project != "p" || mine.Alias != "app" || mine.Database != r.slot || mine.RetainedBytes == nil {
		t.Errorf("the node's slot: %+v", *mine)
	}
	old := findSlot(l, gone)
	if old == nil {
		t.Fatalf("the forgotten slot %s is not listed: %+v", gone, l.Slots)
	}
	// It kept the WAL of the 1,000 rows: over 100 kB.
	if old.Active || old.Project != "" || old.RetainedBytes == nil || *old.RetainedBytes < 100_000 || old.Retained == "" {
		t.Errorf("the forgotten slot: %+v", *old)
	}
	if p := findPub(l, r.slot); p == nil || p.Project != "p" || p.Alias != "app" || p.Tables != 1 {
		t.Errorf("the node's publication: %+v", p)
	}
	if p := findPub(l, gone); p == nil || p.Project != "" || p.Database != r.slot {
		t.Errorf("the forgotten publication: %+v", p)
	}
	// A database that cannot be read is named, and the others still listed.
	bad := r.config("n1", `- {name: ins, type: DB_INSERT, url: "{hook}/ins", options: {db: app, col: users}}`,
		"}\n      down: {url: \"postgres://nobody@127.0.0.1:1/x?connect_timeout=2\"")
	l = cdc.List(ctx, bad)
	if len(l.Unread) != 1 || l.Unread[0].Alias != "down" || findSlot(l, r.slot) == nil {
		t.Errorf("with an unreachable database: unread %+v, slots %+v", l.Unread, l.Slots)
	}
}

func TestSourcesDropRefusesAStreamedSlotUnlessForced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, cfg, n := streamedRig(t)
	n.stop()
	r.waitIdle()
	r.stream(r.slot)
	r.waitStreaming()
	p := &cfg.Projects[0]

	_, err := cdc.Drop(ctx, p, "app", "", false)
	if err == nil || !strings.Contains(err.Error(), "is in use by server process") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("drop of a streamed slot: %v", err)
	}
	if hasSlot, hasPub := r.exists(r.slot, r.slot); !hasSlot || !hasPub {
		t.Fatalf("a refused drop dropped something: slot %v, publication %v", hasSlot, hasPub)
	}
	d, err := cdc.Drop(ctx, p, "app", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if d.Slot != r.slot || d.Publication != r.slot || d.Ended == 0 {
		t.Errorf("forced drop: %+v", d)
	}
	if hasSlot, hasPub := r.exists(r.slot, r.slot); hasSlot || hasPub {
		t.Errorf("after a forced drop: slot %v, publication %v", hasSlot, hasPub)
	}
}

func TestSourcesDropIdle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, cfg, n := streamedRig(t)
	n.stop()
	r.waitIdle()
	p := &cfg.Projects[0]
	d, err := cdc.Drop(ctx, p, "app", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if d != (cdc.Dropped{Slot: r.slot, Publication: r.slot}) {
		t.Errorf("drop: %+v", d)
	}
	if hasSlot, hasPub := r.exists(r.slot, r.slot); hasSlot || hasPub {
		t.Errorf("after drop: slot %v, publication %v", hasSlot, hasPub)
	}
	if d, err := cdc.Drop(ctx, p, "app", "", false); err != nil || d != (cdc.Dropped{}) {
		t.Errorf("drop again: %+v, %v", d, err)
	}

	// A slot of another database of the server, and its publication there.
	other := pgtest.Database(t)
	o := &rig{t: t, src: other, conns: r.conns}
	gone := "triggerd_gone_" + strings.TrimPrefix(r.slot, "triggerd_test_")
	o.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, gone)
	o.exec(`CREATE PUBLICATION ` + gone)
	if d, err := cdc.Drop(ctx, p, "app", gone, false); err != nil || d != (cdc.Dropped{Slot: gone, Publication: gone}) {
		t.Errorf("drop --slot %s: %+v, %v", gone, d, err)
	}
	if hasSlot, hasPub := o.exists(gone, gone); hasSlot || hasPub {
		t.Errorf("after drop --slot: slot %v, publication %v", hasSlot, hasPub)
	}
	if _, err := cdc.Drop(ctx, p, "app", gone, false); err == nil || !strings.Contains(err.Error(), "has no replication slot "+gone) {
		t.Errorf("drop --slot of no slot: %v", err)
	}
	// A configured slot that belongs to another database is not this one's.
	o.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, gone)
	db := p.Databases["app"]
	db.Slot = gone
	p.Databases["app"] = db
	if _, err := cdc.Drop(ctx, p, "app", "", false); err == nil || !strings.Contains(err.Error(), "belongs to database \""+dbName(t, other)+"\", not to this one") {
		t.Errorf("drop of another database's slot: %v", err)
	}
	if hasSlot, _ := o.exists(gone, gone); !hasSlot {
		t.Error("drop dropped another database's slot")
	}
	o.exec(`SELECT pg_drop_replication_slot($1)`, gone)

	// A standby's slot is not triggerd's, whatever its name.
	o.exec(`SELECT pg_create_physical_replication_slot($1)`, gone)
	t.Cleanup(func() { o.exec(`SELECT pg_drop_replication_slot($1)`, gone) })
	if _, err := cdc.Drop(ctx, p, "app", gone, false); err == nil || !strings.Contains(err.Error(), "is a physical slot") {
		t.Errorf("drop --slot of a physical slot: %v", err)
	}
	if hasSlot, _ := o.exists(gone, gone); !hasSlot {
		t.Error("drop --slot dropped a physical slot")
	}
}

func TestSourcesWarnForgottenSlots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, cfg, _ := streamedRig(t)
	gone := r.forgotten()

	warnings := func(over int64) []map[string]any {
		var buf bytes.Buffer
		cdc.WarnForgotten(ctx, cfg, over, slog.New(slog.NewJSONHandler(&buf, nil)))
		var out []map[string]any
		for line := range strings.Lines(buf.String()) {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			// Other tests' slots live on the same server: only this one's count.
			if m["slot"] == gone || m["slot"] == r.slot {
				out = append(out, m)
			}
		}
		return out
	}
	got := warnings(100_000)
	if len(got) != 1 || got[0]["level"] != "WARN" || got[0]["slot"] != gone || got[0]["slot_database"] != r.slot ||
		got[0]["drop_with"] != "triggerd sources drop --config FILE --project p --db app --slot "+gone {
		t.Errorf("warnings over 100 kB: %v", got)
	}
	if got := warnings(cdc.ForgottenOver); len(got) != 0 {
		t.Errorf("warnings over 1 GB: %v", got)
	}
	// Once the config names the slot, it is not forgotten.
	db := cfg.Projects[0].Databases["app"]
	cfg.Projects[0].Databases["old"] = config.Database{URL: db.URL, Slot: gone, Publication: gone, Heartbeat: db.Heartbeat}
	if got := warnings(100_000); len(got) != 0 {
		t.Errorf("warnings of a configured slot: %v", got)
	}
}
