package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Rows staged again by the admin API (Redeliver) are due at once on every
// node, but a node's lanes look for rows of other nodes only at their
// poll. So Redeliver announces the triggers of the rows it stages on the
// channel stagedChannel, and every node's dispatcher listens there
// (ListenStaged) and has those triggers' lanes poll.

// stagedChannel is the channel of the store's staged announcements.
func (s *Store) stagedChannel() string { return s.channel + "_staged" }

// announceStaged tells the listening dispatchers that rows of triggers are
// due, in one NOTIFY per payload of at most notifyPayloadMax bytes. Like
// announce, it is best effort: a node that misses it finds the rows at its
// next poll.
func (s *Store) announceStaged(triggers map[Trigger]int) {
	var payloads []string
	var cur [][2]string
	size := 2
	flush := func() {
		if len(cur) > 0 {
			b, _ := json.Marshal(cur) // strings only: cannot fail
			payloads = append(payloads, string(b))
			cur, size = nil, 2
		}
	}
	for t := range triggers {
		b, _ := json.Marshal([2]string{t.Project, t.Name})
		if size+len(b)+1 > notifyPayloadMax {
			flush()
		}
		cur = append(cur, [2]string{t.Project, t.Name})
		size += len(b) + 1
	}
	flush()
	if len(payloads) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = s.pool.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) p`, s.stagedChannel(), payloads)
}

// StagedListener receives the triggers whose rows the admin API staged
// again, on a connection of its own, outside the store's pool.
type StagedListener struct {
	conn *pgx.Conn
}

// ListenStaged starts listening for rows staged again (see Redeliver).
func (s *Store) ListenStaged(ctx context.Context) (*StagedListener, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("store %s: listen for staged rows: %w", s.where, err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.stagedChannel()}.Sanitize()); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("store %s: listen for staged rows: %w", s.where, err)
	}
	return &StagedListener{conn: conn}, nil
}

// Next waits for the next announcement and returns the triggers it names.
func (l *StagedListener) Next(ctx context.Context) ([]Trigger, error) {
	n, err := l.conn.WaitForNotification(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for staged rows: %w", err)
	}
	var pairs [][2]string
	if err := json.Unmarshal([]byte(n.Payload), &pairs); err != nil {
		return nil, fmt.Errorf("an announcement of staged rows that is not a list of triggers: %w", err)
	}
	out := make([]Trigger, len(pairs))
	for i, p := range pairs {
		out[i] = Trigger{Project: p[0], Name: p[1]}
	}
	return out, nil
}

// Close stops listening and closes the connection.
func (l *StagedListener) Close() {
	_ = l.conn.Close(context.Background())
}
