package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// Change is an event from a source that replays what it has not confirmed
// after a crash, such as a database's replication stream.
type Change struct {
	Event
	// Key names the change uniquely and stably: a replay of the change has
	// the same key, hence the same row ids, and the store skips it; its
	// ids sort by Time, to the nanosecond. With Seq set, Key names the
	// change's source instead, and Seq and Sub the change in it.
	Key string
	// Seq and Sub, when Seq is not 0, place the change among its source's,
	// such as a database's commit position and the change's index in its
	// transaction; a replay has the same ones. The ids of one source's
	// changes for one trigger (and their event ids) then sort by Time's
	// millisecond, then by Seq, then by Sub (below 2^32), except once in
	// each 2^42 of Seq, where the order wraps around.
	Seq, Sub uint64
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
func (d *Dispatcher) changeRows(changes []Change, live bool) ([]store.EventLog, []*job, error) {
	now := time.Now()
	n := 0
	for i := range changes {
		n += len(changes[i].Triggers)
	}
	rows := make([]store.EventLog, 0, n)
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
		batch := stableID(c, c.Key)
		for _, name := range c.Triggers {
			l := p.byName[name]
			if l == nil {
				unreserve(claimed)
				return nil, nil, fmt.Errorf("project %s has no trigger %q", c.Project, name)
			}
			row, j := d.newRow(l, stableID(c, c.Key+"\x00"+name), batch, &c.Event, now, live, nil, 0)
			rows = append(rows, row)
			if j != nil {
				claimed = append(claimed, j)
			}
		}
	}
	return rows, claimed, nil
}

// stableID derives the id of change c from key, which is c's Key or that
// and a trigger's name: a UUID of version 8 whose first 48 bits are the
// Unix milliseconds of c's Time, so that ids sort by time like the UUIDv7
// of other events. Its other 74 bits are, without Seq, the nanoseconds
// within the millisecond (20 bits) and a SHA-256 of key; with Seq, the
// sum of Seq·2^32 + Sub and a SHA-256 of key, modulo 2^74.
//
// With Seq, the ids of one key sort by millisecond, then by Seq and Sub;
// those of two keys meet only where, within one millisecond, two changes'
// Seq·2^32 + Sub differ by exactly the difference of the keys' hashes, a
// number of 74 bits: as unlikely as two hashes meeting.
func stableID(c *Change, key string) uuid.UUID {
	sum := sha256.Sum256([]byte(key))
	h := binary.BigEndian.Uint64(sum[:8])
	l := binary.BigEndian.Uint64(sum[8:16])
	var hi, lo uint64 // the 74 bits: hi holds the top 10
	if c.Seq == 0 {
		ns := uint64(c.Time.Nanosecond() % 1e6)
		hi, lo = ns>>10, ns<<54|l>>10
	} else {
		var carry uint64
		lo, carry = bits.Add64(c.Seq<<32, c.Sub, 0)
		hi = c.Seq>>32 + carry
		lo, carry = bits.Add64(lo, l, 0)
		hi += h + carry
	}
	hi &= 1<<10 - 1
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[:8], uint64(c.Time.UnixMilli())<<16|0x8000|hi<<2|lo>>62)
	binary.BigEndian.PutUint64(id[8:], lo&(1<<62-1)|0x8000000000000000) // RFC 4122 variant
	return id
}
