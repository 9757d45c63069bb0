package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Window is how long the rows of one outcome are kept after it was
// reached (their updated_at): Default for every project but those named in
// Projects. A window of 0 keeps the rows forever.
type Window struct {
	Default  time.Duration
	Projects map[string]time.Duration
}

// Retention is the window of each outcome: processed, failed and
// cancelled. Staged rows are never expired.
type Retention map[Status]Window

// Deleting is how a deletion goes in batches.
type Deleting struct {
	// Batch is how many rows each transaction deletes (0:
	// DefaultDeleteBatch).
	Batch int
	// Rest is how long to wait after each batch, as a multiple of the time
	// the batch took, so that deliveries and claims get the store
	// meanwhile whatever its load: a deletion takes at most about
	// 1/(Rest+1) of the time (0: DefaultDeleteRest; less than 0: no wait).
	Rest float64
	// Check, when set, is called before each batch; deleting stops with
	// its error. The retention sweep checks its lock with it.
	Check func() error
}

// How a deletion goes by default: DefaultDeleteBatch rows per
// transaction, small enough that each holds few row locks and commits
// within tens of milliseconds, and a rest of DefaultDeleteRest times each
// batch's duration after it, which leaves the store to deliveries most of
// the time. BenchmarkDeliveryWhileSweeping, on an idle 2-core VM: a fixed
// pause of 20 ms took a quarter of delivery throughput, a rest of 10
// times the batch 8%, and one of 20 times 3.6% (595 rows deleted a
// second).
const (
	DefaultDeleteBatch = 1000
	DefaultDeleteRest  = 20
)

// DeleteExpired deletes the rows whose outcome is older than r allows at
// now, with their attempts, and returns how many event rows it deleted.
func (s *Store) DeleteExpired(ctx context.Context, r Retention, now time.Time, d Deleting) (int, error) {
	statuses := slices.Sorted(maps.Keys(r))
	if err := outcomes(statuses); err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	total := 0
	for _, status := range statuses {
		w := r[status]
		// The newest cutoff of the status bounds the ids to walk: no row
		// whose id was made after it can have reached its outcome before.
		cutoff := func(keep time.Duration) time.Time {
			if keep <= 0 {
				return time.Time{} // no updated_at is older: kept forever
			}
			return now.Add(-keep)
		}
		newest := cutoff(w.Default)
		projects := make([]string, 0, len(w.Projects))
		cutoffs := make([]time.Time, 0, len(w.Projects))
		for _, p := range slices.Sorted(maps.Keys(w.Projects)) {
			c := cutoff(w.Projects[p])
			projects, cutoffs = append(projects, p), append(cutoffs, c)
			if c.After(newest) {
				newest = c
			}
		}
		if newest.IsZero() {
			continue // every project keeps these rows forever
		}
		args := []any{projects, cutoffs, cutoff(w.Default)}
		cond := `e.updated_at < CASE WHEN e.project = ANY($5::text[])
			THEN (SELECT u.c FROM unnest($5::text[], $6::timestamptz[]) u(p, c) WHERE u.p = e.project)
			ELSE $7::timestamptz END`
		n, err := s.deleteWalking(ctx, status, newest, cond, args, d)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Purge is what Store.Purge deletes: the rows of Statuses (processed,
// failed or cancelled; never staged) whose outcome was reached before
// Before, and that match Filter (its Status is ignored).
type Purge struct {
	Filter   Filter
	Before   time.Time
	Statuses []Status
}

// Purge deletes the rows p names, with their attempts, in batches as
// DeleteExpired does, and returns how many event rows it deleted.
func (s *Store) Purge(ctx context.Context, p Purge, d Deleting) (int, error) {
	f := p.Filter
	f.Status = ""
	statuses := slices.Compact(slices.Sorted(slices.Values(p.Statuses)))
	if err := outcomes(statuses); err != nil {
		return 0, fmt.Errorf("purge: %w", err)
	}
	total := 0
	for _, status := range statuses {
		// The filter's arguments follow deleteBatchSQL's four and Before.
		cond, args := f.where([]any{nil, nil, nil, nil, p.Before})
		n, err := s.deleteWalking(ctx, status, p.Before, "e.updated_at < $5 AND "+cond, args[4:], d)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// outcomes checks that statuses are outcomes: only processed, failed and
// cancelled rows are ever deleted.
func outcomes(statuses []Status) error {
	for _, st := range statuses {
		if st == StatusStaged || !st.Valid() {
			return fmt.Errorf("%q rows are never deleted: only processed, failed and cancelled ones", st)
		}
	}
	return nil
}

// deleteBatchSQL deletes up to $4 rows of status $1 with ids between $2
// and $3 that match the condition added after it (on e, with arguments
// from $5), lowest ids first, and their attempts; it returns how many rows
// it deleted and the highest id among them. The ids of rows are time
// ordered (UUIDv7, or UUIDv8 for a change), so the walk reads the primary
// key (or, for failed and cancelled rows, event_logs_unsuccessful, whose
// keys are status and id) from the oldest row up to the cutoff's time, and
// never the newer rows. The row locks make a row that a redelivery stages
// meanwhile drop out: its status is read again once locked.
const deleteBatchSQL = `
WITH picked AS (
	SELECT e.id FROM event_logs e
	WHERE e.status = $1 AND e.id > $2 AND e.id < $3 AND %s
	ORDER BY e.id LIMIT $4 FOR UPDATE
), gone AS (
	DELETE FROM event_logs e USING picked WHERE e.id = picked.id RETURNING e.id
), attempts AS (
	DELETE FROM invocation_logs i WHERE i.event_id IN (SELECT id FROM gone)
)
SELECT count(*)::int, max(id::text) FROM gone`

// deleteWalking deletes the rows of status with ids older than before's
// time that match cond (see deleteBatchSQL), in batches of d.Batch each in
// a transaction of its own, walking up the ids so that each row is read
// at most once. It returns how many rows it deleted.
func (s *Store) deleteWalking(ctx context.Context, status Status, before time.Time, cond string, args []any, d Deleting) (int, error) {
	batch, rest := d.Batch, d.Rest
	if batch <= 0 {
		batch = DefaultDeleteBatch
	}
	if rest == 0 {
		rest = DefaultDeleteRest
	}
	query := fmt.Sprintf(deleteBatchSQL, cond)
	after, bound := uuid.UUID{}, idAt(before)
	total := 0
	for {
		if d.Check != nil {
			if err := d.Check(); err != nil {
				return total, err
			}
		}
		var n int
		var last *string
		start := time.Now()
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, customPlanSQL); err != nil {
				return err
			}
			return tx.QueryRow(ctx, query, append([]any{status, after, bound, batch}, args...)...).Scan(&n, &last)
		})
		if err != nil {
			return total, fmt.Errorf("store %s: delete %s rows older than %s: %w", s.where, status, before.UTC().Format(time.RFC3339), err)
		}
		total += n
		if n < batch || last == nil {
			return total, nil
		}
		if after, err = uuid.Parse(*last); err != nil {
			return total, fmt.Errorf("store %s: delete %s rows: read the last id: %w", s.where, status, err)
		}
		if rest > 0 {
			select {
			case <-ctx.Done():
				return total, ctx.Err()
			case <-time.After(time.Duration(rest * float64(time.Since(start)))):
			}
		}
	}
}
