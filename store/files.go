package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The types of a FileEntry.
const (
	FileTypeFile = "file"
	FileTypeDir  = "dir"
)

// FileEntry is what the index of a watched directory holds for one path.
type FileEntry struct {
	// Path is relative to the directory, slash-separated.
	Path string
	// Type is FileTypeFile or FileTypeDir.
	Type     string
	Size     int64
	Modified time.Time
}

// IndexChange is a change to one path of a watched directory's index, with
// the event rows it causes.
type IndexChange struct {
	// Entry is the path's new state; only its Path counts when Removed.
	Entry FileEntry
	// Removed says the path is gone.
	Removed bool
	// Events are logged only when the change is news to the index: a path
	// removed that was indexed, or a path put that was not indexed, or was
	// indexed with the other type. Putting a path the index has refreshes
	// its size and time and logs nothing.
	Events []EventLog
}

// ApplyFiles applies changes, in order, to the index of the watched
// directory alias of project, and logs the events of those that are news,
// in the same transaction: a change is logged once however often it is
// applied, and never without its index update. It returns the ids it
// inserted, once committed.
func (s *Store) ApplyFiles(ctx context.Context, project, alias string, changes []IndexChange) (inserted map[uuid.UUID]bool, err error) {
	return s.write(ctx, &writeOp{index: &indexWrite{project: project, alias: alias, changes: changes}})
}

// Files returns the index of the watched directory alias of project, by path.
func (s *Store) Files(ctx context.Context, project, alias string) (map[string]FileEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT path, type, size, modified FROM file_index WHERE project = $1 AND store = $2`, project, alias)
	if err != nil {
		return nil, fmt.Errorf("read the file index of %s/%s: %w", project, alias, err)
	}
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (FileEntry, error) {
		var e FileEntry
		err := r.Scan(&e.Path, &e.Type, &e.Size, &e.Modified)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the file index of %s/%s: %w", project, alias, err)
	}
	out := make(map[string]FileEntry, len(entries))
	for _, e := range entries {
		out[e.Path] = e
	}
	return out, nil
}

// indexWrite is an ApplyFiles call's share of a group commit.
type indexWrite struct {
	project, alias string
	changes        []IndexChange
}

func (w *indexWrite) size() int {
	n := len(w.changes)
	for i := range w.changes {
		n += len(w.changes[i].Events)
	}
	return n
}

// applyFilesSQL applies one round of index changes, each to a distinct path,
// and inserts the events of those that are news. Whether a change is news
// is decided by the row it changes, not by a snapshot: of two transactions
// putting or removing the same path (two nodes for a moment), the second
// waits for the first and then finds nothing to change. The index is read
// by whole key (path = ANY), so that a write costs the same however large
// the directory.
const applyFilesSQL = `
WITH c AS (
    SELECT unnest($14::int[]) AS ord, unnest($15::text[]) AS path, unnest($16::text[]) AS type,
           unnest($17::int8[]) AS size, unnest($18::timestamptz[]) AS modified, unnest($19::bool[]) AS removed),
gone AS (
    DELETE FROM file_index
    WHERE project = $12 AND store = $13 AND path = ANY($21::text[])
    RETURNING path),
added AS (
    INSERT INTO file_index (project, store, path, type, size, modified)
    SELECT $12, $13, path, type, size, modified FROM c WHERE NOT removed
    ON CONFLICT (path, project, store) DO NOTHING
    RETURNING path),
retyped AS (
    UPDATE file_index f SET type = c.type, size = c.size, modified = c.modified
    FROM c
    WHERE f.path = ANY($15::text[]) AND f.project = $12 AND f.store = $13
      AND f.path = c.path AND NOT c.removed AND f.type <> c.type
    RETURNING f.path),
refreshed AS (
    UPDATE file_index f SET size = c.size, modified = c.modified
    FROM c
    WHERE f.path = ANY($15::text[]) AND f.project = $12 AND f.store = $13
      AND f.path = c.path AND NOT c.removed AND f.type = c.type
      AND (f.size, f.modified) IS DISTINCT FROM (c.size, c.modified)),
news AS (
    SELECT c.ord FROM c
    JOIN (SELECT path FROM gone UNION ALL SELECT path FROM added UNION ALL SELECT path FROM retyped) n USING (path))
INSERT INTO event_logs (` + eventColumnList + `)
` + eventSelect + `
FROM (SELECT ` + eventUnnest + `, unnest($20::int[]) AS ord) AS t
WHERE t.ord IN (SELECT ord FROM news)
RETURNING id`

// queue adds the statements of w to b. A path may appear once per
// statement, so the changes are cut into rounds where a path repeats.
func (w *indexWrite) queue(b *pgx.Batch, collect func(pgx.Rows) error) {
	var ev eventColumns
	var evOrd []int32
	var ord []int32
	var path, typ []string
	var size []int64
	var modified []time.Time
	var removed []bool
	var gone []string
	seen := make(map[string]bool)
	send := func() {
		if len(ord) == 0 {
			return
		}
		b.Queue(applyFilesSQL, append(ev.args(), w.project, w.alias, ord, path, typ, size, modified, removed, evOrd, gone)...).Query(collect)
		ev, evOrd, ord, path, typ, size, modified, removed, gone = eventColumns{}, nil, nil, nil, nil, nil, nil, nil, nil
		clear(seen)
	}
	for i := range w.changes {
		c := &w.changes[i]
		if seen[c.Entry.Path] {
			send()
		}
		seen[c.Entry.Path] = true
		n := int32(len(ord))
		ord = append(ord, n)
		path = append(path, c.Entry.Path)
		typ = append(typ, c.Entry.Type)
		size = append(size, c.Entry.Size)
		modified = append(modified, c.Entry.Modified)
		removed = append(removed, c.Removed)
		if c.Removed {
			gone = append(gone, c.Entry.Path)
		}
		for j := range c.Events {
			ev.add(&c.Events[j])
			evOrd = append(evOrd, n)
		}
	}
	send()
}
