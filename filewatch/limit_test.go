//go:build linux

package filewatch_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/filewatch"
)

// childConfig carries the config of TestWatchLimitChild from its parent.
const childConfig = "TRIGGERD_FILEWATCH_CHILD_CONFIG"

// TestWatchLimitLeadsToRescans runs a node in a user namespace of its own,
// whose inotify watch limit leaves some folders unwatched: what happens in
// them is found by the periodic rescans.
func TestWatchLimitLeadsToRescans(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	folders := []string{"a", "b", "c", "d", "e"}
	for _, f := range folders {
		r.must(os.Mkdir(r.path(f), 0o755))
	}
	// The child reaches the store over TCP: its user namespace may not map
	// the owner of the throwaway cluster's socket folder.
	u, err := url.Parse(r.storeURL)
	r.must(err)
	socket := fmt.Sprintf("%s/.s.PGSQL.%s", u.Query().Get("host"), u.Query().Get("port"))
	if u.Query().Get("host") != "" {
		u.Host = tcpToUnix(t, socket)
		q := u.Query()
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
	}
	r.storeURL = u.String()
	text := fmt.Sprintf(`
node_id: child
store: {url: %q, schema: %s}
projects:
  - id: p
    secrets: [{kid: k1, alg: HS256, secret: file-test-secret-0123456789abcdef}]
    storage:
      up: {path: %q}
    triggers:
      - {name: created, type: FILE_CREATE, url: "%s/created"}
`, r.storeURL, r.schema, r.dir, r.hook.URL)

	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchLimitChild$", "-test.v")
	cmd.Env = append(os.Environ(), childConfig+"="+text, "TRIGGERD_TEST_DATABASE_URL="+r.storeURL)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out := &dispatchtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a process in a user namespace of its own (%v): the watch limit is not tested", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child's output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "msg=watching") {
		if strings.Contains(out.String(), "cannot lower the watch limit") {
			t.Skipf("the watch limit is not tested: %s", out.String())
		}
		if strings.Contains(out.String(), "FAIL") || time.Now().After(deadline) {
			t.Fatalf("the child does not watch:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "cannot watch a folder") {
		t.Fatalf("every folder was watched despite the limit:\n%s", out.String())
	}
	var want []string
	for _, f := range folders {
		r.write(f+"/x.txt", f)
		want = append(want, "created dir "+f, "created file "+f+"/x.txt")
	}
	r.expect(want...)
}

// TestWatchLimitChild is the node of TestWatchLimitLeadsToRescans: it
// allows itself three watches (the directory and two folders) and runs
// until killed.
func TestWatchLimitChild(t *testing.T) {
	text := os.Getenv(childConfig)
	if text == "" {
		t.Skip("the node of TestWatchLimitLeadsToRescans")
	}
	if err := os.WriteFile("/proc/sys/user/max_inotify_watches", []byte("3"), 0); err != nil {
		t.Skipf("cannot lower the watch limit: %v", err)
	}
	cfg, err := config.Parse("child.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	r.start(cfg, filewatch.Options{Logger: log, Rescan: 300 * time.Millisecond}, true)
	time.Sleep(time.Minute)
}

// tcpToUnix forwards connections to a local TCP port to a Unix socket until
// the test ends, and returns the port's address. A connection ends on both
// sides when either side closes it, so that a killed child's session (and
// the locks it holds) ends with it.
func tcpToUnix(t *testing.T, socket string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", socket)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, s)
			mu.Unlock()
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			wg.Go(func() { pipe(s, c) })
			wg.Go(func() { pipe(c, s) })
		}
	})
	return ln.Addr().String()
}
