package filewatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// rig is a watched directory, a store and a receiver shared by a test's nodes.
type rig struct {
	t        testing.TB
	dir      string
	storeURL string
	schema   string
	hook     *dispatchtest.Receiver
	conn     *pgx.Conn
	logs     *dispatchtest.Buffer
}

func newRig(t testing.TB) *rig {
	r := &rig{t: t, dir: t.TempDir(), hook: dispatchtest.NewReceiver(t), logs: &dispatchtest.Buffer{}}
	r.storeURL, r.schema = pgtest.Schema(t)
	return r
}

// config renders a config with one project "p" whose storage "up" is the
// rig's directory; triggers are YAML list items, with {hook} standing for
// the receiver's URL; storage holds extra keys of the storage.
func (r *rig) config(nodeID, storage, triggers string) *config.Config {
	r.t.Helper()
	if storage != "" {
		storage = ", " + storage
	}
	return dispatchtest.Config(r.t, nodeID, r.storeURL, r.schema,
		fmt.Sprintf("    storage:\n      up: {path: %q%s}", r.dir, storage), triggers, r.hook.URL)
}

// both is the usual pair of triggers: every create and every delete.
const both = `
- {name: created, type: FILE_CREATE, url: "{hook}/created"}
- {name: deleted, type: FILE_DELETE, url: "{hook}/deleted"}`

// node is a running dispatcher with its file sources.
type node struct {
	run     *dispatchtest.Node
	sources []*filewatch.Source
	stop    func()
}

// start runs a node and waits until it watches, unless standby.
func (r *rig) start(cfg *config.Config, opts filewatch.Options, standby bool) *node {
	t := r.t
	t.Helper()
	run := dispatchtest.Start(t, cfg, dispatch.Options{Poll: 200 * time.Millisecond})
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(r.logs, nil)).With("node", cfg.NodeID)
	}
	sources, err := filewatch.Sources(cfg, run.Dispatcher, run.Store, opts)
	if err != nil {
		t.Fatal(err)
	}
	var all []dispatchtest.Source
	for _, s := range sources {
		all = append(all, s)
	}
	stop, err := run.RunSources(t, all...)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{run: run, sources: sources, stop: stop}
	if !standby {
		n.waitWatching(t)
	}
	return n
}

// waitWatching waits until every source of the node watches.
func (n *node) waitWatching(t testing.TB) {
	t.Helper()
	waittest.For(t, 15*time.Second, func() error {
		for _, s := range n.sources {
			if !s.Watching() {
				return errors.New("the directory is not watched")
			}
		}
		return nil
	})
}

// fileData is a file event's data.
type fileData struct {
	Store string `json:"store"`
	Path  string `json:"path"`
	Type  string `json:"type"`
	Meta  struct {
		Size     int64  `json:"size"`
		Modified string `json:"modified"`
		Mode     string `json:"mode"`
		SHA256   string `json:"sha256"`
	} `json:"meta"`
}

// seen is a delivery in short: "created file a/b.txt".
func seen(rc dispatchtest.Receipt) string {
	var d fileData
	if err := json.Unmarshal(rc.Data, &d); err != nil {
		return "undecodable " + string(rc.Data)
	}
	return strings.TrimPrefix(rc.Path, "/") + " " + d.Type + " " + d.Path
}

// expect waits for exactly want deliveries (in any order) and a quiet
// moment after them, and fails listing the difference.
func (r *rig) expect(want ...string) []dispatchtest.Receipt {
	r.t.Helper()
	_ = waittest.Until(15*time.Second, func() error { // the check below lists the difference
		if n := r.hook.Count(); n < len(want) {
			return fmt.Errorf("%d of %d deliveries", n, len(want))
		}
		return nil
	})
	time.Sleep(600 * time.Millisecond) // more than a settle time, for extras
	got := r.hook.Receipts()
	var have []string
	for _, rc := range got {
		have = append(have, seen(rc))
	}
	slices.Sort(have)
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(have, w) {
		r.t.Fatalf("deliveries:\n  got  %q\n  want %q", have, w)
	}
	return got
}

// reset forgets the deliveries so far.
func (r *rig) reset() {
	r.hook.Reset()
}

// path is the absolute name of a relative path in the directory.
func (r *rig) path(rel string) string { return filepath.Join(r.dir, filepath.FromSlash(rel)) }

// write creates or replaces a file with content in one step.
func (r *rig) write(rel, content string) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Dir(r.path(rel)), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(r.path(rel), []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// must fails the test on err.
func (r *rig) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

// indexed returns the store's index of the directory as "type path size" lines.
func (r *rig) indexed() []string {
	r.t.Helper()
	rows, err := r.db().Query(context.Background(), `SELECT type || ' ' || path || ' ' || size FROM `+pgx.Identifier{r.schema, "file_index"}.Sanitize()+` ORDER BY path`)
	r.must(err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	r.must(err)
	return out
}

// db is a connection to the store, made on first use.
func (r *rig) db() *pgx.Conn {
	r.t.Helper()
	if r.conn == nil {
		c, err := pgx.Connect(context.Background(), r.storeURL)
		r.must(err)
		r.t.Cleanup(func() { c.Close(context.Background()) })
		r.conn = c
	}
	return r.conn
}

// repeatedKeys returns the lines of the node's log that give a key twice,
// with the key.
func (r *rig) repeatedKeys() []string {
	var out []string
	for line := range strings.Lines(r.logs.String()) {
		seen := make(map[string]bool)
		for _, k := range logKeys(line) {
			if seen[k] {
				out = append(out, k+" twice in: "+strings.TrimSpace(line))
			}
			seen[k] = true
		}
	}
	return out
}

// logKeys returns the keys of a line of slog's text format, in order.
func logKeys(line string) []string {
	var keys []string
	for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimLeft(rest, " ") {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		keys = append(keys, k)
		switch q, err := strconv.QuotedPrefix(v); {
		case err == nil:
			rest = v[len(q):]
		case strings.Contains(v, " "):
			rest = v[strings.IndexByte(v, ' '):]
		default:
			rest = ""
		}
	}
	return keys
}
