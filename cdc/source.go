// Package cdc captures the row changes of Postgres databases through logical
// replication (the built-in pgoutput plugin) and hands them to the
// dispatcher as DB_INSERT, DB_UPDATE and DB_DELETE events. A change is
// logged in event_logs exactly once: its row ids derive from its commit
// position, and the slot is confirmed only up to what is logged.
package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/supervise"
)

// Options tunes a Source; zero values take the defaults.
type Options struct {
	// StoreSchema is the store's schema: its tables are never captured.
	StoreSchema string
	// Logger receives the source's logs (default slog.Default()).
	Logger *slog.Logger
	// Batch is the most changes logged in one write (default 2000). A
	// transaction larger than this is logged in several writes, and
	// confirmed to the server after the last. After a time with nothing
	// to log, the first write takes firstBatch changes and each next one
	// twice as many, up to Batch: so the first rows of a large
	// transaction are delivered without waiting for Batch of them.
	Batch int
	// Status is how often the logged position is confirmed to the server
	// (default 1s).
	Status time.Duration
	// LockRetry is how often a node waiting for another's slot tries to
	// take it over (default 1s).
	LockRetry time.Duration
	// Refresh, when set, brings the source's triggers up to date with the
	// store's (it calls SetTriggers) before it returns. A session calls it
	// where it must not act on triggers older than a change it has seen:
	// before it changes the publication, and at a TriggersChanged message.
	Refresh func(ctx context.Context) error
}

// Ingester stages a batch of changes: the dispatcher
// (*dispatch.Dispatcher), which skips the rows of changes it logged
// before, and delivers the rows of Fresh changes before it logs them
// while stream reports true. The changes are logged once the Logged it
// returns is complete, and Durable returns once what is logged is on
// disk: only then may the slot be confirmed past them.
type Ingester interface {
	Ingest(ctx context.Context, changes []dispatch.Change, stream func() bool) (*dispatch.Logged, error)
	Durable(ctx context.Context) error
}

// Source streams the changes of one database of one project to a
// dispatcher. Create it with New, check it with Check, run it with Run.
type Source struct {
	project string
	alias   string
	db      config.Database
	disp    Ingester
	opts    Options
	log     *slog.Logger

	mu sync.Mutex
	// triggers are the project's DB_* triggers on this database. A session
	// captures for those it started with (its plan's).
	triggers []*config.Trigger
	// restart ends the session running, for the next one to take the
	// triggers; nil between sessions.
	restart context.CancelCauseFunc

	// streaming says a session streams the slot now; lastChange is the
	// commit time of the last row change received, in Unix nanoseconds
	// (0: none since the node started). State reports them.
	streaming  atomic.Bool
	lastChange atomic.Int64
}

// New builds the source of the database alias of project p.
func New(p *config.Project, alias string, d Ingester, opts Options) (*Source, error) {
	db, ok := p.Databases[alias]
	if !ok {
		return nil, fmt.Errorf("project %s has no database %q", p.ID, alias)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Batch <= 0 {
		opts.Batch = 2000
	}
	if opts.Status <= 0 {
		opts.Status = time.Second
	}
	if opts.LockRetry <= 0 {
		opts.LockRetry = time.Second
	}
	if opts.StoreSchema == "" {
		opts.StoreSchema = "triggerd"
	}
	s := &Source{project: p.ID, alias: alias, db: db, disp: d, opts: opts}
	s.log = opts.Logger.With("project", p.ID, "database", alias, "slot", db.Slot)
	ts := make([]*config.Trigger, len(p.Triggers))
	for i := range p.Triggers {
		ts[i] = &p.Triggers[i]
	}
	s.triggers = s.mine(ts)
	return s, nil
}

// mine returns the DB_* triggers on this database among ts.
func (s *Source) mine(ts []*config.Trigger) []*config.Trigger {
	var out []*config.Trigger
	for _, t := range ts {
		if config.IsChangeType(t.Type) && t.Options.DB == s.alias {
			out = append(out, t)
		}
	}
	return out
}

// SetTriggers gives the source the project's triggers, of which it takes
// the DB_* triggers on its database. When they differ from those of the
// session running, that session ends and the next one starts at once: it
// brings the publication up to date, and resumes from the slot's
// confirmed position with the new triggers (the rows of changes logged
// before are not logged twice).
func (s *Source) SetTriggers(ts []*config.Trigger) {
	mine := s.mine(ts)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sameTriggers(s.triggers, mine) {
		return
	}
	s.triggers = mine
	if s.restart != nil {
		s.restart(errTriggersChanged)
	}
}

// current returns the source's triggers.
func (s *Source) current() []*config.Trigger {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.triggers
}

// refresh brings the triggers up to date (Options.Refresh), and reports
// whether they differ from a plan's.
func (s *Source) refresh(ctx context.Context, pl *plan) (bool, error) {
	if s.opts.Refresh != nil {
		if err := s.opts.Refresh(ctx); err != nil {
			return false, fmt.Errorf("%s: read the triggers: %w", s.where(), err)
		}
	}
	return !sameTriggers(s.current(), pl.triggers), nil
}

// sameTriggers reports whether two lists hold the same triggers, in order.
func sameTriggers(a, b []*config.Trigger) bool {
	return slices.EqualFunc(a, b, func(x, y *config.Trigger) bool { return x.Equal(y) })
}

// errTriggersChanged ends a session whose triggers changed.
var errTriggersChanged = fmt.Errorf("the database's triggers changed: %w", supervise.ErrRestart)

// Sources builds a source for every database of every project of cfg.
func Sources(cfg *config.Config, d Ingester, opts Options) ([]*Source, error) {
	var out []*Source
	for i := range cfg.Projects {
		p := &cfg.Projects[i]
		for alias := range p.Databases {
			s, err := New(p, alias, d, opts)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// Check connects to the database and checks that changes can be captured:
// wal_level, the role's REPLICATION, and every table and column the
// triggers name. Its errors say what to fix.
func (s *Source) Check(ctx context.Context) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = s.inspect(ctx, conn)
	return err
}

// Run streams changes until ctx ends. A lost connection, a restarting
// server or a failed write ends the session; the next one resumes from
// the slot's confirmed position after a backoff. Only one node streams a
// slot at a time: the others wait for its lock, and end the session of a
// holder that stopped renewing it for store.FenceAfter (a frozen node).
func (s *Source) Run(ctx context.Context) {
	supervise.Sessions(ctx, s.log, "change capture stopped; reconnecting", s.session)
}

// errLockLost ends a session whose connection holding the slot's lock broke.
var errLockLost = errors.New("lost the connection that holds the slot's lock")

// where names the source in errors.
func (s *Source) where() string {
	return fmt.Sprintf("database %s of project %s", s.alias, s.project)
}

// Project is the id of the source's project.
func (s *Source) Project() string { return s.project }

// State is what a node reports of a database it streams.
type State struct {
	// Streaming says this node streams the database's slot now.
	Streaming bool
	// LastChange is the commit time of the last row change this node
	// received from the database (of any table published); zero when none
	// has been since it started.
	LastChange time.Time
}

// State reports whether the source streams now, and the last change it saw.
func (s *Source) State() State {
	st := State{Streaming: s.streaming.Load()}
	if ns := s.lastChange.Load(); ns != 0 {
		st.LastChange = time.Unix(0, ns)
	}
	return st
}

// Alias is the database's alias in the project's config.
func (s *Source) Alias() string { return s.alias }
