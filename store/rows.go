package store

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Status is where an event_logs row stands.
type Status string

// The statuses of an event_logs row.
const (
	// StatusStaged rows wait for their time or their next attempt.
	StatusStaged Status = "staged"
	// StatusProcessed rows were delivered: the webhook answered 2xx.
	StatusProcessed Status = "processed"
	// StatusFailed rows spent their attempts without a 2xx.
	StatusFailed Status = "failed"
	// StatusCancelled rows will not be delivered (their trigger is gone).
	StatusCancelled Status = "cancelled"
)

// Valid reports whether st is one of the statuses above.
func (st Status) Valid() bool {
	switch st {
	case StatusStaged, StatusProcessed, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// EventLog is one event_logs row: the delivery of one event to one trigger.
type EventLog struct {
	ID          uuid.UUID
	BatchID     uuid.UUID
	Project     string
	Trigger     string
	Type        string
	Payload     json.RawMessage // nil is JSON null
	EventTime   time.Time
	FireAt      time.Time
	Synchronous bool
	Status      Status
	Attempts    int
	RetryBase   int       // Attempts when the row was last redelivered (0 if never): the trigger's retries count from it
	DueAt       time.Time // zero once the row is no longer staged
	ClaimedBy   string
	Remark      string
	Response    json.RawMessage
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Outcome is what one attempt (or a decision without one) did to a staged row.
type Outcome struct {
	EventID uuid.UUID
	// Status is the row's new status: StatusStaged to retry later.
	Status Status
	// Attempts is the row's attempt count after this attempt.
	Attempts int
	// DueAt is when a row left staged may next be claimed.
	DueAt time.Time
	// Keep leaves the row claimed by this node (it retries in-process);
	// otherwise a staged row is released for any node to claim at DueAt.
	Keep     bool
	Remark   string
	Response json.RawMessage
	// Invocation is the attempt's log row; nil when no attempt was made.
	Invocation *Invocation
}

// Invocation is one invocation_logs row: one attempt to deliver an event.
type Invocation struct {
	ID        uuid.UUID
	EventID   uuid.UUID
	Attempt   int
	NodeID    string
	StartedAt time.Time
	Duration  time.Duration
	// RequestBody is the body sent, when the attempt logged a copy of it.
	RequestBody []byte
	// RequestFormat, when set, is the trigger format the body was sent in,
	// and RequestBody is not logged: the body is the event's row rendered
	// in that format with NodeID as its source (dispatch.AttemptBody).
	RequestFormat  string
	ResponseStatus int // 0 when no HTTP answer came
	ResponseBody   string
	Error          string
}
