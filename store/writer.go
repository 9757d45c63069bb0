package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// writeOp is one caller's share of a group commit.
type writeOp struct {
	events []EventLog
	once   bool // events whose id exists are skipped, not refused
	// first: events carry their first outcome (see RecordFirst); once too.
	first    bool
	lazy     bool // committed without waiting for the WAL flush (see InsertOnce)
	node     string
	outcomes []Outcome
	index    *indexWrite
	done     chan writeResult
}

// writeResult tells a caller what its share did.
type writeResult struct {
	changed map[uuid.UUID]bool // rows inserted and outcomes applied
	err     error
}

// commitTimeout bounds one batch's transaction.
const commitTimeout = 30 * time.Second

// Insert writes new event_logs rows and returns once they are committed.
// Concurrent calls are committed together in one transaction; a call whose
// rows are refused (an id that exists) fails alone, and none of its rows
// are written.
func (s *Store) Insert(ctx context.Context, events []EventLog) error {
	_, err := s.write(ctx, &writeOp{events: events})
	return err
}

// InsertOnce writes the events whose ids are not in event_logs yet and
// returns those it inserted, once committed. Sources that replay after a
// crash give their events ids derived from their position, so a replayed
// event is skipped rather than written twice.
//
// Because such a source replays what it has not confirmed, the commit does
// not wait for the store's WAL to reach the disk (synchronous_commit off,
// unless the batch shares its commit with other writes): a crash of the
// store may lose it, and the source replays it. The source must call
// Durable before it confirms the events to its origin.
func (s *Store) InsertOnce(ctx context.Context, events []EventLog) (inserted map[uuid.UUID]bool, err error) {
	return s.write(ctx, &writeOp{events: events, once: true, lazy: true})
}

// RecordFirst logs rows that were attempted before they were logged, each
// with the outcome of that first attempt applied (outcomes[i] is rows[i]'s,
// an outcome of node's) and its invocation, and returns the ids of the rows
// it inserted, once committed. A row whose id exists is skipped, its
// invocation logged all the same: the attempt happened.
//
// Only a source that replays what it has not confirmed may deliver before
// it logs (a database's changes, see dispatch.Change): like InsertOnce, the
// commit does not wait for the WAL flush, and the source confirms the
// rows to its origin only after Durable.
func (s *Store) RecordFirst(ctx context.Context, node string, rows []EventLog, outcomes []Outcome) (inserted map[uuid.UUID]bool, err error) {
	if len(rows) != len(outcomes) {
		return nil, fmt.Errorf("store: %d rows and %d outcomes to log", len(rows), len(outcomes))
	}
	done := make([]EventLog, len(rows))
	for i, o := range outcomes {
		done[i] = rows[i]
		done[i].applyOutcome(node, &o)
	}
	return s.write(ctx, &writeOp{events: done, once: true, first: true, lazy: true, outcomes: outcomes, node: node})
}

// applyOutcome makes e what an outcome of node's leaves it: a row left
// staged keeps its due time, and stays node's only when o keeps it.
func (e *EventLog) applyOutcome(node string, o *Outcome) {
	e.Status, e.Attempts, e.Remark, e.Response = o.Status, o.Attempts, o.Remark, o.Response
	e.DueAt, e.ClaimedBy = time.Time{}, ""
	if o.Status == StatusStaged {
		e.DueAt = o.DueAt
		if o.Keep {
			e.ClaimedBy = node
		}
	}
}

// durablePoll is how often Durable looks at how far the log is flushed.
const durablePoll = 20 * time.Millisecond

// Durable returns once every write committed before the call is on disk,
// those of InsertOnce included. The server's WAL writer flushes such
// commits within its wal_writer_delay (200 ms unless set otherwise); a
// commit of any session's that waits for the flush also covers them.
func (s *Store) Durable(ctx context.Context) error {
	var target, flushed uint64
	err := s.pool.QueryRow(ctx, `SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint, (pg_current_wal_flush_lsn() - '0/0')::bigint`).Scan(&target, &flushed)
	for err == nil && flushed < target {
		select {
		case <-time.After(durablePoll):
		case <-ctx.Done():
			return fmt.Errorf("store %s: wait for the log to reach the disk: %w", s.where, ctx.Err())
		}
		err = s.pool.QueryRow(ctx, `SELECT (pg_current_wal_flush_lsn() - '0/0')::bigint`).Scan(&flushed)
	}
	if err != nil {
		return fmt.Errorf("store %s: wait for the log to reach the disk: %w", s.where, err)
	}
	return nil
}

// Record applies attempt outcomes to rows claimed by node and logs their
// invocations, returning once committed. An outcome is applied only while
// the row is still staged and claimed by node; applied reports which were.
// Invocations are logged either way: the attempts happened.
func (s *Store) Record(ctx context.Context, node string, outcomes []Outcome) (applied map[uuid.UUID]bool, err error) {
	return s.write(ctx, &writeOp{node: node, outcomes: outcomes})
}

// write queues op for the next group commit and waits for its result.
func (s *Store) write(ctx context.Context, op *writeOp) (map[uuid.UUID]bool, error) {
	op.done = make(chan writeResult, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, errClosed
	}
	select {
	case s.ops <- op:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return nil, ctx.Err()
	}
	select {
	case r := <-op.done:
		return r.changed, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// writeLoop commits queued ops in batches until ctx ends, then drains the queue.
func (s *Store) writeLoop(ctx context.Context) {
	for {
		select {
		case op := <-s.ops:
			s.flush(s.gather(op))
		case <-ctx.Done():
			for {
				select {
				case op := <-s.ops:
					s.flush(s.gather(op))
				default:
					return
				}
			}
		}
	}
}

// gather takes first and whatever else is queued, up to maxBatch rows.
func (s *Store) gather(first *writeOp) []*writeOp {
	batch := []*writeOp{first}
	rows := first.size()
	for rows < s.maxBatch {
		select {
		case op := <-s.ops:
			batch = append(batch, op)
			rows += op.size()
		default:
			return batch
		}
	}
	return batch
}

// size is how many rows op writes, about.
func (op *writeOp) size() int {
	n := len(op.events)
	if !op.first { // a first outcome is its row's
		n += len(op.outcomes)
	}
	if op.index != nil {
		n += op.index.size()
	}
	return n
}

// flush commits a batch and answers its callers. When the server rejects the
// batch, each op is retried alone so one bad op cannot fail the others.
func (s *Store) flush(batch []*writeOp) {
	began := time.Now()
	changed, err := s.commit(batch)
	if err == nil {
		s.metrics.observe(batch, time.Since(began))
	}
	var pgErr *pgconn.PgError
	if err != nil && len(batch) > 1 && errors.As(err, &pgErr) {
		for _, op := range batch {
			s.flush([]*writeOp{op})
		}
		return
	}
	for _, op := range batch {
		r := writeResult{err: err}
		if err == nil {
			r.changed = make(map[uuid.UUID]bool, len(op.events)+len(op.outcomes))
			for _, e := range op.events {
				r.changed[e.ID] = changed[e.ID]
			}
			for _, o := range op.outcomes {
				r.changed[o.EventID] = changed[o.EventID]
			}
			if op.index != nil {
				for _, c := range op.index.changes {
					for _, e := range c.Events {
						r.changed[e.ID] = changed[e.ID]
					}
				}
			}
		}
		op.done <- r
	}
}

// eventColumnList names the event_logs columns a write fills, in the order
// of eventUnnest, the select list that makes them rows from the
// parameters that carry them column by column.
//
// eventUnnest calls unnest once per column in the select list, where the
// calls run in step, rather than unnest(…) in FROM: there, each array's
// elements are first kept in a store of their own (16 kB at least), and
// Postgres's allocator hands that memory back to the kernel at the end
// of each statement and asks for it again at the next. On a busy server
// that doubled the time a small batch's insert took.
const (
	eventColumnList = `id, batch_id, project, trigger_name, type, payload, event_time, fire_at,
                        is_synchronous, due_at, claimed_by`
	eventUnnest = `unnest($1::uuid[]) AS id, unnest($2::uuid[]) AS batch_id, unnest($3::text[]) AS project,
       unnest($4::text[]) AS trigger_name, unnest($5::text[]) AS type, unnest($6::text[]) AS payload,
       unnest($7::timestamptz[]) AS event_time, unnest($8::timestamptz[]) AS fire_at,
       unnest($9::bool[]) AS is_synchronous, unnest($10::timestamptz[]) AS due_at,
       unnest($11::text[]) AS claimed_by`
	eventSelect = `SELECT id, batch_id, project, trigger_name, type, payload::json, event_time, fire_at,
       is_synchronous, due_at, claimed_by`
)

// insertFirstSQL inserts rows with their first outcome (RecordFirst):
// the columns of insertEventsSQL and the outcome's, $12 to $15.
const insertFirstSQL = `
INSERT INTO event_logs (` + eventColumnList + `, status, attempts, remark, response)
` + eventSelect + `, status, attempts, remark, response::json
FROM (SELECT ` + eventUnnest + `, unnest($12::text[]) AS status, unnest($13::int[]) AS attempts,
       unnest($14::text[]) AS remark, unnest($15::text[]) AS response) AS t
ON CONFLICT (id) DO NOTHING
RETURNING id`

const insertEventsSQL = `
INSERT INTO event_logs (` + eventColumnList + `)
` + eventSelect + `
FROM (SELECT ` + eventUnnest + `) AS t
`

const insertEventsOnceSQL = insertEventsSQL + `ON CONFLICT (id) DO NOTHING
RETURNING id`

// applyOutcomeSQL applies one outcome. It runs after indexPlanSQL, once
// per outcome of a batch, so that Postgres plans it once per connection:
// a join with unnest, like the other updates, was planned anew for each
// batch (see customPlanSQL), which cost more than the update itself in
// small batches.
const applyOutcomeSQL = `
UPDATE event_logs
SET status = $3, attempts = $4, due_at = $5, claimed_by = $6, remark = $7, response = $8::text::json,
    updated_at = now()
WHERE id = $1 AND claimed_by = $2 AND status || '' = 'staged' -- see renewSQL
RETURNING id`

// indexPlanSQL keeps the rest of the transaction from planning sequential
// scans. A statement that looks one row up by its primary key, planned
// while event_logs was small, would otherwise cache a plan that reads
// the whole table (see customPlanSQL), and the lookup by primary key is
// then the only plan left for it, at any size.
const indexPlanSQL = `SELECT set_config('enable_seqscan', 'off', true)`

// customPlanSQL makes the rest of the transaction plan each statement for
// its parameters (file index writes too: with a plan cached while the index
// was small, each write read every path of its directory). pgx prepares statements and Postgres then settles on a
// generic plan; for a lookup by id made while event_logs was small, that
// is a sequential scan, and it stays cached as the table grows (until an
// ANALYZE): outcome writes took 50-120 ms each and delivery fell by more
// than half. Inserts, which read nothing, keep their cached plans.
const customPlanSQL = `SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`

const insertInvocationsSQL = `
INSERT INTO invocation_logs (id, event_id, attempt, node_id, started_at, duration_ms, request_body,
                             request_format, response_status, response_body, error)
SELECT unnest($1::uuid[]), unnest($2::uuid[]), unnest($3::int[]), unnest($4::text[]), unnest($5::timestamptz[]),
       unnest($6::float8[]), unnest($7::text[]), unnest($8::text[]), unnest($9::int[]), unnest($10::text[]),
       unnest($11::text[])` // one unnest per column: see eventUnnest

// commit writes a batch in one transaction: pipelined statements between
// two Syncs run as one implicit transaction, so the whole batch costs one
// round trip and one WAL flush. It returns the ids it inserted or applied
// (plain inserts: RETURNING and ON CONFLICT would cost about a quarter of
// the throughput), and announces them to followers after the commit.
func (s *Store) commit(batch []*writeOp) (map[uuid.UUID]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()

	var ev, evOnce, evFirst eventColumns
	var outcomes [][]any
	var inv invocationColumns
	for _, op := range batch {
		cols := &ev
		switch {
		case op.first:
			cols = &evFirst
		case op.once:
			cols = &evOnce
		}
		for i := range op.events {
			cols.add(&op.events[i])
			if op.first {
				cols.addOutcome(&op.events[i])
			}
		}
		for i := range op.outcomes {
			o := &op.outcomes[i]
			if !op.first { // the row's insert carries it
				outcomes = append(outcomes, outcomeArgs(op.node, o))
			}
			if o.Invocation != nil {
				inv.add(o.Invocation)
			}
		}
	}

	b := &pgx.Batch{}
	if lazyBatch(batch) {
		b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	}
	changed := make(map[uuid.UUID]bool)
	collect := func(rows pgx.Rows) error {
		for rows.Next() {
			var id [16]byte
			if err := rows.Scan(&id); err != nil {
				return err
			}
			changed[id] = true
		}
		return rows.Err()
	}
	if len(ev.id) > 0 {
		b.Queue(insertEventsSQL, ev.args()...)
		for _, id := range ev.id {
			changed[id] = true
		}
	}
	if len(evOnce.id) > 0 {
		b.Queue(insertEventsOnceSQL, evOnce.args()...).Query(collect)
	}
	if len(evFirst.id) > 0 {
		b.Queue(insertFirstSQL, append(evFirst.args(), evFirst.status, evFirst.attempts, evFirst.remark, evFirst.response)...).Query(collect)
	}
	if len(inv.id) > 0 {
		b.Queue(insertInvocationsSQL, inv.args()...)
	}
	// The statements that read go last, after indexPlanSQL and
	// customPlanSQL: the settings last until the commit.
	if len(outcomes) > 0 {
		b.Queue(indexPlanSQL)
		for _, args := range outcomes {
			b.Queue(applyOutcomeSQL, args...).Query(collect)
		}
	}
	index := false
	for _, op := range batch {
		index = index || op.index != nil
	}
	if index {
		b.Queue(customPlanSQL)
	}
	for _, op := range batch {
		if op.index != nil {
			op.index.queue(b, collect)
		}
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("store %s: write %d events and %d outcomes: %w", s.where, len(ev.id)+len(evOnce.id)+len(evFirst.id), len(outcomes), err)
	}
	s.announce(changed)
	return changed, nil
}

// lazyBatch reports whether every op of batch may commit without waiting
// for the WAL flush.
func lazyBatch(batch []*writeOp) bool {
	for _, op := range batch {
		if !op.lazy {
			return false
		}
	}
	return true
}

// The column types below are the ones pgx encodes without reflection:
// [16]byte for uuid, pgtype.Text and pgtype.Timestamptz for nullable values.

// eventColumns holds event rows column by column, for unnest.
type eventColumns struct {
	id, batchID           [][16]byte
	project, trigger, typ []string
	payload, claimedBy    []pgtype.Text
	eventTime, fireAt     []time.Time
	dueAt                 []pgtype.Timestamptz
	sync                  []bool
	// The outcome's columns, for insertFirstSQL only.
	status           []string
	attempts         []int32
	remark, response []pgtype.Text
}

// args are the columns, as the parameters $1 to $11 of eventUnnest.
func (c *eventColumns) args() []any {
	return []any{c.id, c.batchID, c.project, c.trigger, c.typ, c.payload, c.eventTime, c.fireAt, c.sync, c.dueAt, c.claimedBy}
}

func (c *eventColumns) add(e *EventLog) {
	c.id = append(c.id, e.ID)
	c.batchID = append(c.batchID, e.BatchID)
	c.project = append(c.project, e.Project)
	c.trigger = append(c.trigger, e.Trigger)
	c.typ = append(c.typ, e.Type)
	c.payload = append(c.payload, rawText(e.Payload))
	c.eventTime = append(c.eventTime, e.EventTime)
	c.fireAt = append(c.fireAt, e.FireAt)
	c.sync = append(c.sync, e.Synchronous)
	c.dueAt = append(c.dueAt, timeOrNull(e.DueAt))
	c.claimedBy = append(c.claimedBy, textOrNull(e.ClaimedBy))
}

// addOutcome adds the outcome's columns of e, for insertFirstSQL.
func (c *eventColumns) addOutcome(e *EventLog) {
	c.status = append(c.status, string(e.Status))
	c.attempts = append(c.attempts, int32(e.Attempts))
	c.remark = append(c.remark, textOrNull(Text(e.Remark)))
	c.response = append(c.response, rawText(e.Response))
}

// outcomeArgs are the parameters of applyOutcomeSQL for o, an outcome
// of node's (see EventLog.applyOutcome).
func outcomeArgs(node string, o *Outcome) []any {
	var e EventLog
	e.applyOutcome(node, o)
	return []any{[16]byte(o.EventID), node, string(e.Status), int32(e.Attempts), timeOrNull(e.DueAt),
		textOrNull(e.ClaimedBy), textOrNull(Text(e.Remark)), rawText(e.Response)}
}

// invocationColumns holds invocation rows column by column, for unnest.
type invocationColumns struct {
	id, eventID   [][16]byte
	attempt       []int32
	node          []string
	startedAt     []time.Time
	durationMS    []float64
	request       []string
	format        []pgtype.Text
	status        []pgtype.Int4
	response, err []pgtype.Text
}

// args are the columns, as the parameters of insertInvocationsSQL.
func (c *invocationColumns) args() []any {
	return []any{c.id, c.eventID, c.attempt, c.node, c.startedAt, c.durationMS, c.request, c.format, c.status, c.response, c.err}
}

func (c *invocationColumns) add(in *Invocation) {
	c.id = append(c.id, in.ID)
	c.eventID = append(c.eventID, in.EventID)
	c.attempt = append(c.attempt, int32(in.Attempt))
	c.node = append(c.node, in.NodeID)
	c.startedAt = append(c.startedAt, in.StartedAt)
	c.durationMS = append(c.durationMS, float64(in.Duration)/float64(time.Millisecond))
	c.request = append(c.request, string(in.RequestBody))
	c.format = append(c.format, textOrNull(in.RequestFormat))
	c.status = append(c.status, pgtype.Int4{Int32: int32(in.ResponseStatus), Valid: in.ResponseStatus != 0})
	c.response = append(c.response, textOrNull(Text(in.ResponseBody)))
	c.err = append(c.err, textOrNull(Text(in.Error)))
}

// rawText is JSON text, NULL when absent.
func rawText(b []byte) pgtype.Text {
	return pgtype.Text{String: string(b), Valid: b != nil}
}

func textOrNull(s string) pgtype.Text {
	return pgtype.Text{String: s, Valid: s != ""}
}

func timeOrNull(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}
