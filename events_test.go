package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// adminNode starts a node whose config has an admin section, with a
// trigger "mailer" that delivers and one, "broken", whose webhook fails.
func adminNode(t *testing.T) (cfg string, node *nodetest.Child, st *store.Store) {
	t.Helper()
	url, schema := pgtest.Schema(t)
	hook := nodetest.NewCounter(t, func(_ string, _ string, w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "broken") {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	cfg = nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: mailer, type: sent-email, url: %q}\n"+
		"      - {name: broken, type: broken, url: %q, retries: 0}\n", hook.URL, hook.URL+"/broken"))
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("admin: {user: ops, password: cli-test-password, secret: cli-test-admin-secret-0123456789abcdef}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	node = nodetest.Start(t, cfg)
	st = nodetest.OpenStore(t, url, schema)
	// The node registers itself in the store.
	waittest.For(t, 10*time.Second, func() error {
		nodes, err := st.Nodes(context.Background())
		if err != nil || len(nodes) != 1 || nodes[0].ID != "node-1" {
			return fmt.Errorf("the store's nodes: %+v, %v; want node-1", nodes, err)
		}
		return nil
	})
	return cfg, node, st
}

// waitBroken waits until cond holds for both rows of trigger broken.
func waitBroken(t *testing.T, st *store.Store, cond func(store.EventLog) bool) {
	t.Helper()
	waittest.For(t, 10*time.Second, func() error {
		rows, err := st.Recent(context.Background(), store.Filter{Trigger: "broken"}, 10)
		if err == nil && len(rows) == 2 && cond(rows[0]) && cond(rows[1]) {
			return nil
		}
		return fmt.Errorf("the rows of broken: %+v, %v", rows, err)
	})
}

// events runs "triggerd events" and returns what it printed.
func events(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"events"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestEventsCommand lists, redelivers and cancels events through a node's
// admin API, with the config's admin secret, and refuses bad flags.
func TestEventsCommand(t *testing.T) {
	t.Parallel()
	cfg, node, st := adminNode(t)
	conn := []string{"--config", cfg, "--url", "http://" + node.Addr}
	for range 2 {
		node.Queue(t, `{"type":"broken"}`)
	}
	later := node.Queue(t, `{"type":"sent-email","delay":3600}`)
	waitBroken(t, st, func(r store.EventLog) bool { return r.Status == store.StatusFailed && r.Attempts == 1 })

	out, _, err := events(t, append([]string{"list", "--status", "failed"}, conn...)...)
	if err != nil || len(regexp.MustCompile(`(?m)^\S+  \S+  broken\s+broken\s+failed\s+1  failed after 1 attempt\(s\): webhook answered 500`).FindAllString(out, -1)) != 2 {
		t.Fatalf("events list --status failed: %v\n%s", err, out)
	}
	out, _, err = events(t, append([]string{"redeliver", "--trigger", "broken", "--status", "failed"}, conn...)...)
	if err != nil || out != "redelivered: 2\n" {
		t.Fatalf("events redeliver: %v %q", err, out)
	}
	waitBroken(t, st, func(r store.EventLog) bool { return r.Status == store.StatusFailed && r.Attempts == 2 })

	out, _, err = events(t, append([]string{"list", "--batch-id", later, "--json"}, conn...)...)
	var row struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err != nil || json.Unmarshal([]byte(out), &row) != nil || row.Status != "staged" {
		t.Fatalf("events list --json of the scheduled event: %v %q", err, out)
	}
	out, _, err = events(t, append([]string{"cancel", "--id", row.ID}, conn...)...)
	if err != nil || out != "cancelled: 1\n" {
		t.Fatalf("events cancel --id: %v %q", err, out)
	}
	_, _, err = events(t, append([]string{"cancel", "--id", row.ID}, conn...)...)
	if err == nil || !strings.Contains(err.Error(), "409 Conflict: event "+row.ID+" is cancelled: only staged events can be cancelled") {
		t.Fatalf("cancelling it again: %v, want the API's 409", err)
	}

	// Pages: one event at a time, then all of them.
	out, more, err := events(t, append([]string{"list", "--limit", "1"}, conn...)...)
	if err != nil || strings.Count(out, "\n") != 1 || !strings.HasPrefix(more, "more: --cursor ") {
		t.Fatalf("events list --limit 1: %v %q, stderr %q", err, out, more)
	}
	out, _, err = events(t, append([]string{"list", "--limit", "1", "--all"}, conn...)...)
	if err != nil || strings.Count(out, "\n") != 3 {
		t.Fatalf("events list --limit 1 --all: %v\n%s", err, out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--status", "done"}, `400 Bad Request: status: "done" is not a status`},
		{[]string{"redeliver"}, "events redeliver needs --id or at least one filter"},
		{[]string{"erase"}, "events erase: no such subcommand"},
		{[]string{"list", "broken"}, `unexpected argument "broken": filters are flags, such as --trigger broken`},
		{[]string{"list", "--config", cfg, "--url", "ftp://x"}, `--url "ftp://x": write the node's API as http://host:port`},
		{[]string{"list", "--config", "", "--url", "http://" + node.Addr}, "events needs admin credentials"},
		{[]string{"list", "--config", "", "--url", ""}, "events needs the node's address"},
	} {
		args := c.args
		if !strings.Contains(strings.Join(args, " "), "--config") {
			args = append(args, conn...)
		}
		if _, _, err := events(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("events %v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

// TestEventsCommandLogsIn lists events with the user and password from
// the environment, and with a token from it.
func TestEventsCommandLogsIn(t *testing.T) {
	_, node, st := adminNode(t)
	node.Queue(t, `{"type":"sent-email"}`)
	nodetest.WaitRows(t, st, 10*time.Second, 1, func(r store.EventLog) bool { return r.Status == store.StatusProcessed })
	t.Setenv("TRIGGERD_CONFIG", "")
	t.Setenv("TRIGGERD_URL", "http://"+node.Addr)
	t.Setenv("TRIGGERD_ADMIN_USER", "ops")
	t.Setenv("TRIGGERD_ADMIN_PASSWORD", "wrong-password")
	if _, _, err := events(t, "list"); err == nil || !strings.Contains(err.Error(), "401 Unauthorized: wrong user or password") {
		t.Fatalf("a wrong password: %v, want the API's 401", err)
	}
	t.Setenv("TRIGGERD_ADMIN_PASSWORD", "cli-test-password")
	out, _, err := events(t, "list")
	if err != nil || !strings.Contains(out, "sent-email       mailer           processed 1") {
		t.Fatalf("events list, logged in: %v %q", err, out)
	}
	t.Setenv("TRIGGERD_ADMIN_USER", "")
	t.Setenv("TRIGGERD_ADMIN_PASSWORD", "")
	t.Setenv("TRIGGERD_ADMIN_TOKEN", "not-a-token")
	if _, _, err := events(t, "list"); err == nil || !strings.Contains(err.Error(), "401 Unauthorized: bad token") {
		t.Fatalf("a bad token: %v, want the API's 401", err)
	}
}

// TestEventsPurge purges events through a node's admin API: the failed
// ones, then every outcome; nothing is older than an hour, and the staged
// event stays. Bad flags are refused, naming what is wrong.
func TestEventsPurge(t *testing.T) {
	t.Parallel()
	cfg, node, st := adminNode(t)
	conn := []string{"--config", cfg, "--url", "http://" + node.Addr}
	for range 2 {
		node.Queue(t, `{"type":"broken"}`)
	}
	node.Queue(t, `{"type":"sent-email"}`)
	node.Queue(t, `{"type":"sent-email","delay":3600}`)
	waitBroken(t, st, func(r store.EventLog) bool { return r.Status == store.StatusFailed })
	waittest.For(t, 10*time.Second, func() error {
		rows, err := st.Recent(context.Background(), store.Filter{Status: store.StatusProcessed}, 10)
		if err != nil || len(rows) != 1 {
			return fmt.Errorf("processed rows: %+v, %v; want 1", rows, err)
		}
		return nil
	})
	soon := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--before", "1h"}, "purged: 0\n"},
		{[]string{"--before", soon, "--status", "failed, cancelled", "--project", "demo"}, "purged: 2\n"},
		{[]string{"--before", soon}, "purged: 1\n"},
	} {
		out, _, err := events(t, append(append([]string{"purge"}, c.args...), conn...)...)
		if err != nil || out != c.want {
			t.Fatalf("events purge %v: %v %q, want %q", c.args, err, out, c.want)
		}
	}
	rows, err := st.Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || rows[0].Status != store.StatusStaged {
		t.Fatalf("rows after the purges: %+v, %v; want the staged one alone", rows, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"purge"}, "events purge needs --before"},
		{[]string{"purge", "--before", "-5m"}, "--before -5m is a negative duration"},
		{[]string{"purge", "--before", "last week"}, `400 Bad Request: before: "last week" is not a time`},
		{[]string{"purge", "--before", "1h", "--status", "staged"}, "400 Bad Request: statuses: staged events are never purged"},
		{[]string{"purge", "--before", "1h", "--remark", "x"}, "flag provided but not defined: -remark"},
		{[]string{"purge", "--before", "1h", "failed"}, `unexpected argument "failed"`},
	} {
		if _, _, err := events(t, append(c.args, conn...)...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("events %v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}
