package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
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
	// Fresh says that no earlier run of the source handed the change out,
	// so none of its rows can be logged yet: Ingest delivers those whose
	// lanes have room first, and logs each with its first outcome.
	Fresh bool
}

// Ingest stages changes, in parts while their lanes are full (see
// roomWait), and returns what tells when all their rows are logged. The
// rows of Fresh changes that are due now and whose lanes have room are
// attempted at once and logged with their first attempt
// (store.RecordFirst): one write instead of an insert and an update.
// The other rows are committed before Ingest returns, skipping those an
// earlier run logged, and those due now are handed to their lanes. No
// write waits for the store's disk: the source confirms the changes to its
// origin once Logged is complete and after Durable, and replays them
// otherwise.
//
// stream reports whether the source still streams the changes: a row is
// attempted before it is logged only while it does, so that a node held up
// past its source's lock does not deliver a row that the node streaming
// the source now delivers too.
func (d *Dispatcher) Ingest(ctx context.Context, changes []Change, stream func() bool) (*Logged, error) {
	return d.ingest(ctx, changes, func(ctx context.Context, rows []store.EventLog) (map[uuid.UUID]bool, error) {
		if len(rows) == 0 {
			return nil, nil
		}
		return d.store.InsertOnce(ctx, rows)
	}, sourceDB, stream)
}

// Durable returns once every change Ingest committed is on disk.
func (d *Dispatcher) Durable(ctx context.Context) error {
	return d.store.Durable(ctx)
}

// A Write commits the rows of a source's changes, in one transaction with
// what the source keeps beside them (such as the index of a watched
// directory), and returns the ids of the rows it inserted, once committed.
// It may leave rows out, such as those of changes the source logged
// before; a row left out is not delivered.
type Write func(ctx context.Context, rows []store.EventLog) (inserted map[uuid.UUID]bool, err error)

// IngestWith stages changes like Ingest, but has write commit their rows:
// one row per trigger of each change, in the order of changes and of their
// Triggers. write is called even when there are no rows.
// Changes are never delivered before they are logged here.
func (d *Dispatcher) IngestWith(ctx context.Context, changes []Change, write Write) error {
	_, err := d.ingest(ctx, changes, write, sourceFile, nil)
	return err
}

// ingest is IngestWith, counting the rows written as source's. Changes
// from a database are staged in parts that fit in their lanes, each once
// they have room (see roomWait); with stream, their Fresh rows are
// delivered first (see Ingest).
func (d *Dispatcher) ingest(ctx context.Context, changes []Change, write Write, source string, stream func() bool) (*Logged, error) {
	live, done := d.intake.enter()
	defer done()
	if !live || source != sourceDB {
		return nil, d.stage(ctx, changes, write, source, live, nil)
	}
	logged := newLogged(stream)
	for len(changes) > 0 {
		n := d.waitRoom(ctx, changes)
		if err := d.stage(ctx, changes[:n], write, source, live, logged); err != nil {
			return logged.started(), err // rows of earlier parts may be in flight
		}
		changes = changes[n:]
	}
	return logged.started(), nil
}

// Rows staged while their lane has room are claimed as they are inserted;
// rows staged while it is full are claimed later by a poll, which writes
// each row once more. So changes from a database, which wait in the
// replication stream at no cost, are staged in parts of at most half a
// lane's places, each once its lanes have room: for at most roomWait in
// all (Options.RoomWait), and not past two fifths of it in which a lane
// freed no place. A lane that had no room in time is behind (its webhook
// is slower than the changes come): it is not waited for again until it
// has drained to half its places, so that a slow webhook never sets the
// pace of capture for the other triggers; its rows are staged free
// meanwhile, for polls.
const roomWait = 250 * time.Millisecond

// waitRoom returns how many of changes, from the first (at least one),
// fit in the places of the lanes they go to that are not behind, after
// waiting for those lanes to have room for them (see roomWait).
func (d *Dispatcher) waitRoom(ctx context.Context, changes []Change) int {
	need := make(map[*lane]int)
	waited := func(l *lane) bool {
		if l.behind.Load() && l.places.drained() {
			l.behind.Store(false)
		}
		return !l.behind.Load()
	}
	n := 0
	for ; n < len(changes); n++ {
		c := &changes[n]
		p := (*d.routes.Load())[c.Project]
		if p == nil || c.FireAt.After(time.Now()) {
			break // changeRows refuses it, or it is not due: no lane holds it now
		}
		over := false
		for _, name := range c.Triggers {
			if l := p.byName[name]; l != nil && waited(l) && need[l]+1 > max(l.places.size()/2, 1) {
				over = true
			}
		}
		if over && n > 0 {
			break
		}
		for _, name := range c.Triggers {
			if l := p.byName[name]; l != nil && waited(l) {
				need[l]++
			}
		}
	}
	wait := d.opts.RoomWait
	deadline := time.Now().Add(wait)
	for l, k := range need {
		if !l.places.awaitRoom(ctx, d.crew.soft, k, wait*2/5, deadline) {
			l.behind.Store(true)
		}
	}
	return max(n, 1)
}

// stage builds the rows of changes, writes them and starts those claimed.
// With logged, the claimed rows of Fresh changes are not written: they
// are delivered first, and logged counts them until they are logged.
func (d *Dispatcher) stage(ctx context.Context, changes []Change, write Write, source string, live bool, logged *Logged) error {
	rows, claimed, err := d.changeRows(changes, live, logged)
	if err != nil {
		return err
	}
	written, err := write(context.WithoutCancel(ctx), rows)
	if err != nil {
		unreserve(claimed)
		return fmt.Errorf("stage %d changes: %w", len(changes), err)
	}
	if written == nil {
		written = map[uuid.UUID]bool{} // for launch, nil would mean every row
	}
	d.opts.Metrics.stagedRows(rows, written, source)
	d.launch(rows, claimed, written)
	return nil
}

// changeRows builds the rows of changes, one per trigger in order, with ids
// derived from their keys. With logged, the claimed rows of Fresh changes
// are left out of rows: their jobs log them (see Ingest).
func (d *Dispatcher) changeRows(changes []Change, live bool, logged *Logged) ([]store.EventLog, []*job, error) {
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
		p := (*d.routes.Load())[c.Project]
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
			if j != nil && c.Fresh && logged != nil {
				j.first = logged.add()
			} else {
				rows = append(rows, row)
			}
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

// Logged tells when the rows that Ingest delivers before it logs them are
// logged: each with its first outcome, or given up (its job ended
// without an outcome, as at a shutdown), and then its change is never
// confirmed by this run. A nil Logged had nothing to deliver first.
type Logged struct {
	stream  func() bool // whether the source still streams the changes
	mu      sync.Mutex
	left    int           // rows delivered first, neither logged nor given up
	open    bool          // Ingest may add rows still
	dropped bool          // a row was given up
	settled chan struct{} // closed once Ingest has returned and left is 0
}

// newLogged returns the Logged of one Ingest, nil without stream.
func newLogged(stream func() bool) *Logged {
	if stream == nil {
		return nil
	}
	return &Logged{stream: stream, open: true, settled: make(chan struct{})}
}

// add counts one more row delivered first, and returns l for its job.
func (l *Logged) add() *Logged {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.left++
	return l
}

// started ends the rows' adding, and returns l, or nil when it has none.
func (l *Logged) started() *Logged {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open = false
	if l.left == 0 {
		close(l.settled)
		if !l.dropped {
			return nil
		}
	}
	return l
}

// finish notes that a row is logged, or given up when !logged.
func (l *Logged) finish(logged bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.left--
	l.dropped = l.dropped || !logged
	if l.left == 0 && !l.open {
		close(l.settled)
	}
}

// Settled is closed once every row is logged or given up.
func (l *Logged) Settled() <-chan struct{} {
	if l == nil {
		done := make(chan struct{})
		close(done)
		return done
	}
	return l.settled
}

// GivenUp reports whether a row was given up, and every other is logged
// or given up: the changes will not be logged by this run.
func (l *Logged) GivenUp() bool {
	if l == nil {
		return false
	}
	settled, dropped := l.state()
	return settled && dropped
}

// Complete reports whether every row is logged: settled, none given up.
func (l *Logged) Complete() bool {
	if l == nil {
		return true
	}
	settled, dropped := l.state()
	return settled && !dropped
}

// state reports whether every row is logged or given up, and whether one
// was given up.
func (l *Logged) state() (settled, dropped bool) {
	select {
	case <-l.settled:
	default:
		return false, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return true, l.dropped
}
