package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Lock is a session-level advisory lock in the store, held on a connection
// of its own: when the holder dies, its connection closes and the lock is
// free for another node.
type Lock struct {
	conn *pgxpool.Conn
	key  string
}

// TryLock takes the advisory lock named key, or returns nil when another
// session holds it.
func (s *Store) TryLock(ctx context.Context, key string) (*Lock, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("store %s: take lock %s: %w", s.where, key, err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&got); err != nil {
		conn.Release()
		return nil, fmt.Errorf("store %s: take lock %s: %w", s.where, key, err)
	}
	if !got {
		conn.Release()
		return nil, nil
	}
	return &Lock{conn: conn, key: key}, nil
}

// Check returns an error when the lock's connection no longer answers, so
// the lock may be lost.
func (l *Lock) Check(ctx context.Context) error {
	if err := l.conn.Ping(ctx); err != nil {
		return fmt.Errorf("lock %s: its connection broke: %w", l.key, err)
	}
	return nil
}

// Release frees the lock. A connection that cannot unlock is closed, which
// frees the lock as well.
func (l *Lock) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, l.key); err != nil {
		l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
}

// heldLockSQL tells whether a session holds the advisory lock TryLock takes
// for $1: a bigint key shows in pg_locks as its high and low 32 bits, with
// objsubid 1.
const heldLockSQL = `SELECT EXISTS (SELECT 1 FROM pg_locks
	WHERE locktype = 'advisory' AND granted AND objsubid = 1
	  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND (classid::int8 << 32 | objid::int8) = hashtextextended($1, 0))`

// LockHeld reports whether some session holds the lock named key, asking
// the store's database through q.
func LockHeld(ctx context.Context, q querier, key string) (bool, error) {
	var held bool
	if err := q.QueryRow(ctx, heldLockSQL, key).Scan(&held); err != nil {
		return false, fmt.Errorf("read the state of lock %s: %w", key, err)
	}
	return held, nil
}
