package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// Change is an event from a source that replays what it has not confirmed
// after a crash, such as a database's replication stream.
type Change struct {
	Event
	// Key names the change uniquely and stably: a replay of the change has
	// the same key, hence the same row ids, and the store skips it.
	Key string
	// Triggers names the project's triggers that take the change.
	Triggers []string
}

// Ingest stages changes in one write and returns once it is committed, so
// that the source may then confirm them. Rows already logged by an earlier
// run are skipped. Rows due now are handed to their lanes in-process.
func (d *Dispatcher) Ingest(ctx context.Context, changes []Change) error {
	live, done := d.enter()
	defer done()
	rows, claimed, err := d.changeRows(changes, live)
	if err != nil || len(rows) == 0 {
		return err
	}
	written, err := d.store.InsertOnce(context.WithoutCancel(ctx), rows)
	if err != nil {
		unreserve(claimed)
		return fmt.Errorf("stage %d changes: %w", len(changes), err)
	}
	d.launch(rows, claimed, written)
	return nil
}

// FileChange is a change to a watched directory: its index update and the
// event it causes when the index did not know of it.
type FileChange struct {
	Change
	// Index is the change to the directory's index.
	Index store.FileChange
}

// IngestFiles applies changes to the index of the watched directory alias
// of project and stages the events of those that are news to it, in one
// transaction, returning once it is committed. A change already applied
// (after a crash, or seen twice) stages nothing.
func (d *Dispatcher) IngestFiles(ctx context.Context, project, alias string, changes []FileChange) error {
	live, done := d.enter()
	defer done()
	plain := make([]Change, len(changes))
	for i := range changes {
		plain[i] = changes[i].Change
	}
	rows, claimed, err := d.changeRows(plain, live)
	if err != nil {
		return err
	}
	index := make([]store.FileChange, len(changes))
	rest := rows
	for i := range changes {
		index[i] = changes[i].Index
		n := len(plain[i].Triggers)
		index[i].Events, rest = rest[:n:n], rest[n:]
	}
	written, err := d.store.ApplyFiles(context.WithoutCancel(ctx), project, alias, index)
	if err != nil {
		unreserve(claimed)
		return fmt.Errorf("log %d file changes: %w", len(changes), err)
	}
	d.launch(rows, claimed, written)
	return nil
}

// changeRows builds the rows of changes, one per trigger in order, with ids
// derived from their keys.
func (d *Dispatcher) changeRows(changes []Change, live bool) ([]store.Event, []*job, error) {
	now := time.Now()
	n := 0
	for i := range changes {
		n += len(changes[i].Triggers)
	}
	rows := make([]store.Event, 0, n)
	var claimed []*job
	for i := range changes {
		c := &changes[i]
		if len(c.Triggers) == 0 {
			continue
		}
		p := d.projects[c.Project]
		if p == nil {
			unreserve(claimed)
			return nil, nil, fmt.Errorf("%w %q", ErrUnknownProject, c.Project)
		}
		if c.Time.IsZero() {
			c.Time = now
		}
		if c.FireAt.IsZero() {
			c.FireAt = c.Time
		}
		batch := stableID(c.Time, c.Key)
		for _, name := range c.Triggers {
			l := p.byName[name]
			if l == nil {
				unreserve(claimed)
				return nil, nil, fmt.Errorf("project %s has no trigger %q", c.Project, name)
			}
			row, j := d.newRow(l, stableID(c.Time, c.Key+"\x00"+name), batch, &c.Event, now, live, nil, 0)
			rows = append(rows, row)
			if j != nil {
				claimed = append(claimed, j)
			}
		}
	}
	return rows, claimed, nil
}

// stableID derives a UUID from key: version 8, its first 48 bits t's Unix
// milliseconds (so ids sort by time like the UUIDv7 of other events), the
// rest from a SHA-256 of key.
func stableID(t time.Time, key string) uuid.UUID {
	sum := sha256.Sum256([]byte(key))
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[:8], uint64(t.UnixMilli())<<16)
	copy(id[6:], sum[:10])
	id[6] = id[6]&0x0f | 0x80 // version 8
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	return id
}
