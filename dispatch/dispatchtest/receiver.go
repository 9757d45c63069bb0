package dispatchtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/triggerd/triggerd/internal/waittest"
)

// Receipt is one CloudEvent a Receiver got.
type Receipt struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Time string          `json:"time"`
	Data json.RawMessage `json:"data"`
	// Path is the request's URL path, which tells triggers apart.
	Path string `json:"-"`
	// At is when it arrived.
	At time.Time `json:"-"`
}

// Receiver is a real webhook that records the CloudEvents it gets.
type Receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []Receipt
	status int
}

// NewReceiver starts a receiver that answers 200 until told otherwise; the
// test's cleanup closes it.
func NewReceiver(tb testing.TB) *Receiver {
	r := &Receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var ev Receipt
		if err := json.Unmarshal(body, &ev); err != nil {
			tb.Errorf("receiver got a body that is not a CloudEvent: %s", body)
		}
		ev.Path, ev.At = req.URL.Path, time.Now()
		r.mu.Lock()
		r.got = append(r.got, ev)
		status := r.status
		r.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
		}
	}))
	tb.Cleanup(r.Close)
	return r
}

// SetStatus makes the receiver answer status from now on.
func (r *Receiver) SetStatus(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

// Receipts returns a copy of what arrived, in order of arrival.
func (r *Receiver) Receipts() []Receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Receipt(nil), r.got...)
}

// Count returns how many deliveries arrived.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// Wait waits until n deliveries arrived, and returns them.
func (r *Receiver) Wait(tb testing.TB, n int, within time.Duration) []Receipt {
	tb.Helper()
	var got []Receipt
	waittest.For(tb, within, func() error {
		if got = r.Receipts(); len(got) < n {
			return fmt.Errorf("%d deliveries, want %d", len(got), n)
		}
		return nil
	})
	return got
}

// Reset forgets what arrived so far.
func (r *Receiver) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = nil
}
