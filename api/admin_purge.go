package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/triggerd/triggerd/store"
)

// purgeBody is the body of POST /v1/admin/events/purge.
type purgeBody struct {
	// Before is required: events whose outcome is older go.
	Before   string   `json:"before"`
	Statuses []string `json:"statuses"`
	Project  string   `json:"project"`
	Type     string   `json:"type"`
	Trigger  string   `json:"trigger"`
}

// purgeable are the statuses a purge takes, and takes by default.
var purgeable = []store.Status{store.StatusProcessed, store.StatusFailed, store.StatusCancelled}

// purge deletes the events, with their attempts, that reached their
// outcome before the body's time, of its statuses (by default every
// outcome; never staged events) and matching its filters, in the batches
// of the retention sweep, and answers {"purged": rows}. As a bulk change,
// it goes on if the client goes away.
func (s *Server) purge(w http.ResponseWriter, r *http.Request) {
	var b purgeBody
	if !s.readJSON(w, r, &b) {
		return
	}
	p, msg := parsePurge(b)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	n, err := s.store.Purge(context.WithoutCancel(r.Context()), p, store.Deleting{})
	if n > 0 {
		s.log.Info("events purged through the admin API", "rows", n, "by", adminUser(r), "before", p.Before)
	}
	if err != nil {
		s.log.Error("a purge of events failed", "rows", n, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"purged": n,
			"error": fmt.Sprintf("the event store failed after %d events were purged; send the request again for the rest", n)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"purged": n})
}

// parsePurge reads a purge's body, and says what is wrong with it.
func parsePurge(b purgeBody) (store.Purge, string) {
	p := store.Purge{Filter: store.Filter{Project: b.Project, Type: b.Type, Trigger: b.Trigger}}
	if b.Before == "" {
		return p, "before is required: the time before which events reached their outcome, in RFC 3339, such as 2026-11-30T08:00:00Z"
	}
	t, err := time.Parse(time.RFC3339Nano, b.Before)
	if err != nil || !inRange(t) {
		return p, fmt.Sprintf("before: %s is not a time: write RFC 3339, such as 2026-11-30T08:00:00Z, from %s", quote(b.Before), timeRange)
	}
	p.Before = t
	for _, v := range b.Statuses {
		switch st := store.Status(v); {
		case st == store.StatusStaged:
			return p, "statuses: staged events are never purged: they are yet to be delivered (cancel them first)"
		case !st.Valid():
			return p, fmt.Sprintf("statuses: %s is not a status: use processed, failed or cancelled", quote(v))
		default:
			p.Statuses = append(p.Statuses, st)
		}
	}
	if len(p.Statuses) == 0 {
		p.Statuses = purgeable
	}
	return p, ""
}
