package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestServeStopsCleanlyWithItsLogReaderGone runs serve with its log on a
// pipe whose reader then goes away, as in "triggerd serve 2>&1 | tee log"
// stopped with Ctrl-C: on SIGTERM it still lets the attempt in flight
// finish and exits 0, rather than dying of SIGPIPE at its first log line.
func TestServeStopsCleanlyWithItsLogReaderGone(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	arrived := make(chan struct{}, 1)
	hook := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Second) // an attempt still in flight at SIGTERM
	})
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: t, type: work, url: %q}\n", hook.URL))
	cmd := nodetest.Command("serve", "--config", cfg, "--log-format", "json")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	var addr string
	for sc := bufio.NewScanner(r); addr == "" && sc.Scan(); {
		var entry struct{ Msg, Listen string }
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry.Msg == "triggerd is serving" {
			addr = entry.Listen
		}
	}
	if addr == "" {
		t.Fatal("serve did not start")
	}
	r.Close() // the reader is gone: the next log line meets a broken pipe
	node := &nodetest.Child{Cmd: cmd, Addr: addr}
	node.Queue(t, `{"type":"work"}`)
	select {
	case <-arrived:
	case <-exited:
		t.Fatalf("serve ended before its delivery: %v", waitErr)
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("serve with its log reader gone ended with %v, want exit 0 after a clean stop", waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit within 10s of SIGTERM")
	}
	rows, err := nodetest.OpenStore(t, url, schema).Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || rows[0].Status != store.StatusProcessed {
		t.Fatalf("the attempt in flight at SIGTERM was not recorded: %+v %v", rows, err)
	}
}

// TestSIGHUPReloadsTriggers changes a trigger's URL and the listen address
// in the config file of a running "triggerd serve" and sends it SIGHUP:
// the trigger's new URL takes the next event, the listen change is
// refused with a log line and the old address kept, and a file that no
// longer loads changes nothing.
func TestSIGHUPReloadsTriggers(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	before := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {})
	after := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {})
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: t, type: work, url: %q}\n", before.URL))
	node := nodetest.Start(t, cfg)
	node.Queue(t, `{"type":"work"}`)
	waittest.For(t, 10*time.Second, func() error {
		if before.Total() != 1 {
			return errors.New("the first event is not delivered yet")
		}
		return nil
	})

	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(strings.Replace(string(text), before.URL, after.URL, 1), "listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1)
	if err := os.WriteFile(cfg, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	node.Signal(t, syscall.SIGHUP)
	node.WaitLog(t, "config reloaded: its triggers apply", 10*time.Second)
	if !node.Logs("config reloaded: a change that needs a restart is refused, and the old value kept") || !strings.Contains(node.LogText(), "listen cannot change without a restart") {
		t.Fatalf("no log line refusing the listen change:\n%s", node.LogText())
	}
	node.Queue(t, `{"type":"work"}`) // at the old address: it is kept
	waittest.For(t, 10*time.Second, func() error {
		if before.Total() != 1 || after.Total() != 1 {
			return fmt.Errorf("before the reload: %v; after: %v", before.ByID(), after.ByID())
		}
		return nil
	})

	if err := os.WriteFile(cfg, []byte("store: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node.Signal(t, syscall.SIGHUP)
	node.WaitLog(t, "SIGHUP: the config file does not load; nothing changes", 10*time.Second)
	node.Queue(t, `{"type":"work"}`)
	waittest.For(t, 10*time.Second, func() error {
		if after.Total() != 2 {
			return fmt.Errorf("the event after a bad reload was not delivered to the kept trigger: %v", after.ByID())
		}
		return nil
	})
}
