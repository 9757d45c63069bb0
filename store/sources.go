package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The kinds of event sources a node reports with its heartbeat.
const (
	SourceDatabase = "database"
	SourceStorage  = "storage"
)

// SourceState is a source as the node holding it reports it with its
// heartbeat: a database it streams, or a storage directory it watches.
type SourceState struct {
	// Kind is SourceDatabase or SourceStorage; Alias is the database's
	// or directory's alias in the project's config.
	Kind, Project, Alias string
	// Node is the node that reported it last, Reported when, by the
	// store's clock, and Age how long ago. Sources sets them.
	Node     string
	Reported time.Time
	Age      time.Duration
	// LastChange, of a database, is the commit time of the last row change
	// its holder received; zero when none has been yet. A report without
	// one keeps the one before, of this node or another.
	LastChange time.Time
	// Of a storage directory: the files in its index, the folders with a
	// kernel watch, and when it was last compared with its index (zero
	// when not yet; a report without one keeps the one before).
	Indexed, Watches int
	LastRescan       time.Time
}

// writeSourcesSQL records that a node holds a source, as of now.
const writeSourcesSQL = `
	INSERT INTO sources (kind, project, alias, node_id, reported_at, last_change_at, files_indexed, watches, last_rescan_at)
	VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8)
	ON CONFLICT (kind, project, alias) DO UPDATE SET node_id = $4, reported_at = now(),
		last_change_at = coalesce(excluded.last_change_at, sources.last_change_at),
		files_indexed = $6, watches = $7,
		last_rescan_at = coalesce(excluded.last_rescan_at, sources.last_rescan_at)`

// queueSources adds the writes of the sources node holds to b.
func queueSources(b *pgx.Batch, node string, held []SourceState) {
	for _, h := range held {
		var indexed, watches any // NULL for a database
		if h.Kind == SourceStorage {
			indexed, watches = h.Indexed, h.Watches
		}
		b.Queue(writeSourcesSQL, h.Kind, h.Project, h.Alias, node, timeOrNull(h.LastChange), indexed, watches, timeOrNull(h.LastRescan))
	}
}

// Sources lists the sources nodes have reported, by kind, project and
// alias. A source whose report is older than three heartbeats is held by
// no live node that says so.
func (s *Store) Sources(ctx context.Context) ([]SourceState, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, project, alias, node_id, reported_at,
		extract(epoch FROM now() - reported_at)::float8, last_change_at, files_indexed, watches, last_rescan_at
		FROM sources ORDER BY kind, project, alias`)
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SourceState, error) {
		var st SourceState
		var age float64
		var lastChange, lastRescan *time.Time
		var indexed, watches *int
		err := row.Scan(&st.Kind, &st.Project, &st.Alias, &st.Node, &st.Reported, &age, &lastChange, &indexed, &watches, &lastRescan)
		st.Age = time.Duration(age * float64(time.Second))
		if lastChange != nil {
			st.LastChange = *lastChange
		}
		if lastRescan != nil {
			st.LastRescan = *lastRescan
		}
		if indexed != nil && watches != nil {
			st.Indexed, st.Watches = *indexed, *watches
		}
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	return out, nil
}
