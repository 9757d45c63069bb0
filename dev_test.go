package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// devChild is "triggerd dev" running as a separate process, its stdout and
// stderr on one pipe, as in "triggerd dev 2>&1 | tee log".
type devChild struct {
	cmd      *exec.Cmd
	tmp      string              // its TMPDIR, where it makes the cluster and the config
	out      *os.File            // the pipe's read end
	text     dispatchtest.Buffer // what was read from it
	readDone chan struct{}
	exited   chan struct{}

	clusterDir string // the throwaway cluster's folder, from the banner
	configDir  string // the folder of the config dev wrote
	queueURL   string // the first suggested curl line's url and body
	queueBody  string
}

// launchDev runs "triggerd dev" in a folder of its own, with a temporary
// folder of its own.
func launchDev(t *testing.T) *devChild {
	t.Helper()
	// Short, for the cluster's socket path; open to the postgres user that
	// runs the cluster when the test runs as root.
	tmp, err := os.MkdirTemp("", "tdd-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := nodetest.Command("dev", "--listen", "127.0.0.1:0")
	cmd.Dir = t.TempDir()
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	d := &devChild{cmd: cmd, tmp: tmp, out: r, readDone: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		io.Copy(&d.text, r)
		close(d.readDone)
	}()
	go func() {
		cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.exited
		r.Close()
		<-d.readDone
		if t.Failed() {
			t.Logf("dev printed:\n%s", d.text.String())
		}
		// Whatever happened, leave nothing behind (the test checks that
		// dev removed its own files itself).
		killClusterProcesses(tmp)
		os.RemoveAll(tmp)
	})
	return d
}

// startDev runs "triggerd dev" and waits for its banner.
func startDev(t *testing.T) *devChild {
	t.Helper()
	d := launchDev(t)
	waitFor(t, &d.text, `Ctrl-C stops everything`, 60*time.Second)
	store := waitFor(t, &d.text, `\n  store     (\S+)\n`, time.Second)[1]
	u, err := url.Parse(store)
	if err != nil {
		t.Fatalf("the banner's store %q: %v", store, err)
	}
	d.clusterDir = u.Query().Get("host")
	d.configDir = filepath.Dir(waitFor(t, &d.text, `\n  config    (\S+)\n`, time.Second)[1])
	for _, dir := range []string{d.clusterDir, d.configDir} {
		if filepath.Dir(dir) != d.tmp {
			t.Fatalf("the banner names %q, not a folder in dev's TMPDIR %s", dir, d.tmp)
		}
	}
	m := waitFor(t, &d.text, `curl -s -X POST (\S+) -d '([^']+)'`, time.Second)
	d.queueURL, d.queueBody = m[1], m[2]
	return d
}

// closeOutput closes the read end of dev's output, as when tee or head
// exits: dev's next write meets a broken pipe.
func (d *devChild) closeOutput(t *testing.T) {
	t.Helper()
	d.out.Close()
	<-d.readDone
}

// signal sends sig to dev.
func (d *devChild) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// queue posts the banner's first curl line, which makes the receiver print
// a delivery.
func (d *devChild) queue(t *testing.T) {
	t.Helper()
	resp, err := http.Post(d.queueURL, "application/json", strings.NewReader(d.queueBody))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("queue: %d", resp.StatusCode)
	}
}

// clusterProcesses lists the processes working in a cluster's folder: the
// postmaster and its children run in its data folder. It finds them on
// Linux only, through /proc.
func clusterProcesses(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killClusterProcesses kills what a failed test may have left running.
func killClusterProcesses(dir string) {
	for _, pid := range clusterProcesses(dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestDevCleansUpHoweverStopped stops real dev processes in each way a
// user's session can end, and checks that each removes its throwaway
// cluster and its config, and stops Postgres.
func TestDevCleansUpHoweverStopped(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// starting: stop dev while it starts Postgres, not once it runs.
		starting bool
		stop     func(*testing.T, *devChild)
		// exit0: dev stops as asked and exits 0; when its output is gone
		// the exit status is not checked.
		exit0 bool
	}{
		{"SIGINT (Ctrl-C)", false, func(t *testing.T, d *devChild) { d.signal(t, syscall.SIGINT) }, true},
		{"SIGTERM", false, func(t *testing.T, d *devChild) { d.signal(t, syscall.SIGTERM) }, true},
		{"SIGHUP (its terminal closed)", false, func(t *testing.T, d *devChild) { d.signal(t, syscall.SIGHUP) }, true},
		{"Ctrl-C on dev 2>&1 | tee (SIGINT, its reader gone)", false, func(t *testing.T, d *devChild) {
			d.closeOutput(t)
			d.signal(t, syscall.SIGINT)
		}, false},
		{"its reader gone, then a delivery to print (SIGPIPE)", false, func(t *testing.T, d *devChild) {
			d.closeOutput(t)
			d.queue(t)
		}, false},
		{"SIGINT while Postgres starts", true, func(t *testing.T, d *devChild) { d.signal(t, syscall.SIGINT) }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var d *devChild
			if c.starting {
				d = launchDev(t)
				waitFor(t, &d.text, `Starting a throwaway Postgres`, 30*time.Second)
			} else {
				d = startDev(t)
				if _, err := os.Stat(d.clusterDir); err != nil {
					t.Fatalf("the banner's cluster folder: %v", err)
				}
				if runtime.GOOS == "linux" && len(clusterProcesses(d.clusterDir)) == 0 {
					t.Fatalf("no postgres process found working in %s", d.clusterDir)
				}
			}
			c.stop(t, d)
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("dev did not exit within 30s")
			}
			t.Logf("dev exited: %v", d.cmd.ProcessState)
			if c.exit0 && d.cmd.ProcessState.ExitCode() != 0 {
				t.Errorf("dev exited with %v, want exit status 0", d.cmd.ProcessState)
			}
			if entries, err := os.ReadDir(d.tmp); err != nil || len(entries) > 0 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("dev left %v in its TMPDIR %s (%v)", names, d.tmp, err)
			}
			if runtime.GOOS == "linux" {
				// A killed postmaster's children may take a moment; a
				// clean stop leaves none at all.
				if err := waittest.Until(5*time.Second, func() error {
					if pids := clusterProcesses(d.tmp); len(pids) > 0 {
						return fmt.Errorf("postgres processes %v of %s still run", pids, d.tmp)
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestSIGHUPIgnoredAtStartStaysIgnored runs a node as nohup would, with
// SIGHUP ignored: a SIGHUP does not stop it.
func TestSIGHUPIgnoredAtStartStaysIgnored(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to start triggerd with SIGHUP ignored:", err)
	}
	url, schema := pgtest.Schema(t)
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, "      - {name: t, type: work, url: 'http://127.0.0.1:1/'}\n")
	cmd := nodetest.Command("serve", "--config", cfg, "--log-format", "json")
	cmd.Args = append([]string{"sh", "-c", `trap '' HUP; exec "$0" "$@"`}, cmd.Args...)
	cmd.Path = sh
	node := nodetest.StartCommand(t, cmd, cfg)
	if err := node.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-node.Exited():
		t.Fatalf("triggerd started with SIGHUP ignored exited on SIGHUP: %v", node.Cmd.ProcessState)
	case <-time.After(time.Second): // a second in which it must not exit
	}
	resp, err := http.Get("http://" + node.Addr + "/healthz")
	if err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	resp.Body.Close()
	node.Terminate(t)
}

// TestDevListenTaken runs dev on an address another process holds, and on
// one that is not host:port: it says to pass --listen (it has no config of
// the user's to change), before starting Postgres or making ./storage.
func TestDevListenTaken(t *testing.T) {
	t.Chdir(t.TempDir())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ listen, says string }{
		{taken.Addr().String(), "another process is using it: pass --listen ADDR with a free port"},
		{"localhost", "missing port in address (pass --listen ADDR with a host:port"},
	} {
		var out, log dispatchtest.Buffer
		err := run(context.Background(), []string{"dev", "--listen", c.listen}, &out, &log)
		if err == nil || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "config") {
			t.Errorf("dev --listen %s: %v; want an error saying %q, not to change the config", c.listen, err, c.says)
		}
		if strings.Contains(out.String(), "Postgres") {
			t.Errorf("dev --listen %s started Postgres before failing:\n%s", c.listen, out.String())
		}
		if _, err := os.Stat(devStorage); !os.IsNotExist(err) {
			t.Errorf("dev --listen %s made ./%s before failing (stat: %v)", c.listen, devStorage, err)
			os.RemoveAll(devStorage)
		}
	}
}

// TestDevConfigTakesAnyListenAddress writes dev's config with addresses
// YAML would read as something else unquoted, such as an IPv6 one.
func TestDevConfigTakesAnyListenAddress(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"127.0.0.1:4122", "[::1]:4122", ":4122", "localhost:0"} {
		_, cfg, err := writeDevConfig(t.TempDir(), listen, "postgres://postgres@/postgres?host=%2Ftmp%2Fx&port=5432", "http://127.0.0.1:1/deliveries", t.TempDir())
		if err != nil {
			t.Errorf("--listen %s: %v", listen, err)
		} else if cfg.Listen != listen {
			t.Errorf("--listen %s: the config listens on %q", listen, cfg.Listen)
		}
	}
}

// TestVersionShowsTheBuild builds triggerd with go build, as a user would
// from a git clone, and runs "triggerd version": it shows the revision,
// its commit time, whether the tree had changes, and the Go version; a
// build without version control information says so.
func TestVersionShowsTheBuild(t *testing.T) {
	t.Parallel()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed:", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH:", err)
	}
	// go stamps a build with its revision only where .git is a folder,
	// not in a git worktree: build from a copy of this checkout's working
	// tree, committed to a repository of its own at a known time.
	list, err := exec.Command(gitBin, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("this checkout is not a git checkout (git ls-files: %v)", err)
	}
	src := t.TempDir()
	for name := range strings.SplitSeq(strings.TrimSuffix(string(list), "\x00"), "\x00") {
		fi, err := os.Lstat(name)
		if os.IsNotExist(err) || err == nil && !fi.Mode().IsRegular() {
			continue // deleted since it was committed, or a symlink
		} else if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	const committed = "2026-01-02T03:04:05Z"
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gitBin, append([]string{"-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_DATE="+committed, "GIT_COMMITTER_DATE="+committed)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "a build to check triggerd version")
	rev := git("rev-parse", "HEAD")
	version := func(buildvcs string) string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "triggerd")
		build := exec.Command(goBin, "build", buildvcs, "-o", bin, ".")
		build.Dir = src
		build.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_CONFIG_NOSYSTEM=1")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", buildvcs, err, out)
		}
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("triggerd version: %v\n%s", err, out)
		}
		return string(out)
	}
	goLine := "\n  go        " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"

	out := version("-buildvcs=true")
	for _, want := range []string{"\n  revision  " + rev + "\n", "\n  committed " + committed + "\n", "\n  modified  no\n", goLine} {
		if !strings.Contains(out, want) {
			t.Errorf("triggerd version built at %s does not show %q:\n%s", rev, strings.TrimSpace(want), out)
		}
	}
	if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "triggerd v") || !strings.Contains(first, rev[:12]) {
		t.Errorf("first line %q: want triggerd and the module version go derived from revision %s", first, rev[:12])
	}

	if err := os.WriteFile(filepath.Join(src, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := version("-buildvcs=true"); !strings.Contains(out, "\n  revision  "+rev+"\n") || !strings.Contains(out, "\n  modified  yes") {
		t.Errorf("triggerd version built from a changed tree at %s:\n%s", rev, out)
	}

	out = version("-buildvcs=false")
	if !strings.Contains(out, "\n  revision  unknown: no version control information in this build") || !strings.Contains(out, goLine) {
		t.Errorf("triggerd version built with -buildvcs=false:\n%s", out)
	}
}

// TestDevReceiverLimits sends dev's receiver a delivery, a request with
// headers too large, and one whose body never comes: it takes the first,
// refuses the second and gives up on the third.
func TestDevReceiverLimits(t *testing.T) {
	t.Parallel()
	keys, err := auth.NewKeyring([]config.Secret{{KID: "dev", Alg: "HS256", Secret: nodetest.Secret}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out dispatchtest.Buffer
	srv := newReceiver(&out, keys, "dev")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/deliveries"
	post := func(header http.Header) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"id":"e1","type":"sent-email","data":{"n":1}}`))
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	token, err := keys.NodeToken("dev", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if code := post(http.Header{"X-Sc-Token": {token}}); code != http.StatusOK {
		t.Fatalf("a delivery got %d:\n%s", code, out.String())
	}
	waitFor(t, &out, `receiver: sent-email e1 \(X-SC-Token verified\)`, time.Second)

	big := http.Header{"X-Sc-Token": {token}, "X-Padding": {strings.Repeat("x", 200<<10)}}
	if code := post(big); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a request with 200 KB of headers got %d, want %d", code, http.StatusRequestHeaderFieldsTooLarge)
	}

	// Headers promising a body that never comes: the receiver answers or
	// hangs up once its read timeout passes, rather than wait for ever.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /deliveries HTTP/1.1\r\nHost: dev\r\nContent-Length: 100\r\n\r\n{")
	start := time.Now()
	conn.SetReadDeadline(start.Add(30 * time.Second))
	_, err = io.ReadAll(conn)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the receiver still waited for the body after %s (%v)", took.Round(time.Second), err)
	} else {
		t.Logf("the receiver gave up on the body after %s", took.Round(100*time.Millisecond))
	}
}

// TestDevBannerShowsEachPart renders dev's banner with a distinct value
// for each part: every value shows, at its place in the banner.
func TestDevBannerShowsEachPart(t *testing.T) {
	t.Parallel()
	b := devBanner{Receiver: "http://127.0.0.1:2/deliveries", Store: "postgres://postgres@/postgres?host=%2Ftmp%2Fx",
		Config: "/tmp/triggerd-dev-1/triggerd.yaml", Storage: "/work/storage", Kept: "made for dev; kept when it stops",
		Token: "header.claims.signature", CaptureLine: "Insert a row:", FilesLine: "Write a file:",
		Login: `{"password":"0123abcd","user":"admin"}`, User: "admin", Password: "0123abcd"}
	var out bytes.Buffer
	b.print(&out, "127.0.0.1:1")
	text := out.String()
	for _, want := range []string{
		"\ntriggerd dev is running.\n  API       http://127.0.0.1:1\n",
		"\n  console   http://127.0.0.1:1/mission-control/ (Mission Control: user admin, password 0123abcd)\n",
		"\n  receiver  http://127.0.0.1:2/deliveries (prints each delivery below)\n",
		"\n  store     postgres://postgres@/postgres?host=%2Ftmp%2Fx\n",
		"\n  config    /tmp/triggerd-dev-1/triggerd.yaml\n",
		"\n  storage   /work/storage (made for dev; kept when it stops)\n",
		"\n  curl -s -X POST http://127.0.0.1:1/v1/api/demo/event-triggers/queue -d '{\"type\":\"sent-email\",\"data\":{\"to\":\"user1@email.com\"}}'\n",
		"\n  curl -s -X POST http://127.0.0.1:1/v1/api/demo/event-triggers/queue -H 'Authorization: Bearer header.claims.signature' -d",
		"\nInsert a row:\n  psql 'postgres://postgres@/postgres?host=%2Ftmp%2Fx' -c \"INSERT INTO signups (email) VALUES ('ada@example.com')\"\n",
		"\nWrite a file:\n  echo hello > storage/hello.txt\n",
		"\n  go run . tail --config /tmp/triggerd-dev-1/triggerd.yaml --follow\n",
		"\n  curl -s -X POST http://127.0.0.1:1/v1/admin/login -d '{\"password\":\"0123abcd\",\"user\":\"admin\"}'\n",
		"\n  curl -s http://127.0.0.1:1/v1/admin/events -H 'Authorization: Bearer TOKEN'\n",
		"\n  go run . events list --config /tmp/triggerd-dev-1/triggerd.yaml\n",
		"the folder storage stays.\n\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the banner lacks %q:\n%s", want, text)
		}
	}
}
