package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/dispatch/supervise"
	"github.com/triggerd/triggerd/store"
)

// item is what the reader hands the consumer: a message at its WAL
// position, or (msg nil) a keepalive with the position sent so far.
type item struct {
	msg pglogrepl.Message
	lsn pglogrepl.LSN
}

// sharedConn is the session's plain connection, which holds the slot's
// lock and serves the consumer's catalog lookups and the heartbeat.
type sharedConn struct {
	mu   sync.Mutex
	conn *pgx.Conn
	// renewed is when the heartbeat last renewed the lock (Unix ns).
	renewed atomic.Int64
}

// holds reports whether the session still holds the slot's lock, with
// time to spare: renewed within half of store.FenceAfter, after which a
// standby may fence it.
func (c *sharedConn) holds() bool {
	return time.Since(time.Unix(0, c.renewed.Load())) < store.FenceAfter/2
}

// session takes the slot's lock, brings the publication and slot up to
// date, and streams until ctx ends or something breaks.
func (s *Source) session(outer context.Context) (err error) {
	// SetTriggers ends the session through ctx when the triggers change.
	ctx, restart := context.WithCancelCause(outer)
	defer restart(nil)
	s.mu.Lock()
	s.restart = restart
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.restart = nil
		s.mu.Unlock()
		if outer.Err() == nil && errors.Is(context.Cause(ctx), errTriggersChanged) {
			err = errTriggersChanged
		}
	}()
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := s.lock(ctx, conn); err != nil {
		return err
	}
	pl, err := s.inspect(ctx, conn)
	if err != nil {
		return err
	}
	if err := s.prepare(ctx, conn, pl); err != nil {
		return err
	}
	if err := s.endStaleStream(ctx, conn); err != nil {
		return err
	}
	// No earlier session can have streamed a transaction that commits
	// after this point: its changes are fresh (see dispatch.Change).
	var fresh pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()`).Scan(&fresh); err != nil {
		return fmt.Errorf("%s: read the server's WAL position: %w", s.where(), err)
	}

	rconn, err := s.startStream(ctx)
	if err != nil {
		return err
	}
	defer rconn.Close(context.WithoutCancel(ctx))
	s.log.Info("capturing changes", "publication", s.db.Publication, "tables", len(pl.tables))
	s.streaming.Store(true)
	defer s.streaming.Store(false)

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	shared := &sharedConn{conn: conn}
	shared.renewed.Store(time.Now().UnixNano())
	items := make(chan item, 4096)
	prog := &progress{}
	var wg sync.WaitGroup
	wg.Go(func() { cancel(s.read(sctx, rconn, items, prog)) })
	wg.Go(func() { cancel(s.heartbeat(sctx, shared)) })
	c := newConsumer(s, pl, shared, prog)
	c.fresh = fresh
	c.stream = func() bool { return sctx.Err() == nil && shared.holds() }
	err = c.run(sctx, items)
	cancel(err)
	wg.Wait()
	prog.background.Wait()
	// Rows delivered before they were logged are given up or logged
	// before the next session may stream them again (unless the node
	// stops), and what is logged is confirmed.
	prog.settle(outer)
	// Tell the server what is logged before leaving, so a successor
	// replays as little as possible.
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = prog.confirmable(dctx, s.disp) // else the position confirmed before
	dcancel()
	_ = pglogrepl.SendStandbyStatusUpdate(ctx, rconn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pglogrepl.LSN(prog.confirmed.Load())})
	if cause := context.Cause(sctx); ctx.Err() == nil && cause != nil {
		return cause
	}
	return nil
}

// startStream opens a replication connection and starts streaming the
// slot from its confirmed position.
func (s *Source) startStream(ctx context.Context) (*pgconn.PgConn, error) {
	rcfg, err := pgconn.ParseConfig(s.db.URL)
	if err != nil {
		return nil, fmt.Errorf("%s: url: %w", s.where(), err)
	}
	// Values arrive as text in the walsender's formats: fix them.
	for k, v := range map[string]string{
		"replication": "database", "application_name": "triggerd-cdc", "DateStyle": "ISO",
		"TimeZone": "UTC", "IntervalStyle": "postgres", "extra_float_digits": "3", "bytea_output": "hex",
	} {
		rcfg.RuntimeParams[k] = v
	}
	if rcfg.ConnectTimeout == 0 {
		rcfg.ConnectTimeout = 10 * time.Second
	}
	rconn, err := pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("%s: open a replication connection: %w", s.where(), err)
	}
	args := []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", s.db.Publication), "messages 'true'"}
	if err := pglogrepl.StartReplication(ctx, rconn, s.db.Slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		rconn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%s: start streaming slot %s: %w", s.where(), s.db.Slot, err)
	}
	return rconn, nil
}

// lock waits until this node holds the slot's advisory lock on conn,
// fencing a holder that stopped renewing it (a frozen node). The lock
// lasts as long as the connection: a dead node's is released with it.
func (s *Source) lock(ctx context.Context, conn *pgx.Conn) error {
	key := "triggerd.cdc." + s.db.Slot
	return supervise.Standby(ctx, s.log, s.opts.LockRetry,
		"another node streams this slot; standing by to take over", "took over the slot",
		func() (bool, error) {
			got, fenced, err := store.TakeLock(ctx, conn, key)
			if err != nil {
				return false, fmt.Errorf("%s: take the slot's lock: %w", s.where(), err)
			}
			if fenced != nil {
				s.log.Warn("fenced the node streaming this slot, which stopped renewing its lock",
					"pid", fenced.PID, "client", fenced.Client, "idle", fenced.Idle)
			}
			return got, nil
		})
}

// endStaleStream ends a walsender that still streams the slot, and waits
// for it to exit: it serves a node that no longer holds the slot's lock
// (fenced while frozen, or its lock's connection broke), which therefore
// stops without confirming anything more, and it would keep this node from
// streaming until wal_sender_timeout.
func (s *Source) endStaleStream(ctx context.Context, conn *pgx.Conn) error {
	pid, err := endStream(ctx, conn, s.db.Slot)
	if err != nil {
		return fmt.Errorf("%s: end the stream of slot %s of a node that lost its lock: %w", s.where(), s.db.Slot, err)
	}
	if pid != 0 {
		s.log.Warn("ended the stream of this slot of a node that lost its lock", "pid", pid)
	}
	return nil
}

// endStream ends the session streaming slot, if any, and waits up to 5 s
// for it to exit; it returns the pid it ended (0: none streamed). The
// signal is repeated: a walsender whose client is frozen and has stopped
// reading blocks on sending its farewell, and exits only on a second
// signal.
func endStream(ctx context.Context, conn *pgx.Conn, slot string) (uint32, error) {
	var first uint32
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pid uint32
		err := conn.QueryRow(ctx, `SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot).Scan(&pid, nil)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return first, nil
		case err != nil:
			return first, fmt.Errorf("%w (ending another session takes the same role, or a role granted pg_signal_backend)", err)
		case first == 0:
			first = pid
		case time.Now().After(deadline):
			return first, fmt.Errorf("the walsender streaming slot %s (pid %d) has not exited 5s after it was told to", slot, pid)
		}
		select {
		case <-ctx.Done():
			return first, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// heartbeat keeps the slot's lock: it queries the connection holding it
// every store.RenewEvery, which shows standbys that this node is live (they
// fence a holder idle for store.FenceAfter), and writes a logical message
// every heartbeat period, so that the slot has a position to confirm even
// when no captured table changes. It ends the session when the connection
// breaks, or when this node went longer than store.FenceAfter without
// renewing (it was frozen, or cut off): a standby may have taken over.
func (s *Source) heartbeat(ctx context.Context, shared *sharedConn) error {
	renew := time.NewTicker(store.RenewEvery)
	defer renew.Stop()
	beat := time.NewTicker(s.db.Heartbeat.Std())
	defer beat.Stop()
	renewed := time.Now()
	for {
		emit := false
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
		case <-beat.C:
			emit = true
		}
		if since := time.Since(renewed); since > store.FenceAfter {
			return fmt.Errorf("%s: the slot's lock was not renewed for %s, so another node may have taken it (%w)", s.where(), since.Round(time.Millisecond), errLockLost)
		}
		qctx, cancel := context.WithTimeout(ctx, store.FenceAfter)
		shared.mu.Lock()
		var err error
		if emit {
			_, err = shared.conn.Exec(qctx, `SELECT pg_logical_emit_message(false, 'triggerd.heartbeat', '')`)
		} else {
			err = shared.conn.Ping(qctx)
		}
		shared.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: heartbeat: %w (%w)", s.where(), err, errLockLost)
		}
		renewed = time.Now()
		shared.renewed.Store(renewed.UnixNano())
	}
}

// read receives the stream and hands its messages to the consumer in
// order until ctx ends or the stream breaks, confirming the logged
// position to the server every Status period and whenever the server
// asks. It owns the replication connection.
func (s *Source) read(ctx context.Context, rconn *pgconn.PgConn, out chan<- item, prog *progress) error {
	r := &reader{s: s, conn: rconn, out: out, prog: prog, next: time.Now().Add(s.opts.Status)}
	// One deadline serves every receive until the next confirmation is due.
	deadline := &deadlineCtx{parent: ctx}
	defer deadline.stop()
	for {
		if !time.Now().Before(r.next) {
			if err := r.confirm(ctx); err != nil {
				return err
			}
		}
		raw, err := rconn.ReceiveMessage(deadline.until(r.next))
		switch {
		case ctx.Err() != nil:
			return nil
		case pgconn.Timeout(err):
			continue
		case err != nil:
			return fmt.Errorf("%s: receive: %w", s.where(), err)
		}
		it, ok, err := r.decode(raw)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := r.send(ctx, it); err != nil {
			return err
		}
	}
}

// reader is the state of read.
type reader struct {
	s    *Source
	conn *pgconn.PgConn
	out  chan<- item
	prog *progress // what the consumer has logged, and what is confirmed
	next time.Time // when the next confirmation is due
}

// decode turns a message of the stream into an item for the consumer; ok
// is false for a message that carries none. A keepalive asking for a reply
// makes the next confirmation due now.
func (r *reader) decode(raw pgproto3.BackendMessage) (it item, ok bool, err error) {
	switch m := raw.(type) {
	case *pgproto3.ErrorResponse:
		return item{}, false, fmt.Errorf("%s: %w", r.s.where(), pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		return item{}, false, fmt.Errorf("%s: the server ended the stream", r.s.where())
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return item{}, false, nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return item{}, false, fmt.Errorf("%s: %w", r.s.where(), err)
			}
			if ka.ReplyRequested {
				r.next = time.Now()
			}
			return item{lsn: ka.ServerWALEnd}, true, nil
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return item{}, false, fmt.Errorf("%s: %w", r.s.where(), err)
			}
			// The receive buffer is reused: the message keeps a copy.
			msg, err := pglogrepl.Parse(bytes.Clone(x.WALData))
			if err != nil {
				return item{}, false, fmt.Errorf("%s: decode message at %s: %w", r.s.where(), x.WALStart, err)
			}
			return item{msg: msg, lsn: x.WALStart}, true, nil
		}
	}
	return item{}, false, nil
}

// send hands it to the consumer. While the consumer is busy, it confirms
// the position whenever that is due, so that the server keeps the stream.
func (r *reader) send(ctx context.Context, it item) error {
	select {
	case r.out <- it:
		return nil
	default:
	}
	for {
		t := time.NewTimer(time.Until(r.next))
		select {
		case r.out <- it:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
			if err := r.confirm(ctx); err != nil {
				return err
			}
		}
	}
}

// confirm tells the server the position the consumer has logged and the
// store has on disk, as last found (see progress.confirmBehind), and makes
// the next confirmation due a Status period from now.
func (r *reader) confirm(ctx context.Context) error {
	r.next = time.Now().Add(r.s.opts.Status)
	if err := r.prog.confirmBehind(ctx, r.s.disp); err != nil {
		return fmt.Errorf("%s: %w", r.s.where(), err)
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pglogrepl.LSN(r.prog.confirmed.Load())})
	if err != nil {
		return fmt.Errorf("%s: confirm position: %w", r.s.where(), err)
	}
	return nil
}

// deadlineCtx hands out a context ending at a deadline, made anew only
// when the deadline moves.
type deadlineCtx struct {
	parent context.Context
	ctx    context.Context
	at     time.Time
	cancel context.CancelFunc
}

// until returns a context of parent that ends at t.
func (d *deadlineCtx) until(t time.Time) context.Context {
	if d.ctx == nil || !d.at.Equal(t) {
		d.stop()
		d.ctx, d.cancel = context.WithDeadline(d.parent, t)
		d.at = t
	}
	return d.ctx
}

// stop releases the current context.
func (d *deadlineCtx) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

// consumer turns the stream's messages into changes, logs them in batches,
// and advances the confirmed position past what is logged.
type consumer struct {
	s      *Source
	plan   *plan
	shared *sharedConn
	enc    *valueEncoder
	rels   map[uint32]*relation
	prog   *progress

	tx      *txn // the transaction being received; nil between transactions
	pos     int  // the next change's position in tx
	pending []dispatch.Change
	ended   pglogrepl.LSN // every change before it has been received
	// limit is how many pending changes make a write (see Options.Batch).
	limit int
	// fresh: transactions that commit after it were never streamed
	// before; stream reports whether the session still streams (see
	// Ingester). Without stream, nothing is delivered before it is logged.
	fresh  pglogrepl.LSN
	stream func() bool
}

// firstBatch is how many changes the first write after an idle time
// logs, at most (see Options.Batch).
const firstBatch = 64

// newConsumer makes the consumer of a session of s: it looks up relations
// on shared and notes what it has logged in prog.
func newConsumer(s *Source, pl *plan, shared *sharedConn, prog *progress) *consumer {
	c := &consumer{s: s, plan: pl, shared: shared, enc: newValueEncoder(), rels: make(map[uint32]*relation), prog: prog}
	c.startSmall()
	return c
}

// startSmall makes the next write small again, after an idle time.
func (c *consumer) startSmall() { c.limit = min(firstBatch, c.s.opts.Batch) }

// run consumes items until ctx ends or a write fails.
func (c *consumer) run(ctx context.Context, items <-chan item) error {
	for {
		var it item
		select {
		case <-ctx.Done():
			return nil
		case it = <-items:
		}
		if err := c.handle(ctx, it, len(items) == 0); err != nil {
			return err
		}
	}
}

// handle consumes one item; idle says no other item is waiting.
func (c *consumer) handle(ctx context.Context, it item, idle bool) error {
	switch m := it.msg.(type) {
	case nil: // keepalive: everything before it.lsn has been sent
		if c.tx == nil {
			return c.reached(ctx, it.lsn, idle)
		}
	case *pglogrepl.RelationMessage:
		pk, err := c.primaryKey(ctx, m.RelationID)
		if err != nil {
			return err
		}
		if err := c.learnTypes(ctx, m); err != nil {
			return err
		}
		c.rels[m.RelationID] = newRelation(c.s, c.plan, m, pk)
	case *pglogrepl.BeginMessage:
		c.tx = &txn{xid: m.Xid, commit: m.CommitTime, lsn: m.FinalLSN}
		c.pos = 0
	case *pglogrepl.InsertMessage:
		return c.add(ctx, m.RelationID, &change{typ: config.TypeInsert, lsn: it.lsn, newRow: m.Tuple})
	case *pglogrepl.UpdateMessage:
		return c.add(ctx, m.RelationID, &change{typ: config.TypeUpdate, lsn: it.lsn, newRow: m.NewTuple,
			oldRow: m.OldTuple, oldFull: m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld})
	case *pglogrepl.DeleteMessage:
		return c.add(ctx, m.RelationID, &change{typ: config.TypeDelete, lsn: it.lsn,
			oldRow: m.OldTuple, oldFull: m.OldTupleType == pglogrepl.DeleteMessageTupleTypeOld})
	case *pglogrepl.CommitMessage:
		if c.pos > 0 { // the transaction changed rows
			c.s.lastChange.Store(c.tx.commit.UnixNano())
		}
		c.tx = nil
		return c.reached(ctx, m.TransactionEndLSN, idle)
	case *pglogrepl.LogicalDecodingMessage:
		if m.Prefix == changedPrefix {
			// Publish wrote it after a change of the triggers: changes
			// after it go to the triggers as they are now.
			changed, err := c.s.refresh(ctx, c.plan)
			switch {
			case err != nil:
				return err
			case changed:
				return errTriggersChanged
			}
		}
		if !m.Transactional && c.tx == nil {
			return c.reached(ctx, m.LSN, idle)
		}
	}
	return nil
}

// reached notes that every change before lsn has been received, and logs
// what is pending when nothing else is waiting or the batch is full: so a
// backlog of small transactions and keepalives is logged in few writes.
func (c *consumer) reached(ctx context.Context, lsn pglogrepl.LSN, idle bool) error {
	c.ended = max(c.ended, lsn)
	switch {
	case idle:
		c.startSmall()
		return c.flush(ctx, c.ended)
	case len(c.pending) >= c.limit:
		return c.flushFull(ctx)
	}
	return nil
}

// add turns a row change into an event for the triggers that take it, and
// logs a batch once it is full.
func (c *consumer) add(ctx context.Context, relID uint32, ch *change) error {
	if c.tx == nil {
		return fmt.Errorf("%s: a row change arrived outside a transaction", c.s.where())
	}
	pos := c.pos
	c.pos++
	r := c.rels[relID]
	if r == nil {
		return fmt.Errorf("%s: a row change of relation %d arrived before its description", c.s.where(), relID)
	}
	fire := r.fire(ch)
	if len(fire) == 0 {
		return nil
	}
	c.pending = append(c.pending, dispatch.Change{
		Event: dispatch.Event{
			Project: c.s.project,
			Type:    ch.typ,
			Data:    r.appendData(nil, c.enc, ch, c.tx),
			Time:    c.tx.commit,
		},
		Key:      c.s.project + "\x00" + c.s.alias, // ids from the commit's position and the change's in it
		Seq:      uint64(c.tx.lsn),
		Sub:      uint64(pos),
		Triggers: fire,
		Fresh:    c.tx.lsn > c.fresh,
	})
	if len(c.pending) >= c.limit {
		return c.flushFull(ctx)
	}
	return nil
}

// flushFull logs the pending changes, which reached the limit, and
// doubles the limit for the next write, up to Options.Batch.
func (c *consumer) flushFull(ctx context.Context) error {
	c.limit = min(2*c.limit, c.s.opts.Batch)
	return c.flush(ctx, c.ended)
}

// flush logs the pending changes, then notes the position upto as logged:
// the end of the last transaction whose changes are all logged, or a later
// point known to hold no change.
func (c *consumer) flush(ctx context.Context, upto pglogrepl.LSN) error {
	wrote := len(c.pending) > 0
	var logged *dispatch.Logged
	if wrote {
		var err error
		logged, err = c.s.disp.Ingest(ctx, c.pending, c.stream)
		if err != nil {
			c.prog.inflight(logged)
			return fmt.Errorf("%s: log %d changes: %w", c.s.where(), len(c.pending), err)
		}
		clear(c.pending)
		c.pending = c.pending[:0]
	}
	c.prog.logged(uint64(upto), wrote, logged)
	return nil
}

// progress is how far a session has logged its stream, and how far it has
// confirmed it. The consumer notes what it hands the dispatcher; the
// reader confirms, and once the reader has ended, the session's end does.
type progress struct {
	mu     sync.Mutex
	upto   uint64 // every change before it is logged, maybe not yet on disk
	writes uint64 // the writes that logged changes, so far
	// ahead are the positions whose changes were handed over but are not
	// all logged yet (rows delivered before they are logged), in order.
	ahead []waypoint

	failed error // the error a confirmation in the background ended with

	confirming sync.Mutex    // held by the one confirming
	durable    uint64        // writes known to be on disk; the confirming one's
	confirmed  atomic.Uint64 // the position last confirmable
	// background runs confirmations away from the stream's reader;
	// backgroundBusy says one runs.
	background     sync.WaitGroup
	backgroundBusy atomic.Bool
}

// waypoint is a position that is logged once logged is complete.
type waypoint struct {
	upto   uint64
	wrote  bool
	logged *dispatch.Logged
}

// logged notes that every change before upto is handed over, by a write
// when wrote, and logged once logged is complete.
func (p *progress) logged(upto uint64, wrote bool, logged *dispatch.Logged) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if logged == nil && len(p.ahead) > 0 && p.ahead[len(p.ahead)-1].logged == nil {
		last := &p.ahead[len(p.ahead)-1] // a keepalive's position after another's
		last.upto, last.wrote = max(last.upto, upto), last.wrote || wrote
		return
	}
	p.ahead = append(p.ahead, waypoint{upto: upto, wrote: wrote, logged: logged})
	_ = p.advance() // confirmable reports a row given up
}

// inflight notes rows delivered first by a write that failed: they are
// waited for at the session's end, and never confirmed.
func (p *progress) inflight(logged *dispatch.Logged) {
	if logged == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ahead = append(p.ahead, waypoint{logged: logged, wrote: true})
}

// errGivenUp ends a session that gave up a row it delivered before
// logging it: the next session streams the row's change again.
var errGivenUp = errors.New("a row delivered before it was logged could not be logged; streaming its change again")

// advance moves upto past the waypoints whose changes are all logged,
// stopping at the first that is not; an error says that one never will
// be. p.mu must be held.
func (p *progress) advance() error {
	n := 0
	var err error
	for _, w := range p.ahead {
		if w.logged.GivenUp() {
			err = errGivenUp
		}
		if !w.logged.Complete() {
			break
		}
		p.upto = max(p.upto, w.upto)
		if w.wrote {
			p.writes++
		}
		n++
	}
	p.ahead = p.ahead[:copy(p.ahead, p.ahead[n:])]
	return err
}

// settle waits until the rows of every waypoint are logged or given up,
// or until ctx ends.
func (p *progress) settle(ctx context.Context) {
	p.mu.Lock()
	ahead := slices.Clone(p.ahead)
	p.mu.Unlock()
	for _, w := range ahead {
		select {
		case <-w.logged.Settled():
		case <-ctx.Done():
			return
		}
	}
}

// confirmable advances confirmed to the position logged, once every write
// before it is on disk in the store (the store commits them without
// waiting for that: see store.InsertOnce). When the store cannot tell,
// confirmed stays; a row given up (errGivenUp) stops it there.
func (p *progress) confirmable(ctx context.Context, in Ingester) error {
	p.confirming.Lock()
	defer p.confirming.Unlock()
	p.mu.Lock()
	givenUp := p.advance()
	upto, writes := p.upto, p.writes
	p.mu.Unlock()
	if writes > p.durable {
		if err := in.Durable(ctx); err != nil {
			return fmt.Errorf("confirm position: %w", err)
		}
		p.durable = writes
	}
	p.confirmed.Store(upto)
	return givenUp
}

// confirmBehind starts confirmable in the background unless one runs
// already, so that waiting for the store's disk (up to the store's
// wal_writer_delay) never holds up the stream; the reader confirms the
// position found so far. It returns the error the last confirmation in
// the background ended with, once. The session waits for background.
func (p *progress) confirmBehind(ctx context.Context, in Ingester) error {
	p.mu.Lock()
	err := p.failed
	p.failed = nil
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if p.backgroundBusy.CompareAndSwap(false, true) {
		p.background.Go(func() {
			defer p.backgroundBusy.Store(false)
			if err := p.confirmable(ctx, in); err != nil && ctx.Err() == nil {
				p.mu.Lock()
				p.failed = err
				p.mu.Unlock()
			}
		})
	}
	return nil
}

// primaryKey looks up a relation's primary key columns.
func (c *consumer) primaryKey(ctx context.Context, relID uint32) ([]string, error) {
	c.shared.mu.Lock()
	defer c.shared.mu.Unlock()
	rows, err := c.shared.conn.Query(ctx, `SELECT a.attname::text FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`, relID)
	if err != nil {
		return nil, fmt.Errorf("%s: look up the primary key of relation %d: %w", c.s.where(), relID, err)
	}
	pk, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("%s: look up the primary key of relation %d: %w", c.s.where(), relID, err)
	}
	return pk, nil
}
