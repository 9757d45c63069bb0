// Package localpg runs a private, throwaway PostgreSQL cluster from the
// installed server binaries, for "triggerd dev" and for tests. The server
// listens only on a Unix socket inside the cluster's folder, so clusters
// never clash over ports.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries means no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH, in $TRIGGERD_PG_BIN or in /usr/lib/postgresql/*/bin: " +
	"install the server (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; macOS: brew install postgresql) " +
	"or set TRIGGERD_PG_BIN to the folder that holds them")

// Options configures a cluster.
type Options struct {
	// Dir holds the cluster; it is created when missing. When empty, a new
	// temporary folder is made, and Close removes it.
	Dir string
	// Log also receives the server's log, which always goes to postgres.log
	// in Dir.
	Log io.Writer
	// Settings are extra server settings, passed as -c name=value.
	Settings map[string]string
}

// Cluster is a running (or stopped) throwaway cluster.
type Cluster struct {
	dir   string
	bin   string
	owned bool // Close removes dir
	cred  *syscall.Credential
	opts  Options

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

// socketPort is the port in the socket's name; the socket is private to
// the cluster's folder, so every cluster can use the same one.
const socketPort = 5432

// Start initialises a cluster (unless Dir already holds one) and starts
// it, returning once it accepts connections.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: opts.Dir, bin: bin, cred: cred, opts: opts}
	if c.dir == "" {
		// Keep the path short: the socket's path must fit in 107 bytes.
		if c.dir, err = os.MkdirTemp("", "tdpg-"); err != nil {
			return nil, fmt.Errorf("make a folder for the cluster: %w", err)
		}
		c.owned = true
	} else if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("make the cluster folder: %w", err)
	}
	if cred != nil {
		if err := os.Chown(c.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			c.cleanup()
			return nil, fmt.Errorf("hand the cluster folder to the postgres user: %w", err)
		}
	}
	if err := c.initdb(ctx); err != nil {
		c.cleanup()
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		c.cleanup()
		return nil, err
	}
	return c, nil
}

// URL is a connection URL for the superuser "postgres" and a database.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable",
		url.PathEscape(database), url.QueryEscape(c.dir), socketPort)
}

// Stop shuts the server down (fast: sessions are disconnected, data is
// kept), escalating to an immediate stop if ctx ends first.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	c.closeLog()
	return nil
}

// Restart stops the server and starts it again on the same data and URL.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx); err != nil {
		return err
	}
	return c.start(ctx)
}

// Kill crashes the server: SIGKILL to the postmaster and all its
// processes, as a power cut would leave it (committed data survives).
// Restart, or StartAgain, brings it back through crash recovery.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := killAll(cmd.Process.Pid); err != nil {
		return fmt.Errorf("kill postgres: %w", err)
	}
	<-exited
	c.closeLog()
	return nil
}

// StartAgain starts a stopped or killed cluster.
func (c *Cluster) StartAgain(ctx context.Context) error {
	return c.start(ctx)
}

// Close stops the server and removes the folder if Start made it. It may
// be called more than once.
func (c *Cluster) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.Stop(ctx)
	c.cleanup()
	return err
}

func (c *Cluster) cleanup() {
	if c.owned {
		os.RemoveAll(c.dir)
	}
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// initdb creates the cluster's data unless it exists.
func (c *Cluster) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dataDir(), "PG_VERSION")); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "initdb"),
		"-D", c.dataDir(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb in %s: %w\n%s", c.dataDir(), err, out)
	}
	return nil
}

// start runs the postmaster and waits until it accepts connections.
func (c *Cluster) start(ctx context.Context) error {
	settings := map[string]string{
		"listen_addresses":        "",
		"unix_socket_directories": c.dir,
		"port":                    strconv.Itoa(socketPort),
		"wal_level":               "logical",
		"max_wal_senders":         "20",
		"max_replication_slots":   "20",
		"max_connections":         "300",
		"fsync":                   "on",
		"synchronous_commit":      "on",
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	args := []string{"-D", c.dataDir()}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	logFile, err := os.OpenFile(filepath.Join(c.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open the server log: %w", err)
	}
	// The server outlives ctx, which bounds the start alone; Stop, Kill
	// and Close end it.
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), args...) //nolint:noctx // see above
	cmd.Dir = c.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if c.opts.Log != nil {
		cmd.Stderr = io.MultiWriter(logFile, c.opts.Log)
	}
	cmd.SysProcAttr = sysProcAttr(c.cred)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	c.cmd, c.exited, c.log = cmd, exited, logFile
	c.mu.Unlock()
	if err := c.waitReady(ctx, exited); err != nil {
		_ = c.Kill()
		return err
	}
	return nil
}

// waitReady connects until the server answers, it exits, or 30 s pass.
func (c *Cluster) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		attempt, stop := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(attempt, c.URL("postgres"))
		stop()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited while starting:\n%s", c.logTail(20))
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections (%v):\n%s", err, c.logTail(20))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// logTail returns the last n lines of postgres.log.
func (c *Cluster) logTail(n int) string {
	data, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	lines := strings.Split(string(bytes.TrimRight(data, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) closeLog() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log != nil {
		c.log.Close()
		c.log = nil
	}
}

// findBinaries returns the folder holding initdb and postgres.
func findBinaries() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("TRIGGERD_PG_BIN"); dir != "" {
		if has(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("TRIGGERD_PG_BIN=%s: %w", dir, ErrNoBinaries)
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(versions, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, dir := range append(versions, "/usr/local/pgsql/bin") {
		if has(dir) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

// versionOf reads the major version from /usr/lib/postgresql/N/bin.
func versionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// serverUser is the account the server runs as: nil (this process's own)
// unless running as root, which Postgres refuses; then the postgres user.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, the cluster must run as the postgres user, which does not exist (%v): create it (useradd postgres) or run as a normal user", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
