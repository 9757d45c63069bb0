package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// The live feed of GET /v1/admin/events/stream, a stream of server-sent
// events: "ready" once the node listens for changes (a client reads what
// it shows then, and misses nothing after), then "changed" with the ids of
// rows created or changed since the last, at most every streamEvery.
const (
	streamEvery = 250 * time.Millisecond
	// streamIDs bounds the ids of one "changed"; the rest are counted in
	// its "more".
	streamIDs = 100
	// streamPing keeps idle streams open through proxies.
	streamPing = 15 * time.Second
	// streamWrite bounds each write to a stream's client.
	streamWrite = 10 * time.Second
	// feedIdle is how often the feed looks whether anyone still listens.
	feedIdle = 5 * time.Second
)

// feed hands the ids of changed rows, from the store's notifications (as
// for tail --follow), to the streams open on this node. It listens, on one
// connection of the store, only while a stream is open.
type feed struct {
	mu   sync.Mutex
	subs map[*streamSub]struct{}
	// listening is whether the feed listens now; wake asks Run to listen.
	listening bool
	wake      chan struct{}
	// done is closed when Run ends: the streams end too.
	done chan struct{}
}

// streamSub is one open stream's share of the feed.
type streamSub struct {
	mu    sync.Mutex
	ready bool // the feed listens: tell the client once
	ids   []uuid.UUID
	more  int
	// signal has a value when the sub has something to send.
	signal chan struct{}
}

func newFeed() *feed {
	return &feed{subs: make(map[*streamSub]struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// subscribe adds a stream to the feed.
func (f *feed) subscribe() *streamSub {
	sub := &streamSub{signal: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[sub] = struct{}{}
	if f.listening {
		sub.add(nil, true)
	}
	f.poke()
	return sub
}

// poke asks Run to listen, if it does not.
func (f *feed) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// unsubscribe removes a stream from the feed.
func (f *feed) unsubscribe(sub *streamSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, sub)
}

// broadcast hands ids to every stream; ready says the feed listens. It
// wakes the streams only when it has something to tell them.
func (f *feed) broadcast(ids []uuid.UUID, ready bool) (subscribers int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listening = ready || f.listening
	if len(ids) > 0 || ready {
		for sub := range f.subs {
			sub.add(ids, ready)
		}
	}
	return len(f.subs)
}

// stop records that the feed no longer listens.
func (f *feed) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listening = false
}

// add queues ids for the stream, and wakes it.
func (sub *streamSub) add(ids []uuid.UUID, ready bool) {
	sub.mu.Lock()
	sub.ready = sub.ready || ready
	room := max(streamIDs-len(sub.ids), 0)
	sub.ids = append(sub.ids, ids[:min(room, len(ids))]...)
	sub.more += len(ids) - min(room, len(ids))
	sub.mu.Unlock()
	select {
	case sub.signal <- struct{}{}:
	default:
	}
}

// take empties the stream's queue.
func (sub *streamSub) take() (ready bool, ids []uuid.UUID, more int) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	ready, ids, more = sub.ready, sub.ids, sub.more
	sub.ready, sub.ids, sub.more = false, nil, 0
	return ready, ids, more
}

// RunFeed feeds the streams of GET /v1/admin/events/stream until ctx
// ends; the streams open then end with it. Without it, streams send only
// pings.
func (s *Server) RunFeed(ctx context.Context) {
	defer close(s.feed.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.feed.wake:
		}
		if err := s.listenFeed(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("the console's live feed lost the store; listening again", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			s.feed.poke()
		}
	}
}

// listenFeed listens for changed rows and hands them to the streams,
// until none is open or ctx ends.
func (s *Server) listenFeed(ctx context.Context) error {
	defer s.feed.stop()
	l, err := s.store.Listen(ctx)
	if err != nil {
		return err
	}
	defer l.Close()
	if s.feed.broadcast(nil, true) == 0 {
		return nil
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, feedIdle)
		ids, err := l.Next(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
		case err != nil:
			return err
		}
		if s.feed.broadcast(ids, false) == 0 {
			return nil
		}
	}
}

// streamEvents answers GET /v1/admin/events/stream: the live feed, as
// server-sent events, until the client leaves or the node stops.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	if _, msg := queryFields(r, nil); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sub := s.feed.subscribe()
	defer s.feed.unsubscribe(sub)
	send := func(msg string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWrite))
		if _, err := fmt.Fprint(w, msg); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(": triggerd live feed\n\n") {
		return
	}
	ping := time.NewTicker(streamPing)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.feed.done:
			return
		case <-ping.C:
			if !send(": ping\n\n") {
				return
			}
			continue
		case <-sub.signal:
		}
		ready, ids, more := sub.take()
		var b strings.Builder
		if ready {
			b.WriteString("event: ready\ndata: {}\n\n")
		}
		if len(ids) > 0 || more > 0 {
			quoted := make([]string, len(ids))
			for i, id := range ids {
				quoted[i] = `"` + id.String() + `"`
			}
			fmt.Fprintf(&b, "event: changed\ndata: {\"ids\":[%s],\"more\":%d}\n\n", strings.Join(quoted, ","), more)
		}
		if b.Len() > 0 && !send(b.String()) {
			return
		}
		select { // at most one message every streamEvery
		case <-r.Context().Done():
			return
		case <-s.feed.done:
			return
		case <-time.After(streamEvery):
		}
	}
}
