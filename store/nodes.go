package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// HeartbeatEvery is how often a node writes its heartbeat; a node whose
// last one is three times as old is taken for dead.
const HeartbeatEvery = 5 * time.Second

// Node is a row of the nodes table: a node sharing this store.
type Node struct {
	ID        string
	Version   string
	StartedAt time.Time
	// Heartbeat is when the node last wrote its row, and Age how long
	// ago that was, both by the store's clock.
	Heartbeat time.Time
	Age       time.Duration
	RowsHeld  int
}

// Heartbeat writes node's row: its version, when it started, and how many
// rows it holds, at the store's now; and, in the same transaction, the
// state of the sources it holds (see Sources).
func (s *Store) Heartbeat(ctx context.Context, node, version string, started time.Time, rowsHeld int, held ...SourceState) error {
	b := &pgx.Batch{}
	b.Queue(`
		INSERT INTO nodes (id, version, started_at, heartbeat_at, rows_held) VALUES ($1, $2, $3, now(), $4)
		ON CONFLICT (id) DO UPDATE SET version = $2, started_at = $3, heartbeat_at = now(), rows_held = $4`,
		node, version, started, rowsHeld)
	queueSources(b, node, held)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", node, err)
	}
	return nil
}

// Nodes lists the nodes that have written a heartbeat, by id.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, version, started_at, heartbeat_at,
		extract(epoch FROM now() - heartbeat_at)::float8, rows_held FROM nodes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Node, error) {
		var n Node
		var age float64
		err := row.Scan(&n.ID, &n.Version, &n.StartedAt, &n.Heartbeat, &age, &n.RowsHeld)
		n.Age = time.Duration(age * float64(time.Second))
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}
