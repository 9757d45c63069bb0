package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestMain lets the test binary run as triggerd itself, as a child
// process of the tests (see nodetest.Main): they send real signals.
func TestMain(m *testing.M) {
	nodetest.Main(m, func(args []string) {
		os.Args = append([]string{"triggerd"}, args...)
		main()
	})
}

// TestSIGTERMLetsAttemptsFinish stops triggerd with SIGTERM during an
// attempt: the attempt completes and is recorded, and the process exits 0.
func TestSIGTERMLetsAttemptsFinish(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	arrived := make(chan struct{}, 1)
	hook := nodetest.NewCounter(t, func(string, string, http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Second) // an attempt still in flight at SIGTERM
	})
	node := nodetest.Start(t, nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: t, type: work, url: %q}\n", hook.URL)))
	node.Queue(t, `{"type":"work"}`)
	<-arrived
	node.Terminate(t)
	st := nodetest.OpenStore(t, url, schema)
	rows, _ := st.Recent(context.Background(), store.Filter{}, 10)
	if len(rows) != 1 || rows[0].Status != store.StatusProcessed {
		t.Fatalf("the attempt in flight at SIGTERM was not recorded: %+v", rows)
	}
	// A new request is refused once stopped.
	if resp, err := http.Get("http://" + node.Addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("the API still answers after exit")
	}
}

// writeFile writes a test's file.
func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServeExplainsBadStarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: "+nodetest.Secret+"}], triggers: [{name: t, type: x, url: 'http://h/', retrys: 1}]}]\n")
	unreachable := filepath.Join(dir, "unreachable.yaml")
	writeFile(t, unreachable, "store: {url: 'postgres://u@127.0.0.1:1/db?connect_timeout=2'}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: "+nodetest.Secret+"}]}]\n")
	// A change capture source whose table does not exist: serve stops
	// before listening, saying which table and how to fix it.
	src := pgtest.Database(t)
	storeURL, schema := pgtest.Schema(t)
	noTable := nodetest.WriteProjectConfig(t, "no-table", storeURL, schema, fmt.Sprintf("    databases: {app: {url: %q}}\n", src),
		"      - {name: welcome, type: DB_INSERT, url: 'http://127.0.0.1:1/', options: {col: users}}\n")
	// A storage directory that does not exist (a relative path is taken
	// from the config's folder): serve stops before listening, naming it.
	noDir := nodetest.WriteProjectConfig(t, "no-dir", storeURL, schema, "    storage:\n      uploads: {path: no-such-folder}\n",
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
	var m []string
	if err := waittest.Until(within, func() error {
		if m = rx.FindStringSubmatch(b.String()); m == nil {
			return fmt.Errorf("no %q", re)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v in:\n%s", err, b.String())
	}
	return m
}

// TestTailPrintsAndFollows runs a node and tails it: existing rows first,
// then rows as they are created and change status.
func TestTailPrintsAndFollows(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	hook := nodetest.NewCounter(t, func(_ string, _ string, w http.ResponseWriter, _ *http.Request) {})
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, fmt.Sprintf("      - {name: mailer, type: sent-email, url: %q}\n", hook.URL))
	node := nodetest.Start(t, cfg)
	node.Queue(t, `{"type":"sent-email"}`)
	st := nodetest.OpenStore(t, url, schema)
	nodetest.WaitRows(t, st, 10*time.Second, 1, func(r store.EventLog) bool { return r.Status == store.StatusProcessed })

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
	node.Queue(t, `{"type":"sent-email","data":{"n":2},"delay":0.5}`)
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
	// The suggested login answers an admin token, which lists the events
	// queued above through the admin API.
	m = waitFor(t, &out, `curl -s -X POST (\S+/v1/admin/login) -d '([^']+)'`, time.Second)
	resp, err = http.Post(m[1], "application/json", strings.NewReader(m[2]))
	if err != nil {
		t.Fatal(err)
	}
	var login struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || login.Token == "" {
		t.Fatalf("the suggested login: %d, %v", resp.StatusCode, err)
	}
	m = waitFor(t, &out, `curl -s (\S+/v1/admin/events) -H 'Authorization: Bearer TOKEN'`, time.Second)
	req, _ = http.NewRequest(http.MethodGet, m[1]+"?type=sent-email", nil)
	req.Header.Set("Authorization", "Bearer "+login.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page struct{ Events []struct{ Type string } }
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(page.Events) != 1 || page.Events[0].Type != "sent-email" {
		t.Fatalf("the suggested events list: %d, %+v, %v; want the sent-email event queued above", resp.StatusCode, page, err)
	}
	// The console's line: its page, and a login with the user and
	// password printed.
	m = waitFor(t, &out, `console\s+(http://\S+/mission-control/) \(Mission Control: user (\S+), password (\S+)\)`, time.Second)
	resp, err = http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("the console's page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body, _ := json.Marshal(map[string]string{"user": m[2], "password": m[3]})
	resp, err = http.Post(m[1]+"login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
		t.Fatalf("the console's login with the printed password: %d, cookies %v", resp.StatusCode, resp.Cookies())
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
