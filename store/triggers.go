package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// StoredTrigger is a trigger defined through the admin API and kept in the
// store, beside the triggers of the config file.
type StoredTrigger struct {
	Project string
	Name    string
	// Spec is the trigger as JSON with the config file's keys, as
	// config.Trigger's Document writes it.
	Spec      json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	// UpdatedBy is who made the last change.
	UpdatedBy string
}

// TriggerChange is one entry of the audit of stored triggers.
type TriggerChange struct {
	ID      int64
	Project string
	Trigger string
	// Action is create, update or delete.
	Action string
	// Before and After are the trigger's spec before and after the change;
	// nil for a create and a delete respectively.
	Before json.RawMessage
	After  json.RawMessage
	Actor  string
	At     time.Time
}

// The actions an audit entry records.
const (
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// triggerChannel is the NOTIFY channel that tells nodes the stored
// triggers changed: the schema's, cut to Postgres's 63 bytes (two schemas
// that share so long a prefix only wake each other's nodes for nothing).
func (s *Store) triggerChannel() string {
	ch := "triggerd_triggers_" + s.schema
	return ch[:min(len(ch), 63)]
}

// Triggers returns every stored trigger, by project and name.
func (s *Store) Triggers(ctx context.Context) ([]StoredTrigger, error) {
	rows, err := s.pool.Query(ctx, `SELECT project, name, spec, created_at, updated_at, updated_by
		FROM triggers ORDER BY project, name`)
	if err != nil {
		return nil, fmt.Errorf("read stored triggers: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanStoredTrigger)
	if err != nil {
		return nil, fmt.Errorf("read stored triggers: %w", err)
	}
	return out, nil
}

// StoredTrigger returns the stored trigger of a project with the name, and
// false when there is none.
func (s *Store) StoredTrigger(ctx context.Context, project, name string) (StoredTrigger, bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT project, name, spec, created_at, updated_at, updated_by
		FROM triggers WHERE project = $1 AND name = $2`, project, name)
	if err != nil {
		return StoredTrigger{}, false, fmt.Errorf("read trigger %s/%s: %w", project, name, err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, scanStoredTrigger)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return StoredTrigger{}, false, nil
	case err != nil:
		return StoredTrigger{}, false, fmt.Errorf("read trigger %s/%s: %w", project, name, err)
	}
	return t, true, nil
}

func scanStoredTrigger(row pgx.CollectableRow) (StoredTrigger, error) {
	var t StoredTrigger
	err := row.Scan(&t.Project, &t.Name, &t.Spec, &t.CreatedAt, &t.UpdatedAt, &t.UpdatedBy)
	return t, err
}

// changeTrigger runs fn in a transaction that holds the trigger's lock,
// so that changes to one trigger are made, audited and announced one
// after the other, and tells the nodes once it commits.
func (s *Store) changeTrigger(ctx context.Context, project, name string, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "triggerd.trigger."+s.schema+"."+project+"/"+name); err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			return err
		}
		// Sent at the commit: nodes that hear it read the change.
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.triggerChannel(), project)
		return err
	})
}

// PutTrigger creates or replaces the stored trigger of a project with the
// name, records the change in the audit as made by actor, and tells every
// node. spec must have been checked (config.ParseTrigger). It reports
// whether the trigger was created.
func (s *Store) PutTrigger(ctx context.Context, project, name string, spec json.RawMessage, actor string) (created bool, err error) {
	err = s.changeTrigger(ctx, project, name, func(tx pgx.Tx) error {
		var before json.RawMessage
		err := tx.QueryRow(ctx, `SELECT spec FROM triggers WHERE project = $1 AND name = $2`, project, name).Scan(&before)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			created = true
		case err != nil:
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO triggers (project, name, spec, updated_by) VALUES ($1, $2, $3, $4)
			ON CONFLICT (project, name) DO UPDATE SET spec = excluded.spec, updated_at = now(), updated_by = excluded.updated_by`,
			project, name, string(spec), actor); err != nil {
			return err
		}
		action := ActionUpdate
		if created {
			action = ActionCreate
		}
		return audit(ctx, tx, project, name, action, before, spec, actor)
	})
	if err != nil {
		return false, fmt.Errorf("store trigger %s/%s: %w", project, name, err)
	}
	return created, nil
}

// DeleteTrigger deletes the stored trigger of a project with the name,
// records the change as made by actor, and cancels the trigger's staged
// rows, all in one transaction; it then tells every node. A row in flight
// finishes its attempt, whose outcome is not recorded: the row stays
// cancelled. It reports false when there was no such trigger, and how many
// rows it cancelled.
func (s *Store) DeleteTrigger(ctx context.Context, project, name, actor string) (found bool, cancelled int, err error) {
	var ids map[uuid.UUID]bool
	err = s.changeTrigger(ctx, project, name, func(tx pgx.Tx) error {
		var before json.RawMessage
		err := tx.QueryRow(ctx, `DELETE FROM triggers WHERE project = $1 AND name = $2 RETURNING spec`, project, name).Scan(&before)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		found = true
		if err := audit(ctx, tx, project, name, ActionDelete, before, nil, actor); err != nil {
			return err
		}
		ids, err = cancelDeleted(ctx, tx, project, name)
		return err
	})
	if err != nil {
		return false, 0, fmt.Errorf("delete trigger %s/%s: %w", project, name, err)
	}
	s.announce(ids)
	return found, len(ids), nil
}

// CancelDeleted cancels the staged rows of a trigger that is not stored,
// as DeleteTrigger does, and returns how many it cancelled. A node calls
// it when it drops a deleted trigger, for rows it staged before it knew.
func (s *Store) CancelDeleted(ctx context.Context, project, name string) (int, error) {
	ids, err := cancelDeleted(ctx, s.pool, project, name)
	if err != nil {
		return 0, fmt.Errorf("cancel the rows of deleted trigger %s/%s: %w", project, name, err)
	}
	s.announce(ids)
	return len(ids), nil
}

// DeletedRemark is the remark of the rows of a deleted trigger.
const DeletedRemark = "cancelled: the trigger was deleted"

// cancelDeleted cancels the staged rows of trigger name, unless a trigger
// of that name is stored, and returns their ids.
func cancelDeleted(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, project, name string) (map[uuid.UUID]bool, error) {
	rows, err := q.Query(ctx, `UPDATE event_logs SET status = 'cancelled', due_at = NULL, claimed_by = NULL,
			updated_at = now(), remark = $3
		WHERE status = 'staged' AND project = $1 AND trigger_name = $2
		  AND NOT EXISTS (SELECT 1 FROM triggers t WHERE t.project = $1 AND t.name = $2)
		RETURNING id`, project, name, DeletedRemark)
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, err
	}
	ids := make(map[uuid.UUID]bool, len(list))
	for _, id := range list {
		ids[id] = true
	}
	return ids, nil
}

// audit records a change of a stored trigger.
func audit(ctx context.Context, tx pgx.Tx, project, name, action string, before, after json.RawMessage, actor string) error {
	_, err := tx.Exec(ctx, `INSERT INTO trigger_audit (project, trigger_name, action, before, after, actor)
		VALUES ($1, $2, $3, $4, $5, $6)`, project, name, action, jsonOrNull(before), jsonOrNull(after), actor)
	return err
}

// jsonOrNull is a JSON value for a jsonb parameter, nil for NULL.
func jsonOrNull(b json.RawMessage) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// TriggerAudit returns the recorded changes of a project's trigger, oldest
// first.
func (s *Store) TriggerAudit(ctx context.Context, project, name string) ([]TriggerChange, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, project, trigger_name, action, before, after, actor, at
		FROM trigger_audit WHERE project = $1 AND trigger_name = $2 ORDER BY at, id`, project, name)
	if err != nil {
		return nil, fmt.Errorf("read the audit of trigger %s/%s: %w", project, name, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TriggerChange, error) {
		var c TriggerChange
		err := row.Scan(&c.ID, &c.Project, &c.Trigger, &c.Action, &c.Before, &c.After, &c.Actor, &c.At)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the audit of trigger %s/%s: %w", project, name, err)
	}
	return out, nil
}

// TriggerListener hears that the stored triggers changed.
type TriggerListener struct {
	conn *pgxpool.Conn
}

// ListenTriggers starts listening for changes of the stored triggers.
// Listen before reading them, so that no change committed in between is
// missed.
func (s *Store) ListenTriggers(ctx context.Context) (*TriggerListener, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen for trigger changes: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.triggerChannel()}.Sanitize()); err != nil {
		conn.Release()
		return nil, fmt.Errorf("listen for trigger changes: %w", err)
	}
	return &TriggerListener{conn: conn}, nil
}

// Wait returns when a change is announced, or with an error when ctx ends
// or the connection breaks.
func (l *TriggerListener) Wait(ctx context.Context) error {
	if _, err := l.conn.Conn().WaitForNotification(ctx); err != nil {
		return fmt.Errorf("wait for trigger changes: %w", err)
	}
	return nil
}

// Close stops listening and gives the connection back.
func (l *TriggerListener) Close() {
	_ = l.conn.Conn().Close(context.Background())
	l.conn.Release()
}
