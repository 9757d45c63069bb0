package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Filter selects event_logs rows; empty fields match everything.
type Filter struct {
	Project string
	Type    string
	Trigger string
	Status  Status
}

// where renders the filter as SQL conditions whose arguments follow args.
func (f Filter) where(args []any) (string, []any) {
	conds := []string{"true"}
	add := func(column, value string) {
		if value != "" {
			args = append(args, value)
			conds = append(conds, fmt.Sprintf("%s = $%d", column, len(args)))
		}
	}
	add("project", f.Project)
	add("type", f.Type)
	add("trigger_name", f.Trigger)
	add("status", string(f.Status))
	return strings.Join(conds, " AND "), args
}

// Recent returns the newest limit rows matching f, oldest first. Row ids
// begin with a time (UUIDv7, or UUIDv8 for a change: see dispatch.Change),
// so id order is time order.
func (s *Store) Recent(ctx context.Context, f Filter, limit int) ([]EventLog, error) {
	cond, args := f.where([]any{limit})
	rows, err := s.pool.Query(ctx, `SELECT * FROM (SELECT `+eventColumnsSQL+` FROM event_logs WHERE `+cond+
		` ORDER BY id DESC LIMIT $1) r ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return events, nil
}

// Events returns the rows with the given ids that match f, in id order.
func (s *Store) Events(ctx context.Context, ids []uuid.UUID, f Filter) ([]EventLog, error) {
	cond, args := f.where([]any{ids})
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumnsSQL+` FROM event_logs WHERE id = ANY($1) AND `+cond+
		` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return events, nil
}

// Invocations returns the attempts logged for one event_logs row, in order.
func (s *Store) Invocations(ctx context.Context, eventID uuid.UUID) ([]Invocation, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, event_id, attempt, node_id, started_at, duration_ms, request_body, coalesce(request_format, ''),
		       coalesce(response_status, 0), coalesce(response_body, ''), coalesce(error, '')
		FROM invocation_logs WHERE event_id = $1 ORDER BY attempt, started_at`, eventID)
	if err != nil {
		return nil, fmt.Errorf("read invocations of %s: %w", eventID, err)
	}
	var out []Invocation
	var in Invocation
	var ms float64
	_, err = pgx.ForEachRow(rows, []any{&in.ID, &in.EventID, &in.Attempt, &in.NodeID, &in.StartedAt, &ms,
		&in.RequestBody, &in.RequestFormat, &in.ResponseStatus, &in.ResponseBody, &in.Error}, func() error {
		in.Duration = msDuration(ms)
		in.RequestBody = append([]byte(nil), in.RequestBody...)
		out = append(out, in)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read invocations of %s: %w", eventID, err)
	}
	return out, nil
}

// Listener receives the ids of event_logs rows as they are created or change.
type Listener struct {
	conn *pgxpool.Conn
}

// Listen starts listening for changed rows. Listen before reading the rows
// already there, so that nothing committed in between is missed.
func (s *Store) Listen(ctx context.Context) (*Listener, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen for changes: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		conn.Release()
		return nil, fmt.Errorf("listen for changes: %w", err)
	}
	return &Listener{conn: conn}, nil
}

// Next waits for the next notification and returns the ids it names.
func (l *Listener) Next(ctx context.Context) ([]uuid.UUID, error) {
	n, err := l.conn.Conn().WaitForNotification(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for changes: %w", err)
	}
	var ids []uuid.UUID
	for p := range strings.SplitSeq(n.Payload, ",") {
		if id, err := uuid.Parse(p); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Close stops listening and gives the connection back.
func (l *Listener) Close() {
	// The connection still listens; closing it is simpler than UNLISTEN.
	_ = l.conn.Conn().Close(context.Background())
	l.conn.Release()
}

// msDuration converts fractional milliseconds to a Duration.
func msDuration(ms float64) time.Duration {
	return time.Duration(ms * float64(time.Millisecond))
}
