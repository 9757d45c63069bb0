package store

import (
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool is the store's connection pool, for tests' own queries.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// ListEventsSQL is the query ListEvents runs for a page of limit rows, for
// benchmarks to explain.
func (s *Store) ListEventsSQL(q EventQuery, before *uuid.UUID, limit int) (string, []any) {
	return s.listSQL(q, before, limit+1)
}
