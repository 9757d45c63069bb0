package filewatch

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/fsnotify/fsnotify"
)

// inbox takes what an fsnotify watcher reports as it comes, and holds it
// until the session's loop takes it.
//
// The loop must not read the watcher's channels itself: fsnotify's reader
// goroutine sends on them, and may do so while it holds the lock that Add,
// Remove and Close take. (In v1.10.1's inotify backend, handleEvent holds
// it while it removes the watch of a folder moved away, and sends the
// error on Errors when the kernel has dropped that watch already, the
// folder being removed too.) A loop reading the channels and calling
// Remove meanwhile would wait for the lock forever, and the reader for
// the loop. The inbox's goroutine calls nothing in fsnotify and never
// waits for the loop, so every send of the reader completes, and so do the
// loop's calls.
//
// The inbox holds at most limit events. When the loop falls that far
// behind, it drops what comes, as the kernel's queue does when it
// overflows, until the loop has taken everything before the loss and
// compares the directory with the index.
type inbox struct {
	// ready has a value when there is something to take.
	ready chan struct{}
	// done is closed once the watcher's channels are closed and the
	// inbox's goroutine has ended.
	done  chan struct{}
	limit int

	mu     sync.Mutex
	events []fsnotify.Event
	lost   string // why events were lost after the last one in events, if they were
	err    error  // the first error that ends the session
}

// Why events were lost.
const (
	lostKernel = "kernel"   // the kernel's queue overflowed
	lostInbox  = "triggerd" // the inbox was full
)

// listen starts an inbox for the events of fw, holding at most limit.
func listen(fw *fsnotify.Watcher, limit int) *inbox {
	in := &inbox{ready: make(chan struct{}, 1), done: make(chan struct{}), limit: limit}
	go in.run(fw.Events, fw.Errors)
	return in
}

// run takes everything the watcher sends until it closes both channels.
func (in *inbox) run(events <-chan fsnotify.Event, errs <-chan error) {
	defer close(in.done)
	for events != nil || errs != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				in.fail(errors.New("the watcher closed"))
				continue
			}
			in.add(ev)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				in.fail(errors.New("the watcher closed"))
				continue
			}
			switch {
			case errors.Is(err, fsnotify.ErrEventOverflow):
				in.lose(lostKernel)
			case errors.Is(err, syscall.EINVAL):
				// Removing a watch the kernel had dropped already: the
				// folder is gone, and the event of its removal follows.
			default:
				in.fail(err)
			}
		}
	}
}

// add queues an event, unless events after the last one queued are lost.
func (in *inbox) add(ev fsnotify.Event) {
	in.mu.Lock()
	switch {
	case in.lost != "":
	case len(in.events) >= in.limit:
		in.lost = lostInbox
	default:
		in.events = append(in.events, ev)
	}
	in.mu.Unlock()
	in.signal()
}

// lose records that events after the last one queued are lost.
func (in *inbox) lose(why string) {
	in.mu.Lock()
	if in.lost == "" {
		in.lost = why
	}
	in.mu.Unlock()
	in.signal()
}

// fail records an error that ends the session.
func (in *inbox) fail(err error) {
	in.mu.Lock()
	if in.err == nil {
		in.err = err
	}
	in.mu.Unlock()
	in.signal()
}

// signal tells the loop there is something to take.
func (in *inbox) signal() {
	select {
	case in.ready <- struct{}{}:
	default:
	}
}

// take returns the first limit events queued; once it returns the last
// event before a loss, it says why events were lost after it, and queues
// events again. It returns an error that ends the session when there is
// one.
func (in *inbox) take(limit int) (events []fsnotify.Event, lost string, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.err != nil {
		return nil, "", in.err
	}
	n := min(len(in.events), limit)
	events = append(events, in.events[:n]...)
	in.events = in.events[n:]
	if len(in.events) > 0 {
		in.signal() // more to take
		return events, "", nil
	}
	in.events = nil // let the backing array go
	lost, in.lost = in.lost, ""
	return events, lost, nil
}

// queueLimit is how many events the kernel queues for a watcher before it
// overflows: fs.inotify.max_queued_events on Linux, and Linux's default
// where that cannot be read.
func queueLimit() int {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		return 16384
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 16384
	}
	return n
}
