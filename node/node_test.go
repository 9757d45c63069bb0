package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/node"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// load reads a config that nodetest wrote.
func load(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRunStopsInOrder runs a node in this process and ends its context
// during an attempt: Started gets the API's address, the attempt finishes
// and is recorded before Run returns, and the API no longer answers then.
func TestRunStopsInOrder(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	arrived := make(chan struct{}, 1)
	hook := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Second) // an attempt still in flight when the context ends
	})
	cfg := load(t, nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: t, type: work, url: %q}\n", hook.URL)))
	var log dispatchtest.Buffer
	addr := make(chan string, 1)
	n, err := node.New(cfg, node.Options{Logger: slog.New(slog.NewTextHandler(&log, nil)), Version: "test",
		Started: func(a string) { addr <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var c *nodetest.Child
	select {
	case a := <-addr:
		c = &nodetest.Child{Addr: a}
	case err := <-done:
		t.Fatalf("Run returned before listening: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("Started was not called within 30s:\n%s", log.String())
	}
	c.Queue(t, `{"type":"work"}`)
	<-arrived
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
	rows, err := nodetest.OpenStore(t, url, schema).Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || rows[0].Status != store.StatusProcessed {
		t.Fatalf("the attempt in flight when the context ended was not recorded: %+v %v", rows, err)
	}
	if resp, err := http.Get("http://" + c.Addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the API still answers after Run returned")
	}
	text := log.String()
	if i, j := strings.Index(text, "msg=\"stopping:"), strings.Index(text, "msg=stopped"); i < 0 || j < i {
		t.Errorf("the log does not say stopping, then stopped:\n%s", text)
	}
}

// TestRunFailsBeforeListening runs a node whose address another listener
// holds: Run says so and how to fix it, without calling Started.
func TestRunFailsBeforeListening(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := load(t, nodetest.WriteConfig(t, "node-1", url, schema, "      - {name: t, type: work, url: 'http://127.0.0.1:1/'}\n"))
	cfg.Listen = taken.Addr().String()
	n, err := node.New(cfg, node.Options{Started: func(string) { t.Error("Started was called") }})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Run(context.Background())
	if want := "listen on " + cfg.Listen; err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "change listen in the config") {
		t.Errorf("Run: %v, want an error saying %q and to change listen in the config", err, want)
	}
}
