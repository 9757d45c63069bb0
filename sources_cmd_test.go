package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestSourcesCommand lists the slots and publications of a database a
// running node streams, and of a database gone from the config, with
// "triggerd sources list"; then drops them with "triggerd sources drop",
// which refuses the streamed slot unless --force.
func TestSourcesCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storeURL, schema := pgtest.Schema(t)
	src := pgtest.Database(t)
	db, err := pgx.Connect(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(ctx) })
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exists := func(name string) (slot, pub bool) {
		t.Helper()
		err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
			EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&slot, &pub)
		if err != nil {
			t.Fatal(err)
		}
		return slot, pub
	}
	// Slot names are the whole server's: this test's are its database's.
	u, err := url.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	slot := strings.TrimPrefix(u.Path, "/")
	gone := strings.Replace(slot, "triggerd_test_", "triggerd_gone_", 1)
	exec(`CREATE TABLE users (id int PRIMARY KEY, name text)`)
	exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, gone)
	exec(`CREATE PUBLICATION ` + gone)
	cfg := nodetest.WriteProjectConfig(t, "node-1", storeURL, schema, fmt.Sprintf("    databases: {app: {url: %q, slot: %s}}\n", src, slot),
		"      - {name: ins, type: DB_INSERT, url: 'http://127.0.0.1:1/', options: {db: app, col: users}}\n")
	node := nodetest.Start(t, cfg)
	// A slot being created shows as active too: wait for a walsender.
	waitActive := func(want bool) {
		t.Helper()
		waittest.For(t, 15*time.Second, func() error {
			if streaming, err := cdc.Streaming(ctx, db, slot); streaming != want || err != nil {
				return fmt.Errorf("slot %s streamed: %v (%v)", slot, streaming, err)
			}
			return nil
		})
	}
	waitActive(true)
	exec(`INSERT INTO users SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g`)
	sources := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append(append([]string{"sources"}, args...), "--config", cfg), &out, &errOut)
		return out.String(), errOut.String(), err
	}

	out, _, err := sources("list")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	for _, re := range []string{
		`(?m)^SERVER +DATABASE +KIND +NAME +PLUGIN +STREAMED BY +RETAINED WAL +USED BY$`,
		`(?m)^\S+ +` + slot + ` +slot +` + slot + ` +pgoutput +pid \d+ triggerd-cdc +[\d.]+ \w+ \(\d+ bytes\) +demo/app$`,
		`(?m)^\S+ +` + slot + ` +slot +` + gone + ` +pgoutput +- +[\d.]+ \w+ \(\d+ bytes\) +not in the config$`,
		`(?m)^\S+ +` + slot + ` +publication +` + slot + ` +- +- +- +demo/app$`,
		`(?m)^\S+ +` + slot + ` +publication +` + gone + ` +- +- +- +not in the config$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("list lacks %s:\n%s", re, out)
		}
	}
	out, _, err = sources("list", "--json")
	var listed struct {
		Slots []struct {
			Slot          string `json:"slot"`
			Active        bool   `json:"active"`
			RetainedBytes int64  `json:"retained_bytes"`
			Project       string `json:"project"`
		} `json:"slots"`
	}
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	n := 0
	for _, s := range listed.Slots {
		if (s.Slot == slot && s.Active && s.Project == "demo") || (s.Slot == gone && !s.Active && s.Project == "" && s.RetainedBytes > 100_000) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("list --json: %s", out)
	}

	// The node streams the slot: drop refuses, and drops nothing.
	if _, _, err := sources("drop", "--db", "app"); err == nil || !strings.Contains(err.Error(), "replication slot "+slot+" is in use by server process") ||
		!strings.Contains(err.Error(), "pass --force") {
		t.Fatalf("drop of a streamed slot: %v", err)
	}
	if s, p := exists(slot); !s || !p {
		t.Fatalf("a refused drop dropped something: slot %v, publication %v", s, p)
	}
	// --force ends the node's session; the node, whose config still has
	// the database, makes both again, as drop warns.
	out, errOut, err := sources("drop", "--db", "app", "--force")
	if err != nil || !regexp.MustCompile(`^ended the session streaming the slot \(server process \d+\)\ndropped replication slot `+slot+`\ndropped publication `+slot+`\n$`).MatchString(out) ||
		!strings.Contains(errOut, "creates slot "+slot+" and publication "+slot+" again when it next starts streaming it") {
		t.Fatalf("drop --force: %v\n%s%s", err, out, errOut)
	}
	waitActive(true)
	// Once no node streams it, drop needs no --force.
	node.Terminate(t)
	waitActive(false)
	if out, _, err := sources("drop", "--db", "app"); err != nil || out != "dropped replication slot "+slot+"\ndropped publication "+slot+"\n" {
		t.Fatalf("drop: %v\n%s", err, out)
	}
	if s, p := exists(slot); s || p {
		t.Errorf("after drop: slot %v, publication %v", s, p)
	}
	if out, _, err := sources("drop", "--db", "app"); err != nil || out != "no replication slot "+slot+": nothing to drop\nno publication "+slot+": nothing to drop\n" {
		t.Errorf("drop of nothing: %v\n%s", err, out)
	}
	// What the config no longer names, dropped through a database it does.
	if _, _, err := sources("drop", "--db", "app", "--slot", slot); err == nil || !strings.Contains(err.Error(), "is the slot of database app of project demo in the config") {
		t.Errorf("drop --slot of a configured slot: %v", err)
	}
	if out, _, err := sources("drop", "--db", "app", "--slot", gone); err != nil || out != "dropped replication slot "+gone+"\ndropped publication "+gone+"\n" {
		t.Errorf("drop --slot: %v\n%s", err, out)
	}
	if s, p := exists(gone); s || p {
		t.Errorf("after drop --slot: slot %v, publication %v", s, p)
	}
	if _, _, err := sources("drop", "--db", "nope"); err == nil || !strings.Contains(err.Error(), `project demo has no database "nope"`) {
		t.Errorf("drop of an unknown alias: %v", err)
	}
}
