package cdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/config"
)

// changedPrefix is the prefix of the logical message Publish writes.
const changedPrefix = "triggerd.triggers"

// CheckTriggers checks, on the database alias of project p, what Check
// checks at start for triggers, the project's triggers as they would be
// after a change: the tables and columns they name exist and can be
// captured. Its errors say what to fix; one that wraps ErrUnreachable
// says the database could not be reached.
func CheckTriggers(ctx context.Context, p *config.Project, alias string, triggers []*config.Trigger, opts Options) error {
	s, conn, err := connectWith(ctx, p, alias, triggers, opts)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = s.inspect(ctx, conn)
	return err
}

// connectWith makes a source of database alias of project p with
// triggers, not to run but to check them, and connects to its database.
func connectWith(ctx context.Context, p *config.Project, alias string, triggers []*config.Trigger, opts Options) (*Source, *pgx.Conn, error) {
	s, err := New(p, alias, nil, opts)
	if err != nil {
		return nil, nil, err
	}
	s.triggers = s.mine(triggers)
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return s, conn, nil
}

// ErrUnreachable is wrapped by an error of CheckTriggers that could not
// connect to the database, and so checked nothing.
var ErrUnreachable = errors.New("the database cannot be reached")

// Publish follows a committed change of the triggers of database alias of
// project p (triggers are all of the project's triggers after it): it adds
// to the database's publication the tables and operations they need, and
// writes a logical message to the database's WAL in the same transaction,
// under the publication's lock. It drops nothing: the session streaming
// the database makes the publication exact when it restarts.
//
// A change committed after Publish returns follows that message in the
// WAL, so pgoutput publishes it (it filters each change by the
// publication as of the change's position), and the streaming session
// routes it to the new triggers: at the message, the session reads the
// triggers again (Options.Refresh) and, when they changed, restarts from
// its confirmed position with them. Changes committed before Publish to a
// table that was not published are not captured.
func Publish(ctx context.Context, p *config.Project, alias string, triggers []*config.Trigger, opts Options) error {
	s, conn, err := connectWith(ctx, p, alias, triggers, opts)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	pl, err := s.inspect(ctx, conn)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := lockPublication(ctx, tx, s.db.Publication); err != nil {
			return err
		}
		if err := s.syncPublication(ctx, tx, pl, false); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, '')`, changedPrefix)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: publish the triggers' tables: %w", s.where(), err)
	}
	return nil
}
