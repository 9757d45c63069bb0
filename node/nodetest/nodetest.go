// Package nodetest runs triggerd nodes as child processes, for the tests
// of the node and of the commands: a crash test kills a real process. The
// test binary re-executes itself as the child (see Main). Only tests may
// import it; the lint config keeps other code from doing so.
package nodetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// childEnv makes the test binary run as a child, with the arguments in
// childArgsEnv.
const (
	childEnv     = "TRIGGERD_TEST_CHILD"
	childArgsEnv = "TRIGGERD_TEST_CHILD_ARGS"
)

// Main is the TestMain of a package whose tests start children. In a
// child, the test binary started by Command, it calls child with the
// child's arguments and exits 0 when it returns; otherwise it runs the
// tests with a throwaway Postgres (see pgtest.Main).
//
// Children start with SIGHUP's default action, as from a terminal, even
// when the tests run under nohup: a child inherits an ignored SIGHUP, and
// triggerd then leaves it ignored (as it should under nohup), so the
// tests that send it one would fail. Handling SIGHUP in the test process
// (and dropping it) gives the children the default action instead.
func Main(m *testing.M, child func(args []string)) {
	if os.Getenv(childEnv) == "1" {
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv(childArgsEnv)), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad child args:", err)
			os.Exit(2)
		}
		child(args)
		os.Exit(0)
	}
	if signal.Ignored(syscall.SIGHUP) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
	pgtest.Main(m)
}

// Command is the test binary running as a child with args (see Main).
func Command(args ...string) *exec.Cmd {
	js, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childArgsEnv+"="+string(js))
	return cmd
}

// ServeArgs are the arguments of "triggerd serve" with a config, logging
// JSON, which Start gives its child.
func ServeArgs(config string) []string {
	return []string{"serve", "--config", config, "--log-format", "json"}
}

// Secret is the HS256 secret of project demo in the configs written here.
const Secret = "main-test-secret-0123456789abcdef"

// WriteConfig writes a config for a store schema and returns its path.
// triggers are YAML list items at two spaces of indent.
func WriteConfig(t testing.TB, nodeID, url, schema, triggers string) string {
	t.Helper()
	return WriteProjectConfig(t, nodeID, url, schema, "", triggers)
}

// WriteProjectConfig is WriteConfig with more keys for the project "demo"
// (such as databases:), as YAML lines at four spaces of indent.
func WriteProjectConfig(t testing.TB, nodeID, url, schema, project, triggers string) string {
	t.Helper()
	text := fmt.Sprintf(`listen: 127.0.0.1:0
node_id: %s
lease: 2s
shutdown_grace: 5s
store: {url: %q, schema: %s}
projects:
  - id: demo
    secrets: [{kid: k1, alg: HS256, secret: %s}]
    rules: {default: allow}
%s    triggers:
%s`, nodeID, url, schema, Secret, project, triggers)
	path := filepath.Join(t.TempDir(), nodeID+".yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Child is a node running as a separate process.
type Child struct {
	Cmd    *exec.Cmd
	Addr   string // the API's address
	exited chan struct{}
	mu     sync.Mutex
	log    bytes.Buffer
}

// Start runs a child with ServeArgs(config) and waits until it listens.
func Start(t testing.TB, config string) *Child {
	t.Helper()
	return StartCommand(t, Command(ServeArgs(config)...), config)
}

// StartCommand starts cmd, which runs a node with config logging JSON to
// stderr, and waits until it listens. The test's end kills it.
func StartCommand(t testing.TB, cmd *exec.Cmd, config string) *Child {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{Cmd: cmd, exited: make(chan struct{})}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.log.WriteString(line + "\n")
			c.mu.Unlock()
			var entry struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "triggerd is serving" {
				listening <- entry.Listen
			}
		}
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.Cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("log of %s:\n%s", config, c.LogText())
		}
	})
	select {
	case c.Addr = <-listening:
		return c
	case <-c.exited:
		t.Fatalf("triggerd exited before listening:\n%s", c.LogText())
	case <-time.After(30 * time.Second):
		t.Fatalf("triggerd did not start listening:\n%s", c.LogText())
	}
	return nil
}

// Exited is closed once the child has exited.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// LogText is what the child logged so far.
func (c *Child) LogText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// Logs reports whether the child logged msg, as a whole message.
func (c *Child) Logs(msg string) bool {
	return strings.Contains(c.LogText(), fmt.Sprintf(`"msg":%q`, msg))
}

// WaitLog waits until the child logs msg.
func (c *Child) WaitLog(t testing.TB, msg string, within time.Duration) {
	t.Helper()
	if err := waittest.Until(within, func() error {
		if !c.Logs(msg) {
			return fmt.Errorf("the node did not log %q", msg)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, c.LogText())
	}
}

// Signal sends the child a signal, such as SIGSTOP to freeze it. After
// SIGSTOP it returns once every thread of the child is stopped, where
// /proc tells: a test times the freeze from then.
func (c *Child) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := c.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if sig != syscall.SIGSTOP {
		return
	}
	tasks := fmt.Sprintf("/proc/%d/task", c.Cmd.Process.Pid)
	if _, err := os.Stat(tasks); err != nil {
		return // no /proc here
	}
	if err := waittest.Until(5*time.Second, func() error { return allStopped(tasks) }); err != nil {
		t.Fatalf("after SIGSTOP: %v", err)
	}
}

// allStopped reports which thread under tasks (/proc/PID/task) is not
// stopped yet, if one is.
func allStopped(tasks string) error {
	stats, err := filepath.Glob(filepath.Join(tasks, "*", "stat"))
	if err != nil || len(stats) == 0 {
		return fmt.Errorf("no threads under %s (%v)", tasks, err)
	}
	for _, name := range stats {
		stat, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		// The state follows the command, which is in parentheses and may hold any character.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) {
			return fmt.Errorf("%s: cannot read %q", name, stat)
		}
		if state := stat[i+2]; state != 'T' && state != 't' {
			return fmt.Errorf("thread %s is in state %c, not stopped", filepath.Base(filepath.Dir(name)), state)
		}
	}
	return nil
}

// Kill crashes the child with SIGKILL.
func (c *Child) Kill(t testing.TB) {
	t.Helper()
	c.Signal(t, syscall.SIGKILL)
	<-c.exited
}

// Terminate sends the child SIGTERM and waits until it exits 0.
func (c *Child) Terminate(t testing.TB) {
	t.Helper()
	c.Signal(t, syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("triggerd did not exit after SIGTERM")
	}
	if code := c.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// Queue posts an event to the child's API and returns the event id.
func (c *Child) Queue(t testing.TB, body string) string {
	t.Helper()
	resp, err := http.Post("http://"+c.Addr+"/v1/api/demo/event-triggers/queue", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("queue %s: %d, and the answer is not JSON: %v", body, resp.StatusCode, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("queue %s: %d %s", body, resp.StatusCode, out.Error)
	}
	return out.ID
}

// Counter is a webhook that counts deliveries per CloudEvent id and node.
type Counter struct {
	*httptest.Server
	mu    sync.Mutex
	byID  map[string]int
	nodes map[string]int // deliveries per sending node (X-SC-Token's id claim)
}

// NewCounter starts a counting webhook that checks each delivery's
// X-SC-Token against Secret; handle decides each answer.
func NewCounter(t testing.TB, handle func(id, node string, w http.ResponseWriter, r *http.Request)) *Counter {
	c := &Counter{byID: map[string]int{}, nodes: map[string]int{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("a delivery that is not JSON: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		tok, err := jwt.Parse(r.Header.Get("X-SC-Token"), func(*jwt.Token) (any, error) { return []byte(Secret), nil },
			jwt.WithValidMethods([]string{"HS256"}))
		if err != nil {
			t.Errorf("delivery with a bad X-SC-Token: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		node, _ := tok.Claims.(jwt.MapClaims)["id"].(string)
		c.mu.Lock()
		c.byID[ev.ID]++
		c.nodes[node]++
		c.mu.Unlock()
		handle(ev.ID, node, w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

// Total is how many deliveries the counter received.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.byID {
		n += v
	}
	return n
}

// Count is how many deliveries of the event id the counter received.
func (c *Counter) Count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byID[id]
}

// ByID is how many deliveries of each event id the counter received.
func (c *Counter) ByID() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byID)
}

// Nodes is how many deliveries each node made.
func (c *Counter) Nodes() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.nodes)
}

// OpenStore opens the test's store schema to inspect rows.
func OpenStore(t testing.TB, url, schema string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{URL: url, Schema: schema, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// WaitRows waits until there are want event_logs rows and cond holds for
// each, and returns them.
func WaitRows(t testing.TB, st *store.Store, within time.Duration, want int, cond func(store.EventLog) bool) []store.EventLog {
	t.Helper()
	var rows []store.EventLog
	waittest.For(t, within, func() error {
		var err error
		rows, err = st.Recent(context.Background(), store.Filter{}, 100000)
		if err == nil && len(rows) == want && !slices.ContainsFunc(rows, func(r store.EventLog) bool { return !cond(r) }) {
			return nil
		}
		summary := map[string]int{}
		for _, r := range rows {
			summary[string(r.Status)]++
		}
		return fmt.Errorf("%d rows (want %d), by status %v, err %v", len(rows), want, summary, err)
	})
	return rows
}

// FreeAddr is a local address no one listens on, as far as can be known:
// the port of a listener just closed.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
