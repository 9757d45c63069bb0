package cdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SlotState is the source's replication slot as its server reports it.
type SlotState struct {
	// Exists says the slot exists; the first session creates it.
	Exists bool
	// Active says a session streams the slot now (some node's).
	Active bool
	// Confirmed is the position the slot is confirmed up to, such as
	// 0/16B3748, and Lag how many bytes of WAL the server has written past
	// it; "" and 0 when the slot does not exist.
	Confirmed string
	Lag       int64
}

// Slot reads the state of the source's slot from its database, on a
// connection of its own that it closes. Bound ctx: a server that does not
// answer keeps it waiting until it ends.
func (s *Source) Slot(ctx context.Context) (SlotState, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return SlotState{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var st SlotState
	// A standby has no current WAL position of its own: what it has received stands in.
	err = conn.QueryRow(ctx, `SELECT active, coalesce(confirmed_flush_lsn::text, ''),
		coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
			confirmed_flush_lsn), 0)::int8
		FROM pg_replication_slots WHERE slot_name = $1`, s.db.Slot).Scan(&st.Active, &st.Confirmed, &st.Lag)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return SlotState{}, nil
	case err != nil:
		return SlotState{}, fmt.Errorf("%s: read the state of slot %s: %w", s.where(), s.db.Slot, err)
	}
	st.Exists = true
	return st, nil
}
