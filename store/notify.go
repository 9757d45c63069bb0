package store

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
)

const (
	// notifyPayloadMax keeps NOTIFY payloads under Postgres's 8000-byte limit.
	notifyPayloadMax = 7900
	// notifyEvery spaces NOTIFYs out: each one is a transaction that takes
	// a database-wide lock, so ids are gathered for this long between them.
	notifyEvery = 50 * time.Millisecond
)

// announce queues the ids of rows a commit changed, for followers
// (triggerd tail --follow). NOTIFY is sent after the commit by notifyLoop,
// not inside it: a transaction that notifies holds a database-wide lock
// through its commit, which would serialise the batch writers.
func (s *Store) announce(ids map[uuid.UUID]bool) {
	if len(ids) == 0 {
		return
	}
	list := make([]uuid.UUID, 0, len(ids))
	for id, changed := range ids {
		if changed {
			list = append(list, id)
		}
	}
	s.changed <- list
}

// notifyLoop sends queued ids as NOTIFY payloads, at most once every
// notifyEvery, until ctx ends and the queue is drained.
func (s *Store) notifyLoop(ctx context.Context) {
	for {
		var ids []uuid.UUID
		select {
		case ids = <-s.changed:
		case <-ctx.Done():
			select {
			case ids = <-s.changed:
			default:
				return
			}
		}
		select {
		case <-time.After(notifyEvery):
		case <-ctx.Done():
		}
	more:
		for len(ids) < 100000 {
			select {
			case next := <-s.changed:
				ids = append(ids, next...)
			default:
				break more
			}
		}
		s.notify(ids)
	}
}

// notify sends one NOTIFY per payload of comma-separated ids. Followers
// are told on a best-effort basis: a failure is not retried.
func (s *Store) notify(ids []uuid.UUID) {
	var payloads []string
	var cur strings.Builder
	for _, id := range ids {
		if cur.Len()+37 > notifyPayloadMax {
			payloads = append(payloads, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(',')
		}
		cur.WriteString(id.String())
	}
	if cur.Len() > 0 {
		payloads = append(payloads, cur.String())
	}
	if len(payloads) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = s.pool.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) p`, s.channel, payloads)
}
