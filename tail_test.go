package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestTailPrintsAnyTime tails rows whose times Go's JSON encoding cannot
// write (years past 9999 and before 1): --json prints each as an object
// with its times, none as an empty line.
func TestTailPrintsAnyTime(t *testing.T) {
	t.Parallel()
	cfg, db := tailStore(t)
	ctx := context.Background()
	want := map[string]bool{"10000-01-01T04:00:00Z": true, "294276-12-31T23:59:59.999999Z": true, "-4712-01-01T00:00:00Z": true}
	for _, at := range []string{"9999-12-31 23:00:00-05", "294276-12-31 23:59:59.999999+00", "4713-01-01 00:00:00+00 BC"} {
		if _, err := db.Exec(ctx, `
			INSERT INTO event_logs (id, batch_id, project, trigger_name, type, payload, event_time, fire_at)
			VALUES (gen_random_uuid(), gen_random_uuid(), 'demo', 'mailer', 'sent-email', '{"n":1}', $1, $1)`, at); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"tail", "--config", cfg, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("tail --json printed %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for _, line := range lines {
		var row struct {
			FireAt string          `json:"fire_at"`
			Data   json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil || !want[row.FireAt] || string(row.Data) != `{"n":1}` {
			t.Errorf("line %q: %+v %v, want one of fire_at %v with its data", line, row, err, want)
		}
		delete(want, row.FireAt)
	}
}

// TestTailEndsOnWriteErrors tails into a full device: tail ends with the
// write's error, whether it prints text or JSON, follows or not.
func TestTailEndsOnWriteErrors(t *testing.T) {
	t.Parallel()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("this test writes to /dev/full: %v", err)
	}
	defer full.Close()
	cfg, db := tailStore(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `
		INSERT INTO event_logs (id, batch_id, project, trigger_name, type, event_time, fire_at)
		VALUES (gen_random_uuid(), gen_random_uuid(), 'demo', 'mailer', 'sent-email', now(), now())`); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{}, {"--json"}, {"--follow"}, {"--follow", "--json"}} {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := run(ctx, append([]string{"tail", "--config", cfg}, args...), full, io.Discard)
		if ctx.Err() != nil {
			t.Errorf("tail %v into /dev/full did not end on the write error", args)
		} else if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "stdout") {
			t.Errorf("tail %v into /dev/full: %v, want an error writing to stdout", args, err)
		}
		cancel()
	}
}

// tailStore makes a migrated store schema and a config for it, for tail
// to read, and returns the config's path and a pool on the schema.
func tailStore(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	url, schema := pgtest.Schema(t)
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, "      - {name: mailer, type: sent-email, url: \"http://127.0.0.1:1\"}\n")
	st := nodetest.OpenStore(t, url, schema)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return cfg, pgtest.Pool(t, url, schema)
}
