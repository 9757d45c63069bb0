package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A node holding a lock shows that it is live by a query on the session
// holding it every RenewEvery. A node that wants the lock ends the
// holder's session (fences it) once that session has been idle for longer
// than FenceAfter: its node is frozen or cut off, and would otherwise keep
// the lock, and stall what it guards, for as long as its connection stays
// open. FenceAfter is well above RenewEvery, so that a live holder that is
// slow for a few seconds is not fenced.
const (
	RenewEvery = time.Second
	FenceAfter = 5 * time.Second
)

// Fenced describes the session of a lock's holder that TakeLock ended.
type Fenced struct {
	PID    uint32        // the holder's backend
	Client string        // its client's address and port, or "local" for a Unix socket
	Idle   time.Duration // how long it had been idle
}

// TakeLock tries to take the session-level advisory lock named key on the
// session of q, which must be one connection (not a pool). When another
// session holds the lock and has been idle for longer than FenceAfter, it
// ends that session and waits a moment for the lock; fenced then says
// whom it ended.
func TakeLock(ctx context.Context, q Querier, key string) (got bool, fenced *Fenced, err error) {
	if got, err = tryLock(ctx, q, key); got || err != nil {
		return got, nil, err
	}
	if fenced, err = fence(ctx, q, key); fenced == nil || err != nil {
		return false, nil, err
	}
	// The lock is free once the ended backend has exited: moments later.
	// Another node fencing at the same time may take it first. A backend
	// blocked on sending its farewell to a client that stopped reading
	// exits only on a second signal, hence the fence again.
	deadline := time.Now().Add(2 * time.Second)
	for !got && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false, fenced, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if got, err = tryLock(ctx, q, key); got || err != nil {
			return got, fenced, err
		}
		if _, err = fence(ctx, q, key); err != nil {
			return false, fenced, err
		}
	}
	return got, fenced, nil
}

// tryLock takes the advisory lock named key on the session of q, if free.
func tryLock(ctx context.Context, q Querier, key string) (bool, error) {
	var got bool
	if err := q.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&got); err != nil {
		return false, fmt.Errorf("take lock %s: %w", key, err)
	}
	return got, nil
}

// holderWhere picks the row of pg_locks l of the session holding the
// advisory lock TakeLock takes for $1: a bigint key shows in pg_locks as
// its high and low 32 bits, with objsubid 1.
const holderWhere = `l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND (l.classid::int8 << 32 | l.objid::int8) = hashtextextended($1, 0)`

// fenceSQL ends the session holding the lock named $1 when it has been idle
// (outside a statement, in a transaction or not) for longer than $2
// seconds, by the database's clock. Its state shows only to the same role
// or to pg_read_all_stats, hence the second column.
const fenceSQL = `SELECT a.pid, a.state IS NOT NULL,
	coalesce(extract(epoch FROM now() - a.state_change), 0)::float8,
	coalesce(host(a.client_addr) || ':' || a.client_port, 'local'),
	CASE WHEN a.state LIKE 'idle%' AND a.state_change < now() - make_interval(secs => $2)
	     THEN pg_terminate_backend(a.pid) ELSE false END
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE ` + holderWhere

// fence ends the session holding the lock named key when it has been idle
// for longer than FenceAfter, and says whom it ended (nil when none).
func fence(ctx context.Context, q Querier, key string) (*Fenced, error) {
	var f Fenced
	var visible, ended bool
	var idle float64
	err := q.QueryRow(ctx, fenceSQL, key, FenceAfter.Seconds()).Scan(&f.PID, &visible, &idle, &f.Client, &ended)
	switch {
	case errors.Is(err, pgx.ErrNoRows): // released meanwhile
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("fence the holder of lock %s: %w (ending another session takes the same role, or a role granted pg_signal_backend)", key, err)
	case !visible:
		return nil, fmt.Errorf("cannot tell whether the holder of lock %s is live: its session's state is hidden from this role (connect every node as the same role, or grant this one pg_read_all_stats)", key)
	case !ended:
		return nil, nil
	}
	f.Idle = time.Duration(idle * float64(time.Second)).Round(time.Millisecond)
	return &f, nil
}

// Lock is a session-level advisory lock in the store, held on a connection
// of its own: when the holder dies, its connection closes and the lock is
// free for another node. While held, a query on that connection every
// RenewEvery shows the others that the holder is live.
type Lock struct {
	conn *pgxpool.Conn
	key  string
	// Fenced is the session this lock was taken from, if its holder had
	// stopped renewing it.
	Fenced *Fenced

	stop context.CancelFunc
	done chan struct{}

	mu      sync.Mutex
	renewed time.Time // the last successful renewal
	err     error     // why renewing failed
}

// TryLock takes the advisory lock named key, fencing a holder that stopped
// renewing it (see TakeLock), or returns nil when another session holds it.
// The lock is renewed until Release or until ctx ends.
func (s *Store) TryLock(ctx context.Context, key string) (*Lock, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("store %s: take lock %s: %w", s.where, key, err)
	}
	got, fenced, err := TakeLock(ctx, conn, key)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("store %s: %w", s.where, err)
	}
	if !got {
		conn.Release()
		return nil, nil
	}
	rctx, stop := context.WithCancel(ctx)
	l := &Lock{conn: conn, key: key, Fenced: fenced, stop: stop, done: make(chan struct{}), renewed: time.Now()}
	go l.renew(rctx)
	return l, nil
}

// renew queries the lock's connection every RenewEvery until ctx ends or
// a query fails.
func (l *Lock) renew(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, FenceAfter)
		err := l.conn.Ping(pctx)
		cancel()
		l.mu.Lock()
		if err != nil && ctx.Err() == nil {
			l.err = err
		}
		if err == nil {
			l.renewed = time.Now()
		}
		l.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Check returns an error when the lock may be lost: its connection broke
// (another node may have ended it), or it was not renewed for longer than
// FenceAfter (this process was frozen, or cut off from the store). It does
// not wait for the store.
func (l *Lock) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return fmt.Errorf("lock %s: its connection broke: %w", l.key, l.err)
	}
	if since := time.Since(l.renewed); since > FenceAfter {
		return fmt.Errorf("lock %s: not renewed for %s, so another node may have taken it", l.key, since.Round(time.Millisecond))
	}
	return nil
}

// Release frees the lock. A connection that cannot unlock is closed, which
// frees the lock as well.
func (l *Lock) Release() {
	l.stop()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, l.key); err != nil {
		l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
}

// heldLockSQL tells whether a session holds the advisory lock named $1.
const heldLockSQL = `SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE ` + holderWhere + `)`

// LockHeld reports whether some session holds the lock named key, asking
// the store's database through q.
func LockHeld(ctx context.Context, q Querier, key string) (bool, error) {
	var held bool
	if err := q.QueryRow(ctx, heldLockSQL, key).Scan(&held); err != nil {
		return false, fmt.Errorf("read the state of lock %s: %w", key, err)
	}
	return held, nil
}
