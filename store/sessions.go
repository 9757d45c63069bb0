package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConsoleSession is a login session of Mission Control (table
// console_sessions). The store keys it by the SHA-256 of the session id
// the browser holds, never by the id itself.
type ConsoleSession struct {
	User string
	// CSRF is the token that every change made in the session carries.
	CSRF      string
	CreatedAt time.Time
	// ExpiresAt is the session's absolute end; SeenAt its last use.
	ExpiresAt time.Time
	SeenAt    time.Time
}

// ErrNoSession is Session's answer for a session that does not exist,
// ended, or went unused for too long.
var ErrNoSession = errors.New("no such session")

// sessionTouchEvery is how stale a session's last use may be before a read
// writes it again: most requests of a busy console then write nothing.
const sessionTouchEvery = time.Minute

// CreateSession stores a new session under idHash, and forgets the
// sessions that have ended (by expiry, or idle for longer than idle).
func (s *Store) CreateSession(ctx context.Context, idHash []byte, sess ConsoleSession, idle time.Duration) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM console_sessions WHERE expires_at <= $1 OR seen_at <= $2`,
			sess.CreatedAt, sess.CreatedAt.Add(-idle)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO console_sessions (id_hash, user_name, csrf, created_at, expires_at, seen_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
			idHash, sess.User, sess.CSRF, sess.CreatedAt, sess.ExpiresAt, sess.SeenAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("create a console session: %w", err)
	}
	return nil
}

// Session reads the session stored under idHash as of now: ErrNoSession
// when there is none, it has expired, or it was last used idle or more
// ago. It records the use, at most once every sessionTouchEvery.
func (s *Store) Session(ctx context.Context, idHash []byte, now time.Time, idle time.Duration) (ConsoleSession, error) {
	var sess ConsoleSession
	err := s.pool.QueryRow(ctx, `
		SELECT user_name, csrf, created_at, expires_at, seen_at FROM console_sessions WHERE id_hash = $1`, idHash).
		Scan(&sess.User, &sess.CSRF, &sess.CreatedAt, &sess.ExpiresAt, &sess.SeenAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ConsoleSession{}, ErrNoSession
	case err != nil:
		return ConsoleSession{}, fmt.Errorf("read a console session: %w", err)
	case !now.Before(sess.ExpiresAt) || !now.Before(sess.SeenAt.Add(idle)):
		return ConsoleSession{}, ErrNoSession
	}
	if now.Sub(sess.SeenAt) >= sessionTouchEvery {
		if _, err := s.pool.Exec(ctx, `UPDATE console_sessions SET seen_at = $2 WHERE id_hash = $1 AND seen_at < $2`,
			idHash, now); err != nil {
			return ConsoleSession{}, fmt.Errorf("record the use of a console session: %w", err)
		}
		sess.SeenAt = now
	}
	return sess, nil
}

// DeleteSession ends the session stored under idHash, if there is one.
func (s *Store) DeleteSession(ctx context.Context, idHash []byte) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("end a console session: %w", err)
	}
	return nil
}
