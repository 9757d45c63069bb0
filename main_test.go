package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// childEnv makes the test binary run triggerd itself, with the arguments
// in childArgsEnv: the crash tests kill real processes.
const (
	childEnv     = "TRIGGERD_TEST_CHILD"
	childArgsEnv = "TRIGGERD_TEST_CHILD_ARGS"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv(childArgsEnv)), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad child args:", err)
			os.Exit(2)
		}
		os.Args = append([]string{"triggerd"}, args...)
		main()
		os.Exit(0)
	}
	pgtest.Main(m)
}

const testSecret = "main-test-secret-0123456789abcdef"

// writeConfig writes a config for a store schema and returns its path.
// triggers are YAML list items at two spaces of indent.
func writeConfig(t testing.TB, nodeID, url, schema, triggers string) string {
	t.Helper()
	return writeProjectConfig(t, nodeID, url, schema, "", triggers)
}

// writeProjectConfig is writeConfig with more keys for the project "demo"
// (such as databases:), as YAML lines at four spaces of indent.
func writeProjectConfig(t testing.TB, nodeID, url, schema, project, triggers string) string {
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
%s`, nodeID, url, schema, testSecret, project, triggers)
	path := filepath.Join(t.TempDir(), nodeID+".yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// child is triggerd running as a separate process.
type child struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	mu     sync.Mutex
	log    bytes.Buffer
}

// childCommand is the test binary running as triggerd with args.
func childCommand(args ...string) *exec.Cmd {
	js, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childArgsEnv+"="+string(js))
	return cmd
}

// startChild runs "triggerd serve" and waits until it listens.
func startChild(t testing.TB, config string) *child {
	t.Helper()
	return startCommand(t, childCommand("serve", "--config", config, "--log-format", "json"), config)
}

// startCommand starts cmd, which runs "triggerd serve" with a config, and
// waits until it listens.
func startCommand(t testing.TB, cmd *exec.Cmd, config string) *child {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
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
		c.cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("log of %s:\n%s", config, c.logText())
		}
	})
	select {
	case c.addr = <-listening:
		return c
	case <-c.exited:
		t.Fatalf("triggerd exited before listening:\n%s", c.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("triggerd did not start listening:\n%s", c.logText())
	}
	return nil
}

func (c *child) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// logs reports whether the child logged msg, as a whole message.
func (c *child) logs(msg string) bool {
	return strings.Contains(c.logText(), fmt.Sprintf(`"msg":%q`, msg))
}

// waitLog waits until the child logs msg.
func waitLog(t *testing.T, c *child, msg string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); !c.logs(msg); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the node did not log %q within %s:\n%s", msg, within, c.logText())
		}
	}
}

// kill crashes the child with SIGKILL.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
}

// terminate sends the child SIGTERM and waits until it exits 0.
func (c *child) terminate(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("triggerd did not exit after SIGTERM")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// queue posts an event to the child's API and returns the event id.
func (c *child) queue(t *testing.T, body string) string {
	t.Helper()
	resp, err := http.Post("http://"+c.addr+"/v1/api/demo/event-triggers/queue", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		t.Fatalf("queue %s: %d %s", body, resp.StatusCode, out.Error)
	}
	return out.ID
}

// counter is a webhook that counts deliveries per CloudEvent id and node.
type counter struct {
	*httptest.Server
	mu    sync.Mutex
	byID  map[string]int
	nodes map[string]int // deliveries per sending node (X-SC-Token's id claim)
}

// newCounter starts a counting webhook; handle decides each answer.
func newCounter(t *testing.T, handle func(id, node string, w http.ResponseWriter, r *http.Request)) *counter {
	c := &counter{byID: map[string]int{}, nodes: map[string]int{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			ID string `json:"id"`
		}
		json.NewDecoder(r.Body).Decode(&ev)
		tok, err := jwt.Parse(r.Header.Get("X-SC-Token"), func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
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

// total is how many deliveries the counter received.
func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.byID {
		n += v
	}
	return n
}

func (c *counter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byID[id]
}

// openStore opens the test's store schema to inspect rows.
func openStore(t *testing.T, url, schema string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{URL: url, Schema: schema, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// waitRows waits until cond holds for every event_logs row.
func waitRows(t *testing.T, st *store.Store, within time.Duration, want int, cond func(store.EventLog) bool) []store.EventLog {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rows, err := st.Recent(context.Background(), store.Filter{}, 100000)
		if err == nil && len(rows) == want {
			ok := true
			for _, r := range rows {
				ok = ok && cond(r)
			}
			if ok {
				return rows
			}
		}
		if time.Now().After(deadline) {
			summary := map[string]int{}
			for _, r := range rows {
				summary[string(r.Status)]++
			}
			t.Fatalf("after %s: %d rows (want %d), by status %v, err %v", within, len(rows), want, summary, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKillAndRestartLosesNothing crashes triggerd with SIGKILL while events
// are staged, in flight, scheduled and between retries, restarts it, and
// checks that every event is delivered and attempts made before the crash
// count against retries.
func TestKillAndRestartLosesNothing(t *testing.T) {
	url, schema := pgtest.Schema(t)
	slow := newCounter(t, func(string, string, http.ResponseWriter, *http.Request) { time.Sleep(100 * time.Millisecond) })
	failing := newCounter(t, func(_ string, _ string, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	cfg := writeConfig(t, "node-1", url, schema, fmt.Sprintf(`      - {name: slow, type: work, url: %q, concurrency: 4}
      - {name: failing, type: doomed, url: %q, retries: 2, retry_backoff: {initial: 400ms, max: 400ms}}
`, slow.URL, failing.URL))
	node := startChild(t, cfg)

	for i := range 100 {
		node.queue(t, fmt.Sprintf(`{"type":"work","data":{"n":%d}}`, i))
	}
	for i := range 10 {
		node.queue(t, fmt.Sprintf(`{"type":"work","data":{"later":%d},"delay":1.5}`, i))
	}
	node.queue(t, `{"type":"doomed"}`)
	// Let some deliveries and the first failed attempt happen, then crash.
	deadline := time.Now().Add(10 * time.Second)
	for failing.total() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	node.kill(t)
	st := openStore(t, url, schema)
	before, _ := st.Recent(context.Background(), store.Filter{Status: store.StatusProcessed}, 1000)
	if len(before) >= 110 {
		t.Fatalf("everything was delivered before the crash (%d rows); the test needs work left over", len(before))
	}
	t.Logf("%d of 111 rows processed before SIGKILL", len(before))

	startChild(t, cfg)
	rows := waitRows(t, st, 30*time.Second, 111, func(r store.EventLog) bool {
		return r.Status == store.StatusProcessed || r.Status == store.StatusFailed
	})
	for _, r := range rows {
		switch r.Trigger {
		case "slow":
			if r.Status != store.StatusProcessed || slow.count(r.ID.String()) < 1 {
				t.Errorf("row %s: %s, delivered %d times", r.ID, r.Status, slow.count(r.ID.String()))
			}
		case "failing":
			if r.Status != store.StatusFailed || r.Attempts != 3 || !strings.Contains(r.Remark, "503") {
				t.Errorf("failing row %+v: want failed after 3 attempts in all", r)
			}
			invs, _ := st.Invocations(context.Background(), r.ID)
			if len(invs) != 3 {
				t.Errorf("failing row has %d logged attempts, want 3", len(invs))
			}
		}
	}
	dup := 0
	for _, id := range slow.byID {
		if id > 1 {
			dup++
		}
	}
	t.Logf("%d rows delivered twice (attempts in flight at the crash)", dup)
	if dup > 4 {
		t.Errorf("%d rows delivered twice; only the 4 in flight at the crash may be", dup)
	}
}

// TestDeadNodesClaimsComeBack runs two nodes on one store, crashes the one
// holding rows mid-attempt, and checks that the other delivers them within
// about the lease plus the trigger's timeout (how long a claim lasts).
func TestDeadNodesClaimsComeBack(t *testing.T) {
	url, schema := pgtest.Schema(t)
	hook := newCounter(t, func(_ string, node string, _ http.ResponseWriter, r *http.Request) {
		if node == "node-a" {
			<-r.Context().Done() // node A's attempts hang until it dies
		}
	})
	// A claim lasts the lease (2s) plus the timeout (3s), which is longer
	// than node A lives once its attempts hang.
	trig := fmt.Sprintf("      - {name: t, type: work, url: %q, timeout: 3s}\n", hook.URL)
	a := startChild(t, writeConfig(t, "node-a", url, schema, trig))
	startChild(t, writeConfig(t, "node-b", url, schema, trig))
	for i := range 20 {
		a.queue(t, fmt.Sprintf(`{"type":"work","data":%d}`, i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		hook.mu.Lock()
		n := hook.nodes["node-a"]
		hook.mu.Unlock()
		if n >= 16 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.kill(t)
	killed := time.Now()
	st := openStore(t, url, schema)
	waitRows(t, st, 20*time.Second, 20, func(r store.EventLog) bool { return r.Status == store.StatusProcessed })
	took := time.Since(killed)
	t.Logf("node B delivered node A's rows %s after A died (lease 2s, timeout 3s)", took)
	if took > 5*time.Second+5*time.Second {
		t.Errorf("takeover took %s, want within the lease (2s) and the timeout (3s), plus a few seconds", took)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if hook.nodes["node-b"] < 20 {
		t.Errorf("node B made %d deliveries, want all 20", hook.nodes["node-b"])
	}
}

// TestSIGTERMLetsAttemptsFinish stops triggerd with SIGTERM during an
// attempt: the attempt completes and is recorded, and the process exits 0.
func TestSIGTERMLetsAttemptsFinish(t *testing.T) {
	url, schema := pgtest.Schema(t)
	arrived := make(chan struct{}, 1)
	hook := newCounter(t, func(string, string, http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Second)
	})
	node := startChild(t, writeConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: t, type: work, url: %q}\n", hook.URL)))
	node.queue(t, `{"type":"work"}`)
	<-arrived
	node.terminate(t)
	st := openStore(t, url, schema)
	rows, _ := st.Recent(context.Background(), store.Filter{}, 10)
	if len(rows) != 1 || rows[0].Status != store.StatusProcessed {
		t.Fatalf("the attempt in flight at SIGTERM was not recorded: %+v", rows)
	}
	// A new request is refused once stopped.
	if _, err := http.Get("http://" + node.addr + "/healthz"); err == nil {
		t.Fatal("the API still answers after exit")
	}
}

func TestServeExplainsBadStarts(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: "+testSecret+"}], triggers: [{name: t, type: x, url: 'http://h/', retrys: 1}]}]\n"), 0o600)
	unreachable := filepath.Join(dir, "unreachable.yaml")
	os.WriteFile(unreachable, []byte("store: {url: 'postgres://u@127.0.0.1:1/db?connect_timeout=2'}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: "+testSecret+"}]}]\n"), 0o600)
	// A change capture source whose table does not exist: serve stops
	// before listening, saying which table and how to fix it.
	src := pgtest.Database(t)
	storeURL, schema := pgtest.Schema(t)
	noTable := writeProjectConfig(t, "no-table", storeURL, schema, fmt.Sprintf("    databases: {app: {url: %q}}\n", src),
		"      - {name: welcome, type: DB_INSERT, url: 'http://127.0.0.1:1/', options: {col: users}}\n")
	// A storage directory that does not exist (a relative path is taken
	// from the config's folder): serve stops before listening, naming it.
	noDir := writeProjectConfig(t, "no-dir", storeURL, schema, "    storage:\n      uploads: {path: no-such-folder}\n",
		"      - {name: thumbnail, type: FILE_CREATE, url: 'http://127.0.0.1:1/', options: {path: 'images/**'}}\n")
	cases := []struct {
		args []string
		says string
	}{
		{[]string{"serve"}, "pass --config FILE or set TRIGGERD_CONFIG"},
		{[]string{"serve", "--config", noTable}, "database app of project demo: trigger welcome: table users does not exist: create it, or fix options.col"},
		{[]string{"serve", "--config", noDir}, "storage uploads of project demo: " + filepath.Join(filepath.Dir(noDir), "no-such-folder") +
			" does not exist: create it, or fix storage.uploads.path"},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml: no such file"},
		{[]string{"serve", "--config", bad}, `bad.yaml: line 2: projects[0].triggers[0]: unknown key "retrys"`},
		{[]string{"serve", "--config", unreachable}, "unreachable"},
		{[]string{"serve", "--config", bad, "--log-format", "xml"}, "use text or json"},
		{[]string{"tail", "--config", bad, "--status", "done"}, "use staged, processed, failed or cancelled"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, c := range cases {
		var log bytes.Buffer
		err := run(context.Background(), c.args, io.Discard, &log)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: got %v, want an error saying %q", c.args, err, c.says)
		}
		if strings.Contains(log.String(), "triggerd is serving") {
			t.Errorf("%v: listened before failing:\n%s", c.args, log.String())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "triggerd ") {
		t.Errorf("version: %q %v", out.String(), err)
	}
}

// waitFor waits until the buffer matches re.
func waitFor(t *testing.T, b *dispatchtest.Buffer, re string, within time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q within %s in:\n%s", re, within, b.String())
	return nil
}

// TestTailPrintsAndFollows runs a node and tails it: existing rows first,
// then rows as they are created and change status.
func TestTailPrintsAndFollows(t *testing.T) {
	url, schema := pgtest.Schema(t)
	hook := newCounter(t, func(_ string, _ string, w http.ResponseWriter, _ *http.Request) {})
	cfg := writeConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: mailer, type: sent-email, url: %q}\n", hook.URL))
	node := startChild(t, cfg)
	node.queue(t, `{"type":"sent-email"}`)
	st := openStore(t, url, schema)
	waitRows(t, st, 10*time.Second, 1, func(r store.EventLog) bool { return r.Status == store.StatusProcessed })

	var out dispatchtest.Buffer
	if err := run(context.Background(), []string{"tail", "--config", cfg}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\S+  \S+  sent-email\s+mailer\s+processed 1`).MatchString(out.String()) {
		t.Fatalf("tail printed %q", out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var follow dispatchtest.Buffer
	go func() {
		done <- run(ctx, []string{"tail", "--config", cfg, "--follow", "--json", "--type", "sent-email"}, &follow, io.Discard)
	}()
	waitFor(t, &follow, `"status":"processed"`, 10*time.Second) // the existing row
	node.queue(t, `{"type":"sent-email","data":{"n":2},"delay":0.5}`)
	waitFor(t, &follow, `"data":\{"n":2\},"response":null|"status":"staged"`, 10*time.Second)
	m := waitFor(t, &follow, `(?s)"status":"staged".*"status":"processed"`, 10*time.Second)
	if len(m) == 0 {
		t.Fatal("no staged then processed lines")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail --follow: %v", err)
	}
	if n := strings.Count(follow.String(), "\n"); n != 3 {
		t.Errorf("tail --follow printed %d lines, want 3 (existing row; new row staged; processed):\n%s", n, follow.String())
	}
}

// TestDevQuickStart runs "triggerd dev" as a newcomer would, in a folder
// of its own, sends the events it suggests, inserts the row it suggests
// and runs the shell lines it suggests for its storage folder.
func TestDevQuickStart(t *testing.T) {
	t.Chdir(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	var out dispatchtest.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"dev", "--listen", "127.0.0.1:0"}, &out, io.Discard) }()
	m := waitFor(t, &out, `curl -s -X POST (\S+) -d '([^']+)'`, 60*time.Second)
	resp, err := http.Post(m[1], "application/json", strings.NewReader(m[2]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the suggested curl got %d", resp.StatusCode)
	}
	waitFor(t, &out, `receiver: sent-email \S+ \(X-SC-Token verified\)`, 10*time.Second)
	// The suggested token opens the types whose rule is authenticated.
	m = waitFor(t, &out, `curl -s -X POST (\S+) -H 'Authorization: (Bearer \S+)' -d '([^']+)'`, time.Second)
	req, _ := http.NewRequest(http.MethodPost, m[1], strings.NewReader(m[3]))
	req.Header.Set("Authorization", m[2])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the suggested curl with a token got %d", resp.StatusCode)
	}
	// The suggested psql line inserts a row into the demo table, and the
	// receiver prints its DB_INSERT delivery.
	m = waitFor(t, &out, `psql '([^']+)' -c "([^"]+)"`, time.Second)
	conn, err := pgx.Connect(ctx, m[1])
	if err != nil {
		t.Fatalf("the suggested psql url: %v", err)
	}
	var id int64
	err = conn.QueryRow(ctx, m[2]+" RETURNING id").Scan(&id)
	conn.Close(ctx)
	if err != nil {
		t.Fatalf("the suggested insert: %v", err)
	}
	var change struct {
		DB, Schema, Col string
		Find            map[string]any
		Doc             map[string]any
	}
	printed(t, &out, "DB_INSERT", &change)
	if change.DB != "app" || change.Schema != "public" || change.Col != "signups" ||
		change.Find["id"] != float64(id) || change.Doc["id"] != float64(id) || change.Doc["email"] != "ada@example.com" || change.Doc["created_at"] == nil {
		t.Errorf("DB_INSERT of signups row %d printed with data %+v", id, change)
	}
	// The folder storage was made in the working directory, and the
	// suggested shell lines write a file into it and remove it: the
	// receiver prints their FILE_CREATE and FILE_DELETE deliveries.
	storageDir, err := filepath.Abs("storage")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, &out, `\n  storage   `+regexp.QuoteMeta(storageDir)+` \(made for dev; kept when it stops\)\n`, time.Second)
	m = waitFor(t, &out, `\nWrite a file into storage, then remove it;.*\n  (echo hello > (storage/\S+))\n  (rm \S+)\n`, time.Second)
	shell(t, m[1])
	var file struct {
		Store, Path, Type string
		Meta              struct {
			Size   int64
			SHA256 string
		}
	}
	printed(t, &out, "FILE_CREATE", &file)
	sum := sha256.Sum256([]byte("hello\n"))
	if "storage/"+file.Path != m[2] || file.Store != "uploads" || file.Type != "file" || file.Meta.Size != 6 || file.Meta.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("FILE_CREATE of %s printed with data %+v", m[2], file)
	}
	shell(t, m[3])
	file.Path = ""
	printed(t, &out, "FILE_DELETE", &file)
	if "storage/"+file.Path != m[2] {
		t.Errorf("FILE_DELETE of %s printed with data %+v", m[2], file)
	}
	dir := waitFor(t, &out, `store\s+postgres://\S+host=(%2F\S+?)&`, time.Second)[1]
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop")
	}
	clusterDir := strings.ReplaceAll(dir, "%2F", "/")
	if _, err := os.Stat(clusterDir); !os.IsNotExist(err) {
		t.Errorf("the throwaway cluster %s was not removed: %v", clusterDir, err)
	}
	if fi, err := os.Stat(storageDir); err != nil || !fi.IsDir() {
		t.Errorf("the folder storage was not left in place: %v", err)
	}
}

// printed waits until the dev receiver prints a delivery of type typ and
// decodes its data into v.
func printed(t *testing.T, out *dispatchtest.Buffer, typ string, v any) {
	t.Helper()
	m := waitFor(t, out, `receiver: `+typ+` \S+ \(X-SC-Token verified\)\n  data: (.*)\n`, 10*time.Second)
	if err := json.Unmarshal([]byte(m[1]), v); err != nil {
		t.Fatalf("%s data %s: %v", typ, m[1], err)
	}
}

// shell runs a command line that dev suggests, as a user would.
func shell(t *testing.T, line string) {
	t.Helper()
	if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
}
