package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/node"
	"github.com/triggerd/triggerd/store/localpg"
)

// devConfig is the quick-start configuration; the placeholders are filled
// with the listen address (quoted: YAML would read [::1]:4122 as a list),
// the throwaway database (the store, and the database whose signups table
// is captured), a fresh secret, the receiver's url, the absolute path of
// the watched folder (a relative one would be taken from the config's
// folder), and the admin API's user, a fresh password and a fresh secret.
const devConfig = `# Written by "triggerd dev"; removed when it stops.
listen: %[1]q
node_id: dev
store:
  url: %[2]s
projects:
  - id: demo
    secrets:
      - {kid: dev, alg: HS256, secret: %[3]s}
    rules:
      default: authenticated
      sent-email: allow
    databases:
      app:
        url: %[2]s
    storage:
      uploads:
        path: %[5]q
    triggers:
      - name: email-sender
        type: sent-email
        url: %[4]s
        retries: 3
        retry_backoff: {initial: 1s, max: 1m}
      - name: signup-welcome
        type: DB_INSERT
        url: %[4]s
        options: {db: app, col: signups}
      - name: file-created
        type: FILE_CREATE
        url: %[4]s
        options: {store: uploads}
      - name: file-deleted
        type: FILE_DELETE
        url: %[4]s
        options: {store: uploads}
admin:
  user: %[6]s
  password: %[7]s
  secret: %[8]s
`

// devTable is the demo table whose inserts the dev config captures. The
// store's tables live in their own schema of the same database and are
// never captured.
const devTable = `CREATE TABLE IF NOT EXISTS signups (
	id         bigserial PRIMARY KEY,
	email      text NOT NULL,
	created_at timestamptz DEFAULT now()
)`

// devSlot is the replication slot of the dev config's database.
const devSlot = "triggerd_demo_app"

// devStorage is the folder, in the working directory, that the dev config
// watches as storage uploads.
const devStorage = "storage"

// devAdmin is the admin API's user in the dev config.
const devAdmin = "admin"

// devCommand is "triggerd dev": a throwaway Postgres, a demo project with
// a receiver that prints each delivery, and a node serving them, until
// Ctrl-C, SIGTERM, SIGHUP or a failed write to its output.
func devCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:4122", "the API's address")
	format := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// When dev's output is gone (its reader, such as tee or head, exited,
	// or its terminal closed), a write fails and stops dev, which cleans
	// up as on Ctrl-C. While dev runs, a write to a broken pipe returns
	// EPIPE instead of killing the process, as it would by default on
	// stdout and stderr. SIGPIPE only arrives on the channel, it does not
	// stop dev: writes to a socket whose peer hung up raise it too.
	defer survivePipes()()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	stdout = stopOnFailedWrite{w: stdout, stop: stop}
	log, err := newLogger(*format, stopOnFailedWrite{w: stderr, stop: stop})
	if err != nil {
		return err
	}
	err = dev(ctx, *listen, stdout, log)
	if gone := (*outputGone)(nil); errors.As(context.Cause(ctx), &gone) {
		return gone // what failed after it follows from it
	}
	if err != nil && ctx.Err() != nil {
		// Stopped while starting: the step under way failed because of
		// the stop (initdb killed, a connection cancelled), not on its
		// own, and its error (initdb's whole output) would only mislead.
		log.Info("stopped while starting")
		return nil
	}
	return err
}

// outputGone is why dev stopped when a write to its output failed.
type outputGone struct{ err error }

func (e *outputGone) Error() string {
	return fmt.Sprintf("dev stopped: its output is gone (%v)", e.err)
}

func (e *outputGone) Unwrap() error { return e.err }

// stopOnFailedWrite passes writes on to w, and stops dev when one fails.
type stopOnFailedWrite struct {
	w    io.Writer
	stop context.CancelCauseFunc
}

func (s stopOnFailedWrite) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.stop(&outputGone{err})
	}
	return n, err
}

// dev runs the throwaway Postgres, the receiver and the node until ctx
// ends, and removes the cluster and the config however it returns.
func dev(ctx context.Context, listen string, stdout io.Writer, log *slog.Logger) error {
	if err := checkDevListen(listen); err != nil {
		return err
	}
	storageDir, created, err := makeDevStorage(devStorage)
	if err != nil {
		return err
	}

	fmt.Fprintln(stdout, "Starting a throwaway Postgres...")
	// Change capture needs logical decoding (localpg's default too).
	cluster, err := localpg.Start(ctx, localpg.Options{Settings: map[string]string{"wal_level": "logical"}})
	if err != nil {
		return fmt.Errorf("dev needs a local PostgreSQL: %w", err)
	}
	defer cluster.Close()
	storeURL := cluster.URL("postgres")
	if err := createDevTable(ctx, storeURL); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "triggerd-dev-")
	if err != nil {
		return fmt.Errorf("make a folder for the dev config: %w", err)
	}
	defer os.RemoveAll(dir)

	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("start the demo receiver: %w", err)
	}
	defer rl.Close()
	receiverURL := "http://" + rl.Addr().String() + "/deliveries"
	path, cfg, err := writeDevConfig(dir, listen, storeURL, receiverURL, storageDir)
	if err != nil {
		return err
	}
	login, err := json.Marshal(map[string]string{"user": cfg.Admin.User, "password": cfg.Admin.Password})
	if err != nil {
		return err
	}
	keys, err := auth.Keyrings(cfg, log)
	if err != nil {
		return err
	}
	recv := newReceiver(stdout, keys["demo"], cfg.NodeID)
	go func() {
		if err := recv.Serve(rl); !errors.Is(err, http.ErrServerClosed) {
			log.Error("the demo receiver stopped", "err", err)
		}
	}()
	defer recv.Close()

	// A token for types whose rule is authenticated, as a client would hold.
	token, err := keys["demo"].Sign(jwt.MapClaims{"sub": "dev", "exp": time.Now().Add(24 * time.Hour).Unix()})
	if err != nil {
		return err
	}
	banner := devBanner{Receiver: receiverURL, Store: storeURL, Config: path, Storage: storageDir, Token: token,
		Kept: "made for dev; kept when it stops", Login: string(login), User: cfg.Admin.User, Password: cfg.Admin.Password}
	if !created {
		banner.Kept = "kept when dev stops; the files already in it are announced as FILE_CREATE at start"
	}
	n, err := node.New(cfg, node.Options{Logger: log, Version: version(), Started: func(addr string) {
		if banner.waitSources(ctx, cfg.Store.Schema) {
			banner.print(stdout, addr)
		}
	}})
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// devBanner is what dev prints once its node listens: where its parts are,
// and what to try.
type devBanner struct {
	API, Queue              string // the node's address, and its queue url
	Receiver, Store, Config string // urls of the receiver and the store, and the config's path
	Storage, Kept           string // the watched folder, and whether dev made it
	Token                   string // a client token for the demo project
	CaptureLine, FilesLine  string // what to do to see a DB_INSERT and file events
	Admin, Login            string // the admin API's url, and the body that logs in to it
	Console, User, Password string // Mission Control's url, and the admin's user and password
}

// devBannerText is the banner's template. It starts and ends with an
// empty line, to stand apart from the log.
var devBannerText = template.Must(template.New("banner").Parse(`
triggerd dev is running.
  API       http://{{.API}}
  console   {{.Console}} (Mission Control: user {{.User}}, password {{.Password}})
  receiver  {{.Receiver}} (prints each delivery below)
  store     {{.Store}}
  config    {{.Config}}
  storage   {{.Storage}} ({{.Kept}})

Queue an event, then a synchronous one that waits for the receiver's response:
  curl -s -X POST {{.Queue}} -d '{"type":"sent-email","data":{"to":"user1@email.com"}}'
  curl -s -X POST {{.Queue}} -d '{"type":"sent-email","data":{"to":"user1@email.com"},"isSynchronous":true}'
Other types need a token signed with the project's secret (rule authenticated); this one lasts a day:
  curl -s -X POST {{.Queue}} -H 'Authorization: Bearer {{.Token}}' -d '{"type":"user-signed-up","data":{"id":7}}'
  (no trigger handles user-signed-up, so it is accepted and stored nowhere)
{{.CaptureLine}}
  psql '{{.Store}}' -c "INSERT INTO signups (email) VALUES ('ada@example.com')"
{{.FilesLine}}
  echo hello > storage/hello.txt
  rm storage/hello.txt
Follow event_logs from another terminal:
  go run . tail --config {{.Config}} --follow
The admin API: log in for a token (it lasts 15 minutes), then list events, or do it all with the CLI:
  curl -s -X POST {{.Admin}}/login -d '{{.Login}}'
  curl -s {{.Admin}}/events -H 'Authorization: Bearer TOKEN'
  go run . events list --config {{.Config}}

Ctrl-C stops everything and deletes the throwaway database and this config; the folder storage stays.

`))

// waitSources waits until the node captures the demo table and watches
// the folder storage, since rows inserted or files written before then
// would not be seen, and says in the banner what to do once they are if
// either takes too long. It reports false when dev is stopping already.
func (b *devBanner) waitSources(ctx context.Context, schema string) bool {
	b.CaptureLine = "Insert a row into the demo table signups; the receiver gets a DB_INSERT event:"
	if err := waitCapturing(ctx, b.Store, devSlot, 15*time.Second); ctx.Err() != nil {
		return false
	} else if err != nil {
		b.CaptureLine = fmt.Sprintf("Change capture is not running yet (%v; see the log above).\nOnce it is, insert a row into the demo table signups; the receiver gets a DB_INSERT event:", err)
	}
	b.FilesLine = "Write a file into storage, then remove it; the receiver gets a FILE_CREATE event, then a FILE_DELETE:"
	if err := waitWatched(ctx, b.Store, schema, "demo", "uploads", 15*time.Second); ctx.Err() != nil {
		return false
	} else if err != nil {
		b.FilesLine = fmt.Sprintf("The folder storage is not watched yet (%v; see the log above).\nOnce it is, write a file into it, then remove it; the receiver gets a FILE_CREATE event, then a FILE_DELETE:", err)
	}
	return true
}

// print writes the banner of the node listening on addr. A failed write
// stops dev (see stopOnFailedWrite), so its error needs no other handling.
func (b *devBanner) print(w io.Writer, addr string) {
	b.API, b.Queue, b.Admin = addr, "http://"+addr+"/v1/api/demo/event-triggers/queue", "http://"+addr+"/v1/admin"
	b.Console = "http://" + addr + "/mission-control/"
	_ = devBannerText.Execute(w, b)
}

// checkDevListen checks that the API's address can be listened on before
// dev starts anything, and says how to change it: dev writes its config
// itself, so serve's advice to change listen in the config does not apply.
// (Another process may still take the address before the node listens.)
func checkDevListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hint := "pass --listen ADDR with a host:port, such as --listen 127.0.0.1:4123"
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = "another process is using it: pass --listen ADDR with a free port, such as --listen 127.0.0.1:4123"
		}
		return fmt.Errorf("--listen %s: %w (%s)", addr, err, hint)
	}
	return ln.Close()
}

// writeDevConfig writes the dev config, with fresh secrets and a fresh
// admin password, into dir and loads it.
func writeDevConfig(dir, listen, storeURL, receiverURL, storageDir string) (path string, cfg *config.Config, err error) {
	random := make([]byte, 32+16+32)
	if _, err := rand.Read(random); err != nil {
		return "", nil, fmt.Errorf("make secrets: %w", err)
	}
	secret, password, adminSecret := random[:32], random[32:48], random[48:]
	path = filepath.Join(dir, "triggerd.yaml")
	text := fmt.Sprintf(devConfig, listen, storeURL, hex.EncodeToString(secret), receiverURL, storageDir,
		devAdmin, hex.EncodeToString(password), hex.EncodeToString(adminSecret))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return "", nil, fmt.Errorf("write the dev config: %w", err)
	}
	cfg, err = config.Load(path)
	if err != nil {
		return "", nil, err
	}
	return path, cfg, nil
}

// createDevTable creates the demo table in the dev database.
func createDevTable(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to the dev database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, devTable); err != nil {
		return fmt.Errorf("create the demo table signups: %w", err)
	}
	return nil
}

// makeDevStorage makes the folder dev watches in the working directory,
// unless it is there, and returns its absolute path and whether it made it.
func makeDevStorage(name string) (dir string, created bool, err error) {
	dir, err = filepath.Abs(name)
	if err != nil {
		return "", false, fmt.Errorf("find the folder %s: %w", name, err)
	}
	err = os.Mkdir(dir, 0o755)
	if err == nil {
		return dir, true, nil
	}
	if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
		return dir, false, nil
	}
	return "", false, fmt.Errorf("make the folder %s that dev watches: %w (run dev where ./%s can be a folder)", dir, err, name)
}

// waitCapturing waits until a walsender streams the slot: from then on,
// committed rows are captured. (While the slot is being created it is
// active too, held by the session creating it.)
func waitCapturing(ctx context.Context, url, slot string, within time.Duration) error {
	return waitDevDB(ctx, url, within, "slot "+slot+" not streamed", func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		return cdc.Streaming(ctx, conn, slot)
	})
}

// waitWatched waits until a node holds the lock of a watched folder: it
// watches the folder, or is comparing it with the index, which finds what
// is written meanwhile.
func waitWatched(ctx context.Context, url, schema, project, alias string, within time.Duration) error {
	return waitDevDB(ctx, url, within, "storage "+alias+" not watched", func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		return filewatch.Watched(ctx, conn, schema, project, alias)
	})
}

// waitDevDB polls the dev database until done says so, and fails saying
// notYet when it does not within the time given.
func waitDevDB(ctx context.Context, url string, within time.Duration, notYet string, done func(context.Context, *pgx.Conn) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to the dev database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		ok, err := done(ctx, conn)
		switch {
		case ok:
			return nil
		case ctx.Err() != nil: // the time is up, perhaps mid-query
			return fmt.Errorf("%s within %s", notYet, within)
		case err != nil:
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// newReceiver is the server of dev's webhook, which prints the deliveries
// of node (of any node, when node is "") to out, checking their X-SC-Token
// with keys. Deliveries come from nodes nearby, whole and at once: a
// request that takes longer to send or answer is given up on. Idle
// connections are kept for longer than a node keeps them (90 s), so the
// node closes them first, rather than send a delivery on one the receiver
// is closing.
func newReceiver(out io.Writer, keys *auth.Keyring, node string) *http.Server {
	return &http.Server{
		Handler:           &receiver{out: out, keys: keys, node: node},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// receiver is the dev webhook: it checks X-SC-Token, prints each delivery
// and answers with a response that synchronous callers get back.
type receiver struct {
	out  io.Writer
	keys *auth.Keyring
	node string
	mu   sync.Mutex // one delivery printed at a time
}

// ServeHTTP takes one delivery: it prints it and answers with a response.
func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ev struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	from, tokenErr := rc.verify(r.Header.Get("X-SC-Token"))
	note := "X-SC-Token verified"
	if rc.node == "" && tokenErr == nil {
		note += ", from " + from
	}
	if tokenErr != nil {
		note = "X-SC-Token rejected: " + tokenErr.Error()
	}
	rc.mu.Lock()
	fmt.Fprintf(rc.out, "receiver: %s %s (%s)\n  data: %s\n", ev.Type, ev.ID, note, ev.Data)
	rc.mu.Unlock()
	if tokenErr != nil {
		http.Error(w, note, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"response": map[string]any{
		"received": ev.ID, "at": time.Now().UTC().Format(time.RFC3339Nano)}})
}

// verify checks a delivery's X-SC-Token the way any receiver would: signed
// with the project's secret, not expired, and naming the sending node (rc's,
// when it has one). It returns the node the token names.
func (rc *receiver) verify(token string) (node string, err error) {
	claims, err := rc.keys.VerifyDelivery(token)
	if err != nil {
		return "", err
	}
	node = fmt.Sprint(claims["id"])
	if rc.node != "" && node != rc.node {
		return "", fmt.Errorf("token names node %s, not %s", node, rc.node)
	}
	return node, nil
}
