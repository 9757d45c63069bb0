// Package pgtest gives tests a real Postgres: the server named by
// TRIGGERD_TEST_DATABASE_URL, or a throwaway cluster (package localpg)
// started for the package's tests and removed after them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/triggerd/triggerd/store/localpg"
)

// server is the package's Postgres, set once by Main before the tests run.
// testing.M offers no other way to hand state to the tests.
var server *state

type state struct {
	url     string           // the server's base database
	cluster *localpg.Cluster // nil with an external server
}

// Main runs a package's tests against a real Postgres. Call it from
// TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	s := &state{url: os.Getenv("TRIGGERD_TEST_DATABASE_URL")}
	if s.url == "" {
		c, err := localpg.Start(context.Background(), localpg.Options{})
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: the tests need a real Postgres and could not start one: %v\n", err)
			if errors.Is(err, localpg.ErrNoBinaries) {
				fmt.Fprintln(os.Stderr, "pgtest: install the server (Debian/Ubuntu: apt-get install postgresql), or set TRIGGERD_TEST_DATABASE_URL to a server with wal_level=logical")
			}
			return 1
		}
		defer c.Close()
		s.cluster, s.url = c, c.URL("postgres")
	}
	server = s
	return m.Run()
}

// get returns the package's server, failing the test when Main did not run.
func get(t testing.TB) *state {
	t.Helper()
	if server == nil {
		t.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain")
	}
	return server
}

// Database creates an empty database for the test, drops it at cleanup,
// and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	s := get(t)
	name := "triggerd_test_" + randomHex(t)
	exec(t, s.url, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		dropSlots(t, s.url, name)
		exec(t, s.url, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(s.url)
	if err != nil {
		t.Fatalf("pgtest: TRIGGERD_TEST_DATABASE_URL must be a postgres:// URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Schema returns the URL of the package's database and a fresh schema
// name, dropped with its contents at cleanup.
func Schema(t testing.TB) (dbURL, schema string) {
	t.Helper()
	s := get(t)
	schema = "t_" + randomHex(t)
	t.Cleanup(func() { exec(t, s.url, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return s.url, schema
}

// Pool connects to the database at dbURL with schema first on the search
// path, for a test's own queries on a store's tables, and closes the
// connections at cleanup.
func Pool(t testing.TB, dbURL, schema string) *pgxpool.Pool {
	t.Helper()
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", dbURL, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Cluster returns the throwaway cluster, for tests that restart or crash
// Postgres; with an external server it skips the test.
func Cluster(t testing.TB) *localpg.Cluster {
	t.Helper()
	s := get(t)
	if s.cluster == nil {
		t.Skip("pgtest: this test restarts Postgres, which it cannot do to the external server in TRIGGERD_TEST_DATABASE_URL")
	}
	return s.cluster
}

// dropSlots drops the replication slots of a database, which would keep
// it from being dropped, ending the sessions that stream them.
func dropSlots(t testing.TB, dbURL, database string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		exec(t, dbURL, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '"+database+"' AND active_pid IS NOT NULL")
		err := tryExec(dbURL, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '"+database+"'")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: drop the slots of %s: %v", database, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exec runs one statement on a short-lived connection.
func exec(t testing.TB, dbURL, sql string) {
	t.Helper()
	if err := tryExec(dbURL, sql); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// tryExec runs one statement on a short-lived connection.
func tryExec(dbURL, sql string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func randomHex(t testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
