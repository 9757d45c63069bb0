package filewatch

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"

	"github.com/fsnotify/fsnotify"
)

// TestInboxHoldsWhatComesInOrderUpToItsLimit feeds an inbox as fsnotify
// does, and takes from it as the session's loop does.
func TestInboxHoldsWhatComesInOrderUpToItsLimit(t *testing.T) {
	t.Parallel()
	events, errs := make(chan fsnotify.Event), make(chan error)
	in := &inbox{ready: make(chan struct{}, 1), done: make(chan struct{}), limit: 3}
	go in.run(events, errs)
	ev := func(i int) fsnotify.Event { return fsnotify.Event{Name: fmt.Sprint(i), Op: fsnotify.Create} }
	names := func(evs []fsnotify.Event) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.Name)
		}
		return out
	}
	take := func(limit int, want []string, wantLost string) {
		t.Helper()
		// An error removing a watch the kernel had dropped is ignored;
		// once the inbox has it, it holds what came before.
		errs <- syscall.EINVAL
		<-in.ready
		got, lost, err := in.take(limit)
		if err != nil || lost != wantLost || !slices.Equal(names(got), want) {
			t.Fatalf("take(%d): %q, lost %q, err %v; want %q, lost %q", limit, names(got), lost, err, want, wantLost)
		}
	}

	// Five events for a limit of three: the last two are lost, and the
	// loss is told with the last event before it.
	for i := range 5 {
		events <- ev(i)
	}
	take(2, []string{"0", "1"}, "")
	events <- ev(5) // lost too: nothing is queued until the loss is taken
	take(2, []string{"2"}, lostInbox)
	events <- ev(6)
	take(10, []string{"6"}, "")

	// The kernel's overflow, after what came before it.
	events <- ev(7)
	errs <- fsnotify.ErrEventOverflow
	events <- ev(8)
	take(10, []string{"7"}, lostKernel)

	// Another error ends the session; so does the watcher closing.
	errs <- syscall.EBADF
	<-in.ready
	if _, _, err := in.take(10); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("take after EBADF: %v", err)
	}
	close(events)
	close(errs)
	<-in.done
}
