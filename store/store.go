// Package store keeps event_logs and invocation_logs in Postgres: it applies
// the schema migrations, writes rows in group-committed batches, and hands
// due rows to the nodes that claim them.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Store.
type Options struct {
	// URL is a Postgres connection string.
	URL string
	// Schema holds triggerd's tables; it is created when missing.
	Schema string
	// MaxConns caps the connection pool (default 16).
	MaxConns int32
	// Writers is how many batches may commit at once (default 1: with one
	// writer, batches are larger, and Postgres's cost is mostly per commit).
	Writers int
	// MaxBatch caps the rows written by one commit (default 1000).
	MaxBatch int
	// ListScan caps the rows of event_logs a page of ListEvents reads
	// when no index serves its filter (default 20,000).
	ListScan int
	// Metrics, when set, gets the store's series: the writer's batch
	// sizes and commit latency, and the rows staged and due.
	Metrics prometheus.Registerer
}

// Store is a connection to the eventing database. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	schema  string
	channel string
	where   string // the server, for error messages (no password)

	mu       sync.RWMutex // guards closed against writes racing Close
	closed   bool
	ops      chan *writeOp
	maxBatch int
	listScan int            // see Options.ListScan
	metrics  *writerMetrics // nil: not measured
	stop     context.CancelFunc
	writers  sync.WaitGroup

	changed    chan []uuid.UUID // ids to announce to followers
	stopNotify context.CancelFunc
	notifier   sync.WaitGroup
}

// Open connects to the store database and starts its batch writers. It
// fails with an error naming the server when Postgres cannot be reached.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Schema == "" {
		opts.Schema = "triggerd"
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = 16
	}
	if opts.Writers == 0 {
		opts.Writers = 1
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 1000
	}
	if opts.ListScan == 0 {
		opts.ListScan = 20_000
	}
	pc, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("store url: %w (write it as postgres://user:password@host:5432/database)", err)
	}
	pc.MaxConns = opts.MaxConns
	pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = "triggerd"
	}
	where := describe(pc.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", where, err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store %s is unreachable: %w (check store.url and that the server is running)", where, err)
	}
	wctx, stop := context.WithCancel(context.Background())
	s := &Store{
		pool:     pool,
		schema:   opts.Schema,
		channel:  "triggerd_" + opts.Schema,
		where:    where,
		ops:      make(chan *writeOp, 4*opts.MaxBatch),
		maxBatch: opts.MaxBatch,
		listScan: opts.ListScan,
		stop:     stop,
		changed:  make(chan []uuid.UUID, 1024),
	}
	if opts.Metrics != nil {
		s.registerMetrics(opts.Metrics)
	}
	nctx, stopNotify := context.WithCancel(context.Background())
	s.stopNotify = stopNotify
	s.notifier.Go(func() { s.notifyLoop(nctx) })
	for range opts.Writers {
		s.writers.Add(1)
		go func() {
			defer s.writers.Done()
			s.writeLoop(wctx)
		}()
	}
	return s, nil
}

// Close finishes the writes already queued, stops the writers and closes
// the connections.
func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.writers.Wait()
	s.stopNotify()
	s.notifier.Wait()
	s.pool.Close()
}

// Querier runs a query returning one row: a connection, a pool or a
// transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Schema is the name of the schema holding the tables.
func (s *Store) Schema() string { return s.schema }

// Ready reports whether the store answers and its schema is up to date.
func (s *Store) Ready(ctx context.Context) error {
	v, err := s.version(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("store %s: %w", s.where, err)
	}
	if want := latestVersion(); v != want {
		return fmt.Errorf("store %s: schema is at version %d, want %d", s.where, v, want)
	}
	return nil
}

// describe names a server without its password, for error messages.
func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// errClosed is returned for writes queued after Close.
var errClosed = errors.New("store is closed")
