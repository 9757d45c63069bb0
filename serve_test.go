package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestServerClosesSlowAndIdleConnections checks the http limits on a real
// node over raw TCP: a request whose headers or body never end and a
// kept-alive connection left idle are closed in time, and headers over
// max_header_bytes are refused.
func TestServerClosesSlowAndIdleConnections(t *testing.T) {
	url, schema := pgtest.Schema(t)
	path := writeConfig(t, "limits", url, schema, "")
	// Each limit differs from the others, so that one falling back to
	// another shows. max_header_bytes keeps its default.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("http: {read_header_timeout: 1s, read_timeout: 3s, idle_timeout: 1500ms}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	node := startChild(t, path)
	dial := func(t *testing.T) net.Conn {
		conn, err := net.Dial("tcp", node.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// closedWithin waits for the server to close conn, reading whatever it
	// answers first.
	closedWithin := func(t *testing.T, conn net.Conn, r io.Reader, within time.Duration) {
		t.Helper()
		start := time.Now()
		conn.SetReadDeadline(start.Add(within + 3*time.Second))
		_, err := io.Copy(io.Discard, r)
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			t.Fatalf("the connection is still open after %s", time.Since(start).Round(time.Millisecond))
		}
		if took := time.Since(start); took > within {
			t.Fatalf("the connection was closed after %s, want within %s", took.Round(time.Millisecond), within)
		}
	}
	send := func(t *testing.T, conn net.Conn, s string) {
		t.Helper()
		if _, err := io.WriteString(conn, s); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("headers that never end", func(t *testing.T) {
		t.Parallel()
		conn := dial(t)
		send(t, conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		closedWithin(t, conn, conn, 2500*time.Millisecond) // read_header_timeout, not read_timeout
	})
	t.Run("a body that never comes", func(t *testing.T) {
		t.Parallel()
		conn := dial(t)
		send(t, conn, "POST /v1/api/demo/event-triggers/queue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
		closedWithin(t, conn, conn, 4500*time.Millisecond) // read_timeout
	})
	t.Run("an idle kept-alive connection", func(t *testing.T) {
		t.Parallel()
		conn := dial(t)
		send(t, conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("healthz: %d, close %v", resp.StatusCode, resp.Close)
		}
		closedWithin(t, conn, br, 2500*time.Millisecond) // idle_timeout, not read_timeout
	})
	t.Run("headers over max_header_bytes", func(t *testing.T) {
		t.Parallel()
		for size, want := range map[int]int{32 << 10: 200, 70 << 10: 431} {
			conn := dial(t)
			send(t, conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", size)+"\r\n\r\n")
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("%d bytes of headers: %v", size, err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%d bytes of headers: %d, want %d", size, resp.StatusCode, want)
			}
		}
	})
}

// TestServeStopsCleanlyWithItsLogReaderGone runs serve with its log on a
// pipe whose reader then goes away, as in "triggerd serve 2>&1 | tee log"
// stopped with Ctrl-C: on SIGTERM it still lets the attempt in flight
// finish and exits 0, rather than dying of SIGPIPE at its first log line.
func TestServeStopsCleanlyWithItsLogReaderGone(t *testing.T) {
	url, schema := pgtest.Schema(t)
	arrived := make(chan struct{}, 1)
	hook := newCounter(t, func(string, string, http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Second)
	})
	cfg := writeConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: t, type: work, url: %q}\n", hook.URL))
	cmd := childCommand("serve", "--config", cfg, "--log-format", "json")
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
	node := &child{cmd: cmd, addr: addr}
	node.queue(t, `{"type":"work"}`)
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
	rows, err := openStore(t, url, schema).Recent(context.Background(), store.Filter{}, 10)
	if err != nil || len(rows) != 1 || rows[0].Status != store.StatusProcessed {
		t.Fatalf("the attempt in flight at SIGTERM was not recorded: %+v %v", rows, err)
	}
}
