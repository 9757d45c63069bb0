// Package supervise runs the sessions of an event source: again after each
// failure, with a backoff, and only while the node holds the source's lock.
package supervise

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// The backoff between sessions: it starts at minBackoff, doubles after each
// failure up to maxBackoff, and starts over after a session that lasted
// longer than calm.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
	calm       = time.Minute
)

// ErrRestart ends a session that is to run again at once, such as one
// whose settings changed: Sessions logs it at info level, without backoff.
var ErrRestart = errors.New("the session restarts")

// Sessions runs session until ctx ends, and again after each failure,
// after a jittered backoff, logging the failure with the message stopped.
// A session that ends with ErrRestart runs again at once.
func Sessions(ctx context.Context, log *slog.Logger, stopped string, session func(context.Context) error) {
	backoff := minBackoff
	for {
		began := time.Now()
		err := session(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrRestart) {
			log.Info("restarting", "why", err.Error())
			continue
		}
		if time.Since(began) > calm {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn(stopped, "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Standby calls take every retry until it reports the lock taken or fails,
// or ctx ends. It logs waiting when another node holds the lock, and took
// when this one takes it over.
func Standby(ctx context.Context, log *slog.Logger, retry time.Duration, waiting, took string, take func() (bool, error)) error {
	logged := false
	for {
		got, err := take()
		if err != nil {
			return err
		}
		if got {
			if logged {
				log.Info(took)
			}
			return nil
		}
		if !logged {
			log.Info(waiting)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
	}
}
