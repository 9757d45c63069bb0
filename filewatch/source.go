// Package filewatch turns the files and folders of watched directories into
// FILE_CREATE and FILE_DELETE events. It keeps an index of what it has seen
// in the event store: at start-up, after a kernel queue overflow and when a
// folder cannot be watched, it compares the directory with the index, so
// changes made while no node watched are not missed. An index update and the
// events it causes are logged in one transaction, so none is logged twice.
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/supervise"
	"github.com/triggerd/triggerd/store"
)

// Options tunes a Source; zero values take the defaults.
type Options struct {
	// Logger receives the source's logs (default slog.Default()).
	Logger *slog.Logger
	// LockRetry is how often a node waiting for another's directory tries
	// to take it over (default 1s).
	LockRetry time.Duration
	// Rescan is how often a directory is compared with its index while some
	// of its folders cannot be watched (default 10s).
	Rescan time.Duration
	// Batch is the most changes logged in one write (default 1000).
	Batch int
}

// Source watches one storage directory of one project. Create it with New,
// check it with Check, run it with Run.
type Source struct {
	project string
	alias   string
	dir     config.Storage
	// triggers are the project's FILE_* triggers on this directory; each
	// file event reads them anew, and SetTriggers replaces them.
	triggers atomic.Pointer[[]*config.Trigger]
	disp     *dispatch.Dispatcher
	store    *store.Store
	opts     Options
	log      *slog.Logger
	watching atomic.Bool
	// indexed, watches and lastRescan (Unix nanoseconds, 0: none yet)
	// are what State reports of the session watching.
	indexed, watches, lastRescan atomic.Int64
	// rescans and overflows count, since the source was built, the
	// comparisons with the index and the event queues that overflowed.
	rescans, overflows atomic.Int64
}

// New builds the source of the storage alias of project p. The index and
// the lock that lets one node at a time watch the directory are kept in st,
// the dispatcher's store.
func New(p *config.Project, alias string, d *dispatch.Dispatcher, st *store.Store, opts Options) (*Source, error) {
	dir, ok := p.Storage[alias]
	if !ok {
		return nil, fmt.Errorf("project %s has no storage %q", p.ID, alias)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LockRetry <= 0 {
		opts.LockRetry = time.Second
	}
	if opts.Rescan <= 0 {
		opts.Rescan = 10 * time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 1000
	}
	abs, err := filepath.Abs(dir.Path)
	if err != nil {
		return nil, fmt.Errorf("storage %s of project %s: %w", alias, p.ID, err)
	}
	dir.Path = abs
	s := &Source{project: p.ID, alias: alias, dir: dir, disp: d, store: st, opts: opts}
	s.log = opts.Logger.With("project", p.ID, "storage", alias, "path", dir.Path)
	var ts []*config.Trigger
	for i := range p.Triggers {
		ts = append(ts, &p.Triggers[i])
	}
	s.SetTriggers(ts)
	return s, nil
}

// SetTriggers gives the source the project's triggers, of which it takes
// the FILE_* triggers on its directory: the next file event goes to them.
func (s *Source) SetTriggers(ts []*config.Trigger) {
	var mine []*config.Trigger
	for _, t := range ts {
		if config.IsFileType(t.Type) && t.Options.Store == s.alias {
			mine = append(mine, t)
		}
	}
	s.triggers.Store(&mine)
}

// Sources builds a source for every storage directory of every project of cfg.
func Sources(cfg *config.Config, d *dispatch.Dispatcher, st *store.Store, opts Options) ([]*Source, error) {
	var out []*Source
	for i := range cfg.Projects {
		p := &cfg.Projects[i]
		for alias := range p.Storage {
			s, err := New(p, alias, d, st, opts)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// Check returns an error saying what to fix when the directory does not
// exist, is not a directory, or cannot be read.
func (s *Source) Check(ctx context.Context) error {
	fi, err := os.Stat(s.dir.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: %s does not exist: create it, or fix storage.%s.path", s.where(), s.dir.Path, s.alias)
	case err != nil:
		return fmt.Errorf("%s: %w", s.where(), err)
	case !fi.IsDir():
		return fmt.Errorf("%s: %s is not a directory: fix storage.%s.path", s.where(), s.dir.Path, s.alias)
	}
	f, err := os.Open(s.dir.Path)
	if err != nil {
		return fmt.Errorf("%s: %w (triggerd must be able to read the directory)", s.where(), err)
	}
	defer f.Close()
	if _, err := f.ReadDir(1); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: list %s: %w (triggerd must be able to read the directory)", s.where(), s.dir.Path, err)
	}
	return nil
}

// Run watches the directory until ctx ends. A failed write, a lost lock or
// a vanished directory ends the session; the next one compares the
// directory with the index again, after a backoff. Only one node watches a
// directory at a time: the others wait for its lock, and end the session
// of a holder that stopped renewing it for store.FenceAfter (a frozen node).
func (s *Source) Run(ctx context.Context) {
	supervise.Sessions(ctx, s.log, "watching stopped; restarting", s.session)
}

// lock waits until this node holds the directory's lock in the store,
// fencing a holder that stopped renewing it (a frozen node).
func (s *Source) lock(ctx context.Context) (*store.Lock, error) {
	key := lockKey(s.store.Schema(), s.project, s.alias)
	var held *store.Lock
	err := supervise.Standby(ctx, s.log, s.opts.LockRetry,
		"another node watches this directory; standing by to take over", "took over the directory",
		func() (bool, error) {
			l, err := s.store.TryLock(ctx, key)
			if err != nil {
				return false, fmt.Errorf("%s: %w", s.where(), err)
			}
			if l != nil && l.Fenced != nil {
				s.log.Warn("fenced the node watching this directory, which stopped renewing its lock",
					"pid", l.Fenced.PID, "client", l.Fenced.Client, "idle", l.Fenced.Idle)
			}
			held = l
			return l != nil, nil
		})
	return held, err
}

// lockKey names the lock of a project's storage directory in a store
// schema: deployments with their own schemas in one database do not share
// their locks.
func lockKey(schema, project, alias string) string {
	return "triggerd.files." + schema + "." + project + "." + alias
}

// Watched reports whether some node holds the lock of the storage alias of
// project in the store schema, asking the store through db: it watches
// the directory, or is comparing it with the index, which finds what is
// written meanwhile.
func Watched(ctx context.Context, db store.Querier, schema, project, alias string) (bool, error) {
	return store.LockHeld(ctx, db, lockKey(schema, project, alias))
}

// Watching reports whether this node watches the directory now: it holds
// the directory's lock and has compared the directory with the index.
func (s *Source) Watching() bool { return s.watching.Load() }

// where names the source in errors.
func (s *Source) where() string {
	return fmt.Sprintf("storage %s of project %s", s.alias, s.project)
}

// Project is the id of the source's project.
func (s *Source) Project() string { return s.project }

// State is what a node reports of a directory it watches.
type State struct {
	// Watching says this node watches the directory now (Watching).
	Watching bool
	// Indexed is how many files the directory's index holds, and Watches
	// how many folders have a kernel watch, as of the session's last
	// change; LastRescan is when it last compared the directory with the
	// index (zero when no session of this node has yet).
	Indexed, Watches int
	LastRescan       time.Time
	// Rescans counts the comparisons of the directory with its index
	// since the source was built, and Overflows the times an event queue
	// (the kernel's or fsnotify's) overflowed, each followed by a rescan.
	Rescans, Overflows int64
}

// State reports whether the source watches the directory now, and the
// figures of its session.
func (s *Source) State() State {
	st := State{Watching: s.watching.Load(), Indexed: int(s.indexed.Load()), Watches: int(s.watches.Load()),
		Rescans: s.rescans.Load(), Overflows: s.overflows.Load()}
	if ns := s.lastRescan.Load(); ns != 0 {
		st.LastRescan = time.Unix(0, ns)
	}
	return st
}

// Alias is the storage directory's alias in the project's config.
func (s *Source) Alias() string { return s.alias }
