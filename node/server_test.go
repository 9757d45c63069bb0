package node_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestServerClosesSlowAndIdleConnections checks the http limits on a real
// node over raw TCP: a request whose headers or body never end and a
// kept-alive connection left idle are closed in time, and headers over
// max_header_bytes are refused. It stays serial, as it times the closes to
// a second or so (its cases run in parallel with each other).
func TestServerClosesSlowAndIdleConnections(t *testing.T) {
	url, schema := pgtest.Schema(t)
	path := nodetest.WriteConfig(t, "limits", url, schema, "")
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
	node := nodetest.Start(t, path)
	dial := func(t *testing.T) net.Conn {
		conn, err := net.Dial("tcp", node.Addr)
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
