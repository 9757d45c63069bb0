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
	// confirmed to the server after the last.
	Batch int
	// Status is how often the logged position is confirmed to the server
	// (default 1s).
	Status time.Duration
	// LockRetry is how often a node waiting for another's slot tries to
	// take it over (default 1s).
	LockRetry time.Duration
}

// Ingester stages a batch of changes and returns once they are committed:
// the dispatcher (*dispatch.Dispatcher), which skips the rows of changes
// it logged before. Durable returns once what Ingest committed is on disk:
// only then may the slot be confirmed past it.
type Ingester interface {
	Ingest(ctx context.Context, changes []dispatch.Change) error
	Durable(ctx context.Context) error
}

// Source streams the changes of one database of one project to a
// dispatcher. Create it with New, check it with Check, run it with Run.
type Source struct {
	project  string
	alias    string
	db       config.Database
	triggers []*config.Trigger // the project's DB_* triggers on this database
	disp     Ingester
	opts     Options
	log      *slog.Logger
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
	for i := range p.Triggers {
		t := &p.Triggers[i]
		if config.IsChangeType(t.Type) && t.Options.DB == alias {
			s.triggers = append(s.triggers, t)
		}
	}
	return s, nil
}

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
