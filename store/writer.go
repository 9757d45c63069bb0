package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// writeOp is one caller's share of a group commit.
type writeOp struct {
	events   []Event
	node     string
	outcomes []Outcome
	done     chan writeResult
}

// writeResult tells a caller what its share did.
type writeResult struct {
	changed map[uuid.UUID]bool // rows inserted, or outcomes applied
	err     error
}

// commitTimeout bounds one batch's transaction.
const commitTimeout = 30 * time.Second

// Insert writes new event_logs rows and returns once they are committed.
// Rows whose id already exists are skipped; inserted reports which ids were
// new. Concurrent calls are committed together in one transaction.
func (s *Store) Insert(ctx context.Context, events []Event) (inserted map[uuid.UUID]bool, err error) {
	return s.write(ctx, &writeOp{events: events})
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
	rows := len(first.events) + len(first.outcomes)
	for rows < s.maxBatch {
		select {
		case op := <-s.ops:
			batch = append(batch, op)
			rows += len(op.events) + len(op.outcomes)
		default:
			return batch
		}
	}
	return batch
}

// flush commits a batch and answers its callers. When the server rejects the
// batch, each op is retried alone so one bad op cannot fail the others.
func (s *Store) flush(batch []*writeOp) {
	changed, err := s.commit(batch)
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
		}
		op.done <- r
	}
}

const insertEventsSQL = `
INSERT INTO event_logs (id, batch_id, project, trigger_name, type, payload, event_time, fire_at,
                        is_synchronous, due_at, claimed_by)
SELECT id, batch_id, project, trigger_name, type, payload::json, event_time, fire_at,
       is_synchronous, due_at, claimed_by
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::timestamptz[], $11::text[])
     AS t(id, batch_id, project, trigger_name, type, payload, event_time, fire_at,
          is_synchronous, due_at, claimed_by)
ON CONFLICT (id) DO NOTHING
RETURNING id`

const applyOutcomesSQL = `
UPDATE event_logs e
SET status = u.status, attempts = u.attempts, due_at = u.due_at, claimed_by = u.claimed_by,
    remark = u.remark, response = u.response::json, updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::text[],
            $7::text[], $8::text[])
     AS u(id, node, status, attempts, due_at, claimed_by, remark, response)
WHERE e.id = u.id AND e.claimed_by = u.node AND e.status = 'staged'
RETURNING e.id`

// notifySQL tells followers (triggerd tail --follow) which rows changed.
const notifySQL = `SELECT pg_notify($1, p) FROM unnest($2::text[]) p`

const insertInvocationsSQL = `
INSERT INTO invocation_logs (id, event_id, attempt, node_id, started_at, duration_ms, request_body,
                             response_status, response_body, error)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::timestamptz[],
                     $6::float8[], $7::text[], $8::int[], $9::text[], $10::text[])`

// commit writes a batch in one transaction: pipelined statements between
// two Syncs run as one implicit transaction, so the whole batch costs one
// round trip and one WAL flush. It returns the ids it inserted or applied.
func (s *Store) commit(batch []*writeOp) (map[uuid.UUID]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()

	var ev eventColumns
	var oc outcomeColumns
	var inv invocationColumns
	var notify notifyIDs
	for _, op := range batch {
		for i := range op.events {
			ev.add(&op.events[i])
			notify.add(op.events[i].ID)
		}
		for i := range op.outcomes {
			o := &op.outcomes[i]
			oc.add(op.node, o)
			notify.add(o.EventID)
			if o.Invocation != nil {
				inv.add(o.Invocation)
			}
		}
	}

	b := &pgx.Batch{}
	changed := make(map[uuid.UUID]bool)
	collect := func(rows pgx.Rows) error {
		for rows.Next() {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				return err
			}
			changed[id] = true
		}
		return rows.Err()
	}
	if len(ev.id) > 0 {
		b.Queue(insertEventsSQL, ev.id, ev.batchID, ev.project, ev.trigger, ev.typ, ev.payload,
			ev.eventTime, ev.fireAt, ev.sync, ev.dueAt, ev.claimedBy).Query(collect)
	}
	if len(oc.id) > 0 {
		b.Queue(applyOutcomesSQL, oc.id, oc.node, oc.status, oc.attempts, oc.dueAt, oc.claimedBy,
			oc.remark, oc.response).Query(collect)
	}
	if len(inv.id) > 0 {
		b.Queue(insertInvocationsSQL, inv.id, inv.eventID, inv.attempt, inv.node, inv.startedAt,
			inv.durationMS, inv.request, inv.status, inv.response, inv.err)
	}
	b.Queue(notifySQL, s.channel, notify.done())
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("store %s: write %d events and %d outcomes: %w", s.where, len(ev.id), len(oc.id), err)
	}
	return changed, nil
}

// eventColumns holds event rows column by column, for unnest.
type eventColumns struct {
	id, batchID           []uuid.UUID
	project, trigger, typ []string
	payload, claimedBy    []*string
	eventTime, fireAt     []time.Time
	dueAt                 []*time.Time
	sync                  []bool
}

func (c *eventColumns) add(e *Event) {
	c.id = append(c.id, e.ID)
	c.batchID = append(c.batchID, e.BatchID)
	c.project = append(c.project, e.Project)
	c.trigger = append(c.trigger, e.Trigger)
	c.typ = append(c.typ, e.Type)
	c.payload = append(c.payload, rawText(e.Payload))
	c.eventTime = append(c.eventTime, e.EventTime)
	c.fireAt = append(c.fireAt, e.FireAt)
	c.sync = append(c.sync, e.Synchronous)
	c.dueAt = append(c.dueAt, timeOrNil(e.DueAt))
	c.claimedBy = append(c.claimedBy, textOrNil(e.ClaimedBy))
}

// outcomeColumns holds outcomes column by column, for unnest.
type outcomeColumns struct {
	id                []uuid.UUID
	node, status      []string
	attempts          []int32
	dueAt             []*time.Time
	claimedBy, remark []*string
	response          []*string
}

func (c *outcomeColumns) add(node string, o *Outcome) {
	c.id = append(c.id, o.EventID)
	c.node = append(c.node, node)
	c.status = append(c.status, string(o.Status))
	c.attempts = append(c.attempts, int32(o.Attempts))
	claimedBy := ""
	var dueAt time.Time
	if o.Status == StatusStaged {
		dueAt = o.DueAt
		if o.Keep {
			claimedBy = node
		}
	}
	c.dueAt = append(c.dueAt, timeOrNil(dueAt))
	c.claimedBy = append(c.claimedBy, textOrNil(claimedBy))
	c.remark = append(c.remark, textOrNil(o.Remark))
	c.response = append(c.response, rawText(o.Response))
}

// invocationColumns holds invocation rows column by column, for unnest.
type invocationColumns struct {
	id, eventID   []uuid.UUID
	attempt       []int32
	node          []string
	startedAt     []time.Time
	durationMS    []float64
	request       []string
	status        []*int32
	response, err []*string
}

func (c *invocationColumns) add(in *Invocation) {
	c.id = append(c.id, in.ID)
	c.eventID = append(c.eventID, in.EventID)
	c.attempt = append(c.attempt, int32(in.Attempt))
	c.node = append(c.node, in.NodeID)
	c.startedAt = append(c.startedAt, in.StartedAt)
	c.durationMS = append(c.durationMS, float64(in.Duration)/float64(time.Millisecond))
	c.request = append(c.request, string(in.RequestBody))
	var status *int32
	if in.ResponseStatus != 0 {
		v := int32(in.ResponseStatus)
		status = &v
	}
	c.status = append(c.status, status)
	c.response = append(c.response, textOrNil(in.ResponseBody))
	c.err = append(c.err, textOrNil(in.Error))
}

// notifyIDs packs changed row ids into NOTIFY payloads under Postgres's
// 8000-byte limit.
type notifyIDs struct {
	payloads []string
	cur      strings.Builder
}

const notifyPayloadMax = 7900

func (n *notifyIDs) add(id uuid.UUID) {
	if n.cur.Len()+37 > notifyPayloadMax {
		n.payloads = append(n.payloads, n.cur.String())
		n.cur.Reset()
	}
	if n.cur.Len() > 0 {
		n.cur.WriteByte(',')
	}
	n.cur.WriteString(id.String())
}

// done returns the payloads, the last one included.
func (n *notifyIDs) done() []string {
	if n.cur.Len() > 0 {
		n.payloads = append(n.payloads, n.cur.String())
		n.cur.Reset()
	}
	return n.payloads
}

func rawText(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

func textOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
