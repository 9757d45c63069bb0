package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
)

// sourcesAnswer is GET /v1/admin/sources's answer.
type sourcesAnswer struct {
	Databases []struct {
		Project, Database, Slot, Publication, Error string
		Node                                        *string
		LastChange                                  *time.Time `json:"last_change_at"`
		Reachable                                   bool
		SlotExists                                  *bool   `json:"slot_exists"`
		SlotActive                                  *bool   `json:"slot_active"`
		Confirmed                                   *string `json:"confirmed_lsn"`
		Lag                                         *int64  `json:"lag_bytes"`
	}
	Directories []struct {
		Project, Storage, Path string
		Node                   *string
		ReportedAt             *time.Time `json:"reported_at"`
		Indexed                *int       `json:"files_indexed"`
		Watches                *int       `json:"watches"`
		LastRescan             *time.Time `json:"last_rescan_at"`
	}
}

// sources asks a node for the sources, and checks that the answer has the
// one database and the one directory of the test's config.
func (c *adminClient) sources(t *testing.T) sourcesAnswer {
	t.Helper()
	status, answer := c.do(t, http.MethodGet, "/v1/admin/sources", "")
	var out sourcesAnswer
	if status != http.StatusOK || json.Unmarshal([]byte(answer), &out) != nil || len(out.Databases) != 1 || len(out.Directories) != 1 {
		t.Fatalf("GET /v1/admin/sources: %d %s; want one database and one directory", status, answer)
	}
	return out
}

// holder is the node a source's answer names, "" for none.
func holder(node *string) string {
	if node == nil {
		return ""
	}
	return *node
}

// TestAdminSources runs two nodes on one store and a source database and
// directory, and asks each for the sources: each answers for both, naming
// the node that holds them, the database's slot as the database reports
// it, its last change, and the directory's index and watches; after the
// holder dies, the other node, which took the sources over; and a database
// that refuses connections is reported as unreachable, naming nothing of it.
func TestAdminSources(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCapture(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a.txt", "sub/b.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	project := c.databases() + fmt.Sprintf("    storage:\n      uploads: {path: %q, settle: 100ms}\n", dir)
	triggers := fmt.Sprintf("      - {name: items, type: DB_INSERT, url: %q, options: {db: app, col: items}}\n", c.hook.URL)
	config := func(node string) string {
		return withAdmin(t, nodetest.WriteProjectConfig(t, node, c.storeURL, c.schema, project, triggers))
	}
	a := nodetest.Start(t, config("node-a"))
	c.waitWalsender(30 * time.Second)
	adminA := login(t, a.Addr)

	before := time.Now()
	if _, err := c.db.Exec(ctx, `INSERT INTO items VALUES (1, 'one')`); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	var inserted string // a position past the insert's commit
	if err := c.db.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&inserted); err != nil {
		t.Fatal(err)
	}
	past := func(confirmed *string) bool {
		var ok bool
		if confirmed == nil || c.db.QueryRow(ctx, `SELECT $1::pg_lsn >= $2::pg_lsn`, *confirmed, inserted).Scan(&ok) != nil {
			return false
		}
		return ok
	}
	var lastChange time.Time
	waittest.For(t, 30*time.Second, func() error {
		s := adminA.sources(t)
		db, d := s.Databases[0], s.Directories[0]
		switch {
		case holder(db.Node) != "node-a" || holder(d.Node) != "node-a":
			return fmt.Errorf("the database is held by %q and the directory by %q, want node-a", holder(db.Node), holder(d.Node))
		case db.LastChange == nil || db.LastChange.Before(before.Add(-time.Second)) || db.LastChange.After(after.Add(time.Second)):
			return fmt.Errorf("last change %v, want the insert's commit, between %v and %v", db.LastChange, before, after)
		case !past(db.Confirmed):
			return fmt.Errorf("slot confirmed to %v, want past the insert (%s)", db.Confirmed, inserted)
		case d.Indexed == nil || *d.Indexed != 2 || d.Watches == nil || *d.Watches != 2 || d.LastRescan == nil:
			return fmt.Errorf("the directory: %d files indexed, %d watches, rescanned %v; want 2, 2 and a time", d.Indexed, d.Watches, d.LastRescan)
		}
		lastChange = *db.LastChange
		return nil
	})

	// Node b answers for the sources node a holds, from the store, and
	// reads the slot from the database itself.
	b := nodetest.Start(t, config("node-b"))
	adminB := login(t, b.Addr)
	s := adminB.sources(t)
	db, d := s.Databases[0], s.Directories[0]
	if db.Project != "demo" || db.Database != "app" || db.Slot != c.slot || db.Publication != c.slot || holder(db.Node) != "node-a" ||
		!db.Reachable || db.Error != "" || db.SlotExists == nil || !*db.SlotExists || db.SlotActive == nil || !*db.SlotActive ||
		!past(db.Confirmed) || db.Lag == nil || *db.Lag < 0 || db.LastChange == nil || !db.LastChange.Equal(lastChange) {
		t.Errorf("node b shows the database as %+v", db)
	}
	if db.Lag != nil && db.Confirmed != nil {
		var since int64 // the lag now: the WAL only grows
		if err := c.db.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8`, *db.Confirmed).Scan(&since); err != nil {
			t.Fatal(err)
		}
		if *db.Lag > since {
			t.Errorf("lag %d bytes behind %s; the WAL is only %d bytes past it now", *db.Lag, *db.Confirmed, since)
		}
	}
	if d.Project != "demo" || d.Storage != "uploads" || d.Path != dir || holder(d.Node) != "node-a" {
		t.Errorf("node b shows the directory as %+v", d)
	}

	// Node a dies: node b takes both over, and the last change stays known.
	a.Kill(t)
	waittest.For(t, 30*time.Second, func() error {
		s := adminB.sources(t)
		db, d := s.Databases[0], s.Directories[0]
		switch {
		case holder(db.Node) != "node-b" || holder(d.Node) != "node-b":
			return fmt.Errorf("the database is held by %q and the directory by %q, want node-b", holder(db.Node), holder(d.Node))
		case db.LastChange == nil || !db.LastChange.Equal(lastChange):
			return fmt.Errorf("last change %v, want %v still", db.LastChange, lastChange)
		case d.Indexed == nil || *d.Indexed != 2:
			return fmt.Errorf("%v files indexed, want 2", d.Indexed)
		}
		return nil
	})

	// A report older than three heartbeats names no holder, and says when
	// it was made (until node b's next heartbeat writes a new one).
	st := connect(t, c.storeURL)
	sourcesTable := pgx.Identifier{c.schema, "sources"}.Sanitize()
	waittest.For(t, 20*time.Second, func() error {
		var stale time.Time
		if err := st.QueryRow(ctx, `UPDATE `+sourcesTable+` SET reported_at = now() - interval '1 minute'
			WHERE kind = 'storage' RETURNING reported_at`).Scan(&stale); err != nil {
			t.Fatal(err)
		}
		d := adminB.sources(t).Directories[0]
		if d.Node != nil || d.ReportedAt == nil || !d.ReportedAt.Equal(stale) || d.Indexed == nil {
			return fmt.Errorf("a directory reported a minute ago shows as %+v; want no node, and the report's time and figures", d)
		}
		return nil
	})

	// A database that refuses connections is unreachable; the answer
	// names nothing of it.
	u, err := url.Parse(c.src)
	if err != nil {
		t.Fatal(err)
	}
	other := *u // the cluster's postgres database: a database cannot close itself
	other.Path = "/postgres"
	admin := connect(t, other.String())
	name := pgx.Identifier{c.slot}.Sanitize() // the source database's name
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+name+` ALLOW_CONNECTIONS false`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, `ALTER DATABASE `+name+` ALLOW_CONNECTIONS true`); err != nil {
			t.Error(err)
		}
	})
	s = adminB.sources(t)
	db = s.Databases[0]
	if db.Reachable || db.Error == "" || db.SlotExists != nil || db.SlotActive != nil || db.Confirmed != nil || db.Lag != nil ||
		holder(db.Node) != "node-b" || db.LastChange == nil {
		t.Errorf("an unreachable database shows as %+v; want unreachable, and still what node b reported", db)
	}
	for _, part := range []string{u.Hostname(), u.Port(), u.Query().Get("host"), u.Query().Get("port"), u.User.Username(), strings.TrimPrefix(u.Path, "/"), "SQLSTATE", "accepting connections"} {
		if part != "" && strings.Contains(db.Error, part) {
			t.Errorf("the error %q names %q", db.Error, part)
		}
	}
	b.WaitLog(t, "reading a database's replication slot for the admin API failed", 5*time.Second)
}
