package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// EventQuery selects event_logs rows for the admin API; zero fields match
// every row.
type EventQuery struct {
	Project, Type, Trigger string
	Status                 Status
	// Since and Until bound the time in the row's id (when its event was
	// queued, or its change committed or seen): Since <= time < Until. A
	// range is a range of ids, which the primary key serves.
	Since, Until time.Time
	// ID is one row; BatchID the rows of one event.
	ID, BatchID uuid.UUID
	// Remark is text the row's remark contains, in any case.
	Remark string
}

// IsZero reports whether q matches every row.
func (q EventQuery) IsZero() bool { return q == EventQuery{} }

// where renders q as SQL conditions on event_logs (aliased e) whose
// arguments follow args.
func (q EventQuery) where(args []any) (string, []any) {
	conds := []string{"true"}
	add := func(cond string, value any) {
		args = append(args, value)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	for _, f := range []struct{ column, value string }{
		{"project", q.Project}, {"type", q.Type}, {"trigger_name", q.Trigger}, {"status", string(q.Status)},
	} {
		if f.value != "" {
			add("e."+f.column+" = $%d", f.value)
		}
	}
	if !q.Since.IsZero() {
		add("e.id >= $%d", idAt(q.Since))
	}
	if !q.Until.IsZero() {
		add("e.id < $%d", idAt(q.Until))
	}
	if q.ID != uuid.Nil {
		add("e.id = $%d", q.ID)
	}
	if q.BatchID != uuid.Nil {
		add("e.batch_id = $%d", q.BatchID)
	}
	if q.Remark != "" {
		add("strpos(lower(e.remark), lower($%d)) > 0", q.Remark)
	}
	return strings.Join(conds, " AND "), args
}

// idAt is the smallest row id of time t: row ids (UUIDv7, and the UUIDv8
// of changes) begin with 48 bits of Unix milliseconds.
func idAt(t time.Time) uuid.UUID {
	var id uuid.UUID
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(max(t.UnixMilli(), 0)))
	copy(id[:6], ms[2:])
	return id
}

// IDTime is the time a row id begins with (see idAt).
func IDTime(id uuid.UUID) time.Time {
	var ms [8]byte
	copy(ms[2:], id[:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ms[:])))
}

// EventPage is one page of rows, newest first, with their attempts.
type EventPage struct {
	Events []EventWithAttempts
	// Next is the id to pass as the next page's before; nil on the last page.
	Next *uuid.UUID
}

// EventWithAttempts is a row and the attempts logged for it, in order.
type EventWithAttempts struct {
	EventLog
	Invocations []Invocation
}

// ListEvents returns up to limit rows matching q whose ids are below
// before (every row when before is nil), newest first, each with its
// attempts (without their request and response bodies; Event has them).
// The rows are read from the primary key backwards, so that a page costs
// about limit rows read when q matches many rows. A filter that no index
// serves reads at most Options.ListScan rows a page: a page of a filter
// that matches few rows may then hold fewer than limit, even none, and
// Next says where to go on.
func (s *Store) ListEvents(ctx context.Context, q EventQuery, before *uuid.UUID, limit int) (EventPage, error) {
	sql, args := s.listSQL(q, before, limit+1)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return EventPage{}, fmt.Errorf("list events: %w", err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return EventPage{}, fmt.Errorf("list events: %w", err)
	}
	var page EventPage
	switch {
	case len(events) > limit:
		events = events[:limit]
		next := events[limit-1].ID
		page.Next = &next
	case !q.indexed(): // rows below the part read may match
		floor, err := s.scanFloor(ctx, q, before)
		if err != nil {
			return EventPage{}, err
		}
		page.Next = floor
	}
	ids := make([]uuid.UUID, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	attempts, err := s.attemptsOf(ctx, ids, false)
	if err != nil {
		return EventPage{}, err
	}
	page.Events = make([]EventWithAttempts, len(events))
	for i, e := range events {
		page.Events[i] = EventWithAttempts{EventLog: e, Invocations: attempts[e.ID]}
	}
	return page, nil
}

// indexed reports whether an index finds q's rows: one id, one event's
// rows, or the rows of a status that has a partial index.
func (q EventQuery) indexed() bool {
	switch q.Status {
	case StatusStaged, StatusFailed, StatusCancelled:
		return true
	}
	return q.ID != uuid.Nil || q.BatchID != uuid.Nil
}

// scanFloor returns the lowest id of the ListScan rows that a page of q
// below before may read, or nil when fewer rows are left to read.
func (s *Store) scanFloor(ctx context.Context, q EventQuery, before *uuid.UUID) (*uuid.UUID, error) {
	bounds, args := EventQuery{Since: q.Since, Until: q.Until}.where([]any{s.listScan})
	if before != nil {
		args = append(args, *before)
		bounds += fmt.Sprintf(" AND e.id < $%d", len(args))
	}
	var floor uuid.UUID
	err := s.pool.QueryRow(ctx, `SELECT e.id FROM event_logs e WHERE `+bounds+` ORDER BY e.id DESC OFFSET $1 - 1 LIMIT 1`, args...).Scan(&floor)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("list events: %w", err)
	}
	return &floor, nil
}

// listSQL selects up to limit rows matching q below before, newest first;
// when no index serves q, among the ListScan rows below before only.
func (s *Store) listSQL(q EventQuery, before *uuid.UUID, limit int) (string, []any) {
	cond, args := q.where([]any{limit})
	from := "event_logs e"
	below := ""
	if before != nil {
		args = append(args, *before)
		below = fmt.Sprintf(" AND e.id < $%d", len(args))
		cond += below
	}
	if !q.indexed() {
		// The rows below before, in q's time range, are read newest first
		// and filtered as they come: the scan stops once the page is full,
		// or after ListScan rows.
		var bounds string
		bounds, args = EventQuery{Since: q.Since, Until: q.Until}.where(args)
		args = append(args, s.listScan)
		from = fmt.Sprintf("(SELECT * FROM event_logs e WHERE %s%s ORDER BY e.id DESC LIMIT $%d) e", bounds, below, len(args))
	}
	return `SELECT ` + prefixed("e.", eventColumnsSQL) + ` FROM ` + from + ` WHERE ` + cond + ` ORDER BY e.id DESC LIMIT $1`, args
}

// ErrNoEvent is the error of Event for an id no row has.
var ErrNoEvent = errors.New("no such event")

// Event returns one row with its attempts, bodies included.
func (s *Store) Event(ctx context.Context, id uuid.UUID) (EventWithAttempts, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumnsSQL+` FROM event_logs WHERE id = $1`, id)
	if err != nil {
		return EventWithAttempts{}, fmt.Errorf("read event %s: %w", id, err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEvent)
	if errors.Is(err, pgx.ErrNoRows) {
		return EventWithAttempts{}, ErrNoEvent
	}
	if err != nil {
		return EventWithAttempts{}, fmt.Errorf("read event %s: %w", id, err)
	}
	attempts, err := s.attemptsOf(ctx, []uuid.UUID{id}, true)
	if err != nil {
		return EventWithAttempts{}, err
	}
	return EventWithAttempts{EventLog: e, Invocations: attempts[id]}, nil
}

// attemptsOf reads the attempts of rows, by row, in attempt order; with
// bodies, their request and response bodies too.
func (s *Store) attemptsOf(ctx context.Context, ids []uuid.UUID, bodies bool) (map[uuid.UUID][]Invocation, error) {
	out := make(map[uuid.UUID][]Invocation, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	bodyColumns := `'', '', ''`
	if bodies {
		bodyColumns = `request_body, coalesce(request_format, ''), coalesce(response_body, '')`
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, event_id, attempt, node_id, started_at, duration_ms, coalesce(response_status, 0), coalesce(error, ''), `+bodyColumns+`
		FROM invocation_logs WHERE event_id = ANY($1) ORDER BY event_id, attempt, started_at`, ids)
	if err != nil {
		return nil, fmt.Errorf("read attempts: %w", err)
	}
	var in Invocation
	var ms float64
	var request string
	_, err = pgx.ForEachRow(rows, []any{&in.ID, &in.EventID, &in.Attempt, &in.NodeID, &in.StartedAt, &ms,
		&in.ResponseStatus, &in.Error, &request, &in.RequestFormat, &in.ResponseBody}, func() error {
		in.Duration = msDuration(ms)
		in.RequestBody = nil
		if bodies {
			in.RequestBody = []byte(request)
		}
		out[in.EventID] = append(out[in.EventID], in)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read attempts: %w", err)
	}
	return out, nil
}

// Count is how many rows of one trigger are in one status.
type Count struct {
	Project, Trigger string
	Status           Status
	Rows             int64
}

// Counts counts rows by trigger and status: every staged row, and the
// other rows created since since (all of them when since is zero); only
// those of statuses, when it names any. Staged rows are counted from the
// partial index event_logs_due, which holds only them; failed and
// cancelled ones alone from event_logs_unsuccessful; the others from the
// primary key's range of ids since since, so that the cost follows the
// rows in that window, not the table. Only a zero since reads the whole
// table.
func (s *Store) Counts(ctx context.Context, project string, since time.Time, statuses ...Status) ([]Count, error) {
	staged, others := "e.status = 'staged'", "e.status <> 'staged'"
	if len(statuses) > 0 {
		// The statuses are written into the query, not passed: the planner
		// then knows which partial index holds them.
		var named []string
		for _, st := range statuses {
			if !st.Valid() {
				return nil, fmt.Errorf("count events: no status %q", st)
			}
			if st != StatusStaged {
				named = append(named, "'"+string(st)+"'")
			}
		}
		if !slices.Contains(statuses, StatusStaged) {
			staged = "false"
		}
		others = "false"
		if len(named) > 0 {
			others = "e.status IN (" + strings.Join(named, ", ") + ")"
		}
	}
	var args []any
	if project != "" {
		args = append(args, project)
		staged += " AND e.project = $1"
		others += " AND e.project = $1"
	}
	if !since.IsZero() {
		args = append(args, idAt(since))
		others += fmt.Sprintf(" AND e.id >= $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, `
		SELECT e.project, e.trigger_name, 'staged', count(*) FROM event_logs e WHERE `+staged+` GROUP BY 1, 2
		UNION ALL
		SELECT e.project, e.trigger_name, e.status, count(*) FROM event_logs e WHERE `+others+` GROUP BY 1, 2, 3
		ORDER BY 1, 2, 3`, args...)
	if err != nil {
		return nil, fmt.Errorf("count events: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Count, error) {
		var c Count
		err := row.Scan(&c.Project, &c.Trigger, &c.Status, &c.Rows)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("count events: %w", err)
	}
	return out, nil
}

// Activity is how many rows of one trigger reached an outcome in one minute.
type Activity struct {
	Project, Trigger string
	// Minute is the start of the minute, by the rows' updated_at.
	Minute            time.Time
	Processed, Failed int64
}

// Activity counts, per trigger and minute, the rows created since since
// that have been processed or have failed, by the minute of their last
// change. Like Counts, it reads the primary key's range of ids since
// since, so its cost follows the rows of that window, not the table.
func (s *Store) Activity(ctx context.Context, project string, since time.Time) ([]Activity, error) {
	cond, args := "", []any{idAt(since)}
	if project != "" {
		args = append(args, project)
		cond = " AND project = $2"
	}
	rows, err := s.pool.Query(ctx, `
		SELECT project, trigger_name, date_trunc('minute', updated_at),
		       count(*) FILTER (WHERE status = 'processed'), count(*) FILTER (WHERE status = 'failed')
		FROM event_logs WHERE id >= $1 AND status IN ('processed', 'failed')`+cond+`
		GROUP BY 1, 2, 3 ORDER BY 3, 1, 2`, args...)
	if err != nil {
		return nil, fmt.Errorf("count activity: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Activity, error) {
		var a Activity
		err := row.Scan(&a.Project, &a.Trigger, &a.Minute, &a.Processed, &a.Failed)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("count activity: %w", err)
	}
	return out, nil
}
