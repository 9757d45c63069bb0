package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// eventColumnsSQL lists event_logs' columns in the order scanEvent reads them.
const eventColumnsSQL = `id, batch_id, project, trigger_name, type, payload, event_time, fire_at,
	is_synchronous, status, attempts, retry_base, due_at, claimed_by, remark, response, created_at, updated_at`

// scanEvent reads one row selected with eventColumnsSQL.
func scanEvent(row pgx.CollectableRow) (EventLog, error) {
	var e EventLog
	var payload, response, claimedBy, remark *string
	var dueAt *time.Time
	err := row.Scan(&e.ID, &e.BatchID, &e.Project, &e.Trigger, &e.Type, &payload, &e.EventTime, &e.FireAt,
		&e.Synchronous, &e.Status, &e.Attempts, &e.RetryBase, &dueAt, &claimedBy, &remark, &response, &e.CreatedAt, &e.UpdatedAt)
	if err != nil {
		return e, err
	}
	if payload != nil {
		e.Payload = []byte(*payload)
	}
	if response != nil {
		e.Response = []byte(*response)
	}
	if dueAt != nil {
		e.DueAt = *dueAt
	}
	if claimedBy != nil {
		e.ClaimedBy = *claimedBy
	}
	if remark != nil {
		e.Remark = *remark
	}
	return e, nil
}

// dueRowsSQL locks up to $3 due staged rows of trigger $2 in project $1,
// skipping rows another claim has locked. The partial index event_logs_due
// serves it, so a claim reads only due rows, however long the history.
const dueRowsSQL = `SELECT id FROM event_logs
	WHERE status = 'staged' AND project = $1 AND trigger_name = $2 AND due_at <= now()
	ORDER BY due_at LIMIT $3
	FOR UPDATE SKIP LOCKED`

// Claim takes up to limit due staged rows of one trigger for node, leasing
// them until now + lease. Rows other nodes hold are skipped, not waited for.
func (s *Store) Claim(ctx context.Context, node, project, trigger string, limit int, lease time.Duration) ([]EventLog, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE event_logs e SET claimed_by = $4, due_at = now() + $5::interval
		FROM (`+dueRowsSQL+`) due
		WHERE e.id = due.id
		RETURNING `+prefixed("e.", eventColumnsSQL), project, trigger, limit, node, lease)
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", project, trigger, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", project, trigger, err)
	}
	return events, nil
}

// nextDueSQL finds the earliest due_at of trigger $2 in project $1, by
// reading one entry of event_logs_due (written as ORDER BY ... LIMIT 1 so
// that the plan does not depend on the table's statistics).
const nextDueSQL = `SELECT extract(epoch FROM due_at - clock_timestamp())::float8 FROM event_logs
	WHERE status = 'staged' AND project = $1 AND trigger_name = $2
	ORDER BY due_at LIMIT 1`

// NextDue returns how long until the earliest staged row of a trigger may
// be claimed (zero or less when one is due now), and false when the trigger
// has no staged rows. The wait is measured on the database's clock.
func (s *Store) NextDue(ctx context.Context, project, trigger string) (time.Duration, bool, error) {
	var wait float64
	err := s.pool.QueryRow(ctx, nextDueSQL, project, trigger).Scan(&wait)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("next due row of %s/%s: %w", project, trigger, err)
	}
	return time.Duration(wait * float64(time.Second)), true, nil
}

// Updates of rows by id test status with "status || ''": written plainly,
// the test matches the predicate of event_logs_due, and with statistics
// taken while few rows were staged the planner walks every staged row
// through that index instead of looking each id up by primary key. They
// also run after customPlanSQL, so that no generic plan made while the
// table was small (a sequential scan) is reused as it grows.

const renewSQL = `
UPDATE event_logs e SET due_at = now() + r.lease
FROM unnest($2::uuid[], $3::interval[]) AS r(id, lease)
WHERE e.id = r.id AND e.claimed_by = $1 AND e.status || '' = 'staged'
RETURNING e.id`

const releaseSQL = `
UPDATE event_logs e SET claimed_by = NULL, due_at = coalesce(r.due, now())
FROM unnest($2::uuid[], $3::timestamptz[]) AS r(id, due)
WHERE e.id = r.id AND e.claimed_by = $1 AND e.status || '' = 'staged'`

// Renew extends node's leases on the given staged rows, each to now plus
// its lease (the same index in leases), and returns the ids it still held;
// the others were lost (to another node, or because they are no longer
// staged).
func (s *Store) Renew(ctx context.Context, node string, ids []uuid.UUID, leases []time.Duration) (map[uuid.UUID]bool, error) {
	if len(leases) != len(ids) {
		return nil, fmt.Errorf("renew %d leases: %d lease lengths given", len(ids), len(leases))
	}
	b := &pgx.Batch{}
	b.Queue(customPlanSQL)
	var held []uuid.UUID
	b.Queue(renewSQL, node, ids, leases).Query(func(rows pgx.Rows) error {
		var err error
		held, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		return err
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(ids), err)
	}
	out := make(map[uuid.UUID]bool, len(held))
	for _, id := range held {
		out[id] = true
	}
	return out, nil
}

// Holds reports whether node still holds row id: the row is staged and
// claimed by node. It reads and writes nothing else, for a node that kept
// a row through a retry's wait to learn whether the row was cancelled
// meanwhile.
// Like an outcome, it runs after indexPlanSQL, so that its cached plan is
// the lookup by primary key whatever the table's size when it was made.
func (s *Store) Holds(ctx context.Context, node string, id uuid.UUID) (bool, error) {
	var held bool
	b := &pgx.Batch{}
	b.Queue(indexPlanSQL)
	b.Queue(`SELECT EXISTS (SELECT FROM event_logs WHERE id = $1 AND claimed_by = $2 AND status || '' = 'staged')`, id, node).
		QueryRow(func(row pgx.Row) error { return row.Scan(&held) })
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, fmt.Errorf("store %s: read the claim of %s: %w", s.where, id, err)
	}
	return held, nil
}

// Release hands node's staged rows back for any node to claim, each at its
// due time (the same index in due), or at once where that is zero.
func (s *Store) Release(ctx context.Context, node string, ids []uuid.UUID, due []time.Time) error {
	dues := make([]pgtype.Timestamptz, len(ids))
	for i := range ids {
		if i < len(due) {
			dues[i] = timeOrNull(due[i])
		}
	}
	b := &pgx.Batch{}
	b.Queue(customPlanSQL)
	b.Queue(releaseSQL, node, ids, dues)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("release %d rows: %w", len(ids), err)
	}
	return nil
}

// Trigger names one trigger of one project.
type Trigger struct {
	Project string
	Name    string
}

// CancelOrphans cancels the staged rows whose trigger is not among known,
// nor stored (see PutTrigger), and that have been due for longer than overdue, and returns how many rows
// of each trigger it cancelled. A row that a live node's trigger serves is
// claimed soon after it falls due, so overdue spares the rows of triggers
// that only newer nodes know, during a rolling change of config.
func (s *Store) CancelOrphans(ctx context.Context, known []Trigger, overdue time.Duration) (map[Trigger]int, error) {
	projects := make([]string, len(known))
	names := make([]string, len(known))
	for i, t := range known {
		projects[i], names[i] = t.Project, t.Name
	}
	rows, err := s.pool.Query(ctx, `
		UPDATE event_logs SET status = 'cancelled', due_at = NULL, claimed_by = NULL, updated_at = now(),
		       remark = 'trigger ' || trigger_name || ' is not in the config of project ' || project
		WHERE status = 'staged' AND due_at <= now() - $3::interval
		  AND (project, trigger_name) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))
		  AND NOT EXISTS (SELECT 1 FROM triggers t WHERE t.project = event_logs.project AND t.name = event_logs.trigger_name)
		RETURNING id, project, trigger_name`, projects, names, overdue)
	if err != nil {
		return nil, fmt.Errorf("cancel rows of unknown triggers: %w", err)
	}
	out := make(map[Trigger]int)
	ids := make(map[uuid.UUID]bool)
	var id uuid.UUID
	var t Trigger
	_, err = pgx.ForEachRow(rows, []any{&id, &t.Project, &t.Name}, func() error {
		out[t]++
		ids[id] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cancel rows of unknown triggers: %w", err)
	}
	s.announce(ids)
	return out, nil
}

// prefixed qualifies each column of a comma-separated list with p.
func prefixed(p, columns string) string {
	parts := strings.Split(columns, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}
