package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// changeBatch is how many rows a bulk redelivery or cancellation changes
// per transaction. Each batch commits on its own, so that a bulk change
// holds the locks of at most this many rows at a time, all of them rows it
// changes: claims of other rows, and writes of outcomes, go on meanwhile.
const changeBatch = 2000

// Changed is what a redelivery or a cancellation did.
type Changed struct {
	// Rows is how many rows changed.
	Rows int
	// Triggers counts them by trigger, for the dispatchers to poll.
	Triggers map[Trigger]int
}

// redeliverSQL stages rows again ($1), unless staged already, with a fresh
// retry budget. Their attempts go on from the last one logged, or from the
// count the row kept, whichever is larger; and one more when a node may
// still hold the row (cancelled while claimed, its lease not over): that
// node's attempt in flight may yet be logged with the next number.
const redeliverSQL = `
UPDATE event_logs e SET status = 'staged', due_at = now(), claimed_by = NULL, response = NULL,
       attempts = b.base, retry_base = b.base, remark = $2, updated_at = now()
FROM (SELECT r.id, greatest(r.attempts, coalesce(max(i.attempt), 0))
             + CASE WHEN r.claimed_by IS NOT NULL AND r.due_at > now() THEN 1 ELSE 0 END AS base
      FROM event_logs r LEFT JOIN invocation_logs i ON i.event_id = r.id
      WHERE r.id = ANY($1) GROUP BY r.id) b
WHERE e.id = b.id AND e.status || '' <> 'staged' -- see renewSQL
RETURNING e.id, e.project, e.trigger_name`

// cancelSQL cancels staged rows ($1). A row a node holds keeps claimed_by
// and due_at (the end of its lease): the node's attempt in flight, if any,
// finishes, and its outcome is not applied, since the row is no longer
// staged (see applyOutcomesSQL); redeliverSQL counts that attempt.
const cancelSQL = `
UPDATE event_logs e SET status = 'cancelled', remark = $2, updated_at = now(),
       due_at = CASE WHEN e.claimed_by IS NULL THEN NULL ELSE e.due_at END
WHERE e.id = ANY($1) AND e.status || '' = 'staged' -- see renewSQL
RETURNING e.id, e.project, e.trigger_name`

// Redeliver stages again the rows matching q that are processed, failed or
// cancelled, due now, each with a fresh retry budget (see redeliverSQL);
// remark says who asked. A row keeps its id. It changes the rows in
// batches of changeBatch, newest first, each batch in a transaction of its
// own; rows that match only once a batch is done are left alone.
func (s *Store) Redeliver(ctx context.Context, q EventQuery, remark string) (Changed, error) {
	return s.changeInBatches(ctx, q, redeliverable, redeliverSQL, remark, "redeliver", true)
}

// Cancel cancels the staged rows matching q, in batches as Redeliver does.
func (s *Store) Cancel(ctx context.Context, q EventQuery, remark string) (Changed, error) {
	return s.changeInBatches(ctx, q, cancellable, cancelSQL, remark, "cancel", false)
}

// The rows Redeliver and Cancel take, of those matching their query.
const (
	redeliverable = "e.status <> 'staged'"
	cancellable   = "e.status = 'staged'"
)

// Redeliverable counts the rows Redeliver would stage again now.
func (s *Store) Redeliverable(ctx context.Context, q EventQuery) (int, error) {
	return s.countMatching(ctx, q, redeliverable)
}

// Cancellable counts the rows Cancel would cancel now.
func (s *Store) Cancellable(ctx context.Context, q EventQuery) (int, error) {
	return s.countMatching(ctx, q, cancellable)
}

// countMatching counts the rows matching q and pick.
func (s *Store) countMatching(ctx context.Context, q EventQuery, pick string) (int, error) {
	cond, args := q.where(nil)
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM event_logs e WHERE `+cond+` AND `+pick, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count matching events: %w", err)
	}
	return n, nil
}

// changeInBatches applies update (whose $1 is the ids of a batch and $2
// the remark) to the rows matching q and pick, a batch at a time, walking
// down their ids. With staged, each batch's triggers are announced to the
// dispatchers (announceStaged).
func (s *Store) changeInBatches(ctx context.Context, q EventQuery, pick, update, remark, what string, staged bool) (Changed, error) {
	done := Changed{Triggers: make(map[Trigger]int)}
	var below *uuid.UUID
	for {
		cond, args := q.where(nil)
		cond += " AND " + pick
		if below != nil {
			args = append(args, *below)
			cond += fmt.Sprintf(" AND e.id < $%d", len(args))
		}
		args = append(args, changeBatch)
		selectSQL := `SELECT e.id FROM event_logs e WHERE ` + cond + fmt.Sprintf(` ORDER BY e.id DESC LIMIT $%d FOR UPDATE`, len(args))

		var picked []uuid.UUID
		changed := make(map[uuid.UUID]bool)
		triggers := make(map[Trigger]int)
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, selectSQL, args...)
			if err != nil {
				return err
			}
			if picked, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil || len(picked) == 0 {
				return err
			}
			if _, err := tx.Exec(ctx, customPlanSQL); err != nil {
				return err
			}
			rows, err = tx.Query(ctx, update, picked, remark)
			if err != nil {
				return err
			}
			var id uuid.UUID
			var t Trigger
			_, err = pgx.ForEachRow(rows, []any{&id, &t.Project, &t.Name}, func() error {
				changed[id] = true
				triggers[t]++
				return nil
			})
			return err
		})
		if err != nil {
			return done, fmt.Errorf("%s events (%d changed before the failure): %w", what, done.Rows, err)
		}
		done.Rows += len(changed)
		for t, n := range triggers {
			done.Triggers[t] += n
		}
		s.announce(changed)
		if staged && len(triggers) > 0 {
			s.announceStaged(triggers)
		}
		if len(picked) < changeBatch {
			return done, nil
		}
		below = &picked[len(picked)-1]
	}
}
