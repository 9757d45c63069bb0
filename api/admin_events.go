package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// eventRoutes adds the admin API's event routes.
func (s *Server) eventRoutes() {
	s.adminRoute("/events", s.listEvents, http.MethodGet)
	s.adminRoute("/events/stream", s.streamEvents, http.MethodGet)
	s.adminRoute("/events/redeliver", s.redeliverMatching, http.MethodPost)
	s.adminRoute("/events/cancel", s.cancelMatching, http.MethodPost)
	s.adminRoute("/events/purge", s.purge, http.MethodPost)
	s.adminRoute("/events/{id}", s.getEvent, http.MethodGet)
	s.adminRoute("/events/{id}/redeliver", s.redeliverOne, http.MethodPost)
	s.adminRoute("/events/{id}/cancel", s.cancelOne, http.MethodPost)
	s.adminRoute("/counts", s.counts, http.MethodGet)
	s.adminRoute("/activity", s.activity, http.MethodGet)
	s.adminRoute("/projects/{project}/events", s.triggerEvent, http.MethodPost)
	s.adminRoute("/nodes", s.nodes, http.MethodGet)
}

// Pages of events: limit rows each, by default defaultLimit, at most maxLimit.
const (
	defaultLimit = 50
	maxLimit     = 500
	// maxRemark bounds the text a remark filter looks for.
	maxRemark = 200
)

// filterFields are the filters of events, in the order messages list them.
var filterFields = []string{"project", "type", "trigger", "status", "since", "until", "id", "batch_id", "remark"}

// parseFilter reads the filters of events from fields (by filterFields
// name; an absent or empty one does not filter). It says what is wrong
// with a bad one, naming it.
func parseFilter(fields map[string]string) (store.EventQuery, string) {
	var q store.EventQuery
	q.Project, q.Type, q.Trigger, q.Remark = fields["project"], fields["type"], fields["trigger"], fields["remark"]
	if len(q.Remark) > maxRemark {
		return q, fmt.Sprintf("remark: look for at most %d bytes of text", maxRemark)
	}
	if st := store.Status(fields["status"]); st != "" && !st.Valid() {
		return q, notAStatus(fields["status"])
	}
	q.Status = store.Status(fields["status"])
	for _, f := range []struct {
		name string
		to   *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if v := fields[f.name]; v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil || !inRange(t) {
				return q, fmt.Sprintf("%s: %s is not a time: write RFC 3339, such as 2026-11-30T08:00:00Z, from %s", f.name, quote(v), timeRange)
			}
			*f.to = t
		}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return q, "until must be after since"
	}
	for _, f := range []struct {
		name string
		to   *uuid.UUID
	}{{"id", &q.ID}, {"batch_id", &q.BatchID}} {
		if v := fields[f.name]; v != "" {
			id, err := uuid.Parse(v)
			if err != nil || len(v) != 36 {
				return q, fmt.Sprintf("%s: %s is not an event id: write a UUID such as 01a211bf-dcad-7096-8be2-560a397d449c", f.name, quote(v))
			}
			*f.to = id
		}
	}
	return q, ""
}

// notAStatus says that v is no status, and which there are.
func notAStatus(v string) string {
	return fmt.Sprintf("status: %s is not a status: use staged, processed, failed or cancelled", quote(v))
}

// queryFields reads a request's query string: each parameter at most once,
// and only those in known.
func queryFields(r *http.Request, known []string) (map[string]string, string) {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Sprintf("the query string does not parse: %v", err)
	}
	fields := make(map[string]string, len(values))
	for name, vs := range values {
		switch {
		case len(known) == 0:
			return nil, fmt.Sprintf("unknown parameter %s: this takes no parameters", quote(name))
		case !slices.Contains(known, name):
			return nil, fmt.Sprintf("unknown parameter %s: this takes %s", quote(name), strings.Join(known, ", "))
		case len(vs) > 1:
			return nil, fmt.Sprintf("parameter %s appears %d times: give it once", quote(name), len(vs))
		}
		fields[name] = vs[0]
	}
	return fields, ""
}

// encodeCursor and decodeCursor turn the id a page ends at into the
// opaque cursor of the next page, and back.
func encodeCursor(id uuid.UUID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

func decodeCursor(c string) (uuid.UUID, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 16 {
		return uuid.Nil, false
	}
	return uuid.UUID(b), true
}

// listEvents answers a page of events matching the filters, newest first.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	fields, msg := queryFields(r, append(slices.Clone(filterFields), "limit", "cursor"))
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	q, msg := parseFilter(fields)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	limit := defaultLimit
	if v := fields["limit"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %s is not a page size: use a whole number from 1 to %d", quote(v), maxLimit))
			return
		}
		limit = n
	}
	var before *uuid.UUID
	if v := fields["cursor"]; v != "" {
		id, ok := decodeCursor(v)
		if !ok {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("cursor: %s is not a cursor this API gave: pass the next_cursor of the page before, as it was", quote(v)))
			return
		}
		before = &id
	}
	page, err := s.store.ListEvents(r.Context(), q, before, limit)
	if err != nil {
		s.storeFailed(w, r, "listing events", err)
		return
	}
	out := map[string]any{"events": eventsJSON(page.Events), "next_cursor": nil}
	if page.Next != nil {
		out["next_cursor"] = encodeCursor(*page.Next)
	}
	writeJSON(w, http.StatusOK, out)
}

// eventID reads the {id} of a path; it answers 400 and reports false when
// it is not a UUID.
func eventID(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	v := mux.Vars(r)["id"]
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s is not an event id: write a UUID such as 01a211bf-dcad-7096-8be2-560a397d449c", quote(v)))
		return uuid.Nil, false
	}
	return id, true
}

// getEvent answers one event with its attempts, their bodies included.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	id, ok := eventID(w, r)
	if !ok {
		return
	}
	e, err := s.store.Event(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNoEvent):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no event %s", id))
	case err != nil:
		s.storeFailed(w, r, "reading an event", err)
	default:
		writeJSON(w, http.StatusOK, eventJSON(e, true))
	}
}

// redeliverOne stages one processed, failed or cancelled event again.
func (s *Server) redeliverOne(w http.ResponseWriter, r *http.Request) {
	s.changeOne(w, r, "redelivered", s.store.Redeliver, func(st store.Status) string {
		if st == store.StatusStaged {
			return "is staged already: it will be delivered (redeliver takes processed, failed and cancelled events)"
		}
		return ""
	})
}

// cancelOne cancels one staged event.
func (s *Server) cancelOne(w http.ResponseWriter, r *http.Request) {
	s.changeOne(w, r, "cancelled", s.store.Cancel, func(st store.Status) string {
		if st != store.StatusStaged {
			return fmt.Sprintf("is %s: only staged events can be cancelled", st)
		}
		return ""
	})
}

// changeFunc redelivers or cancels the rows matching a query.
type changeFunc func(context.Context, store.EventQuery, string) (store.Changed, error)

// changeOne applies change to the event of the path and answers
// {did: 1}: 404 when there is no such event, 409 when refusal, given its
// status, says why the change does not apply to it.
func (s *Server) changeOne(w http.ResponseWriter, r *http.Request, did string, change changeFunc, refusal func(store.Status) string) {
	id, ok := eventID(w, r)
	if !ok {
		return
	}
	done, err := change(context.WithoutCancel(r.Context()), store.EventQuery{ID: id}, did+" by "+adminUser(r))
	if err != nil {
		s.storeFailed(w, r, did+" an event", err)
		return
	}
	if done.Rows == 0 {
		e, err := s.store.Event(r.Context(), id)
		switch {
		case errors.Is(err, store.ErrNoEvent):
			writeError(w, http.StatusNotFound, fmt.Sprintf("no event %s", id))
		case err != nil:
			s.storeFailed(w, r, "reading an event", err)
		case refusal(e.Status) != "":
			writeError(w, http.StatusConflict, fmt.Sprintf("event %s %s", id, refusal(e.Status)))
		default: // its status changed meanwhile
			writeError(w, http.StatusConflict, fmt.Sprintf("event %s changed while it was being %s: read it and try again", id, did))
		}
		return
	}
	s.changed(did, done)
	writeJSON(w, http.StatusOK, map[string]int{did: done.Rows})
}

// filterBody is the body of a bulk redelivery or cancellation: the
// filters of events, as the list takes them.
type filterBody struct {
	Project string `json:"project"`
	Type    string `json:"type"`
	Trigger string `json:"trigger"`
	Status  string `json:"status"`
	Since   string `json:"since"`
	Until   string `json:"until"`
	ID      string `json:"id"`
	BatchID string `json:"batch_id"`
	Remark  string `json:"remark"`
	// DryRun asks how many events the change would take, and changes none.
	DryRun bool `json:"dry_run"`
}

// readFilter reads a filterBody; it answers the request and reports false
// when the body is bad, or filters nothing.
func (s *Server) readFilter(w http.ResponseWriter, r *http.Request) (q store.EventQuery, dryRun, ok bool) {
	var b filterBody
	if !s.readJSON(w, r, &b) {
		return store.EventQuery{}, false, false
	}
	q, msg := parseFilter(map[string]string{"project": b.Project, "type": b.Type, "trigger": b.Trigger, "status": b.Status,
		"since": b.Since, "until": b.Until, "id": b.ID, "batch_id": b.BatchID, "remark": b.Remark})
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return q, false, false
	}
	if q.IsZero() {
		writeError(w, http.StatusBadRequest, "give at least one filter ("+strings.Join(filterFields, ", ")+"): a change of every event is not taken")
		return q, false, false
	}
	return q, b.DryRun, true
}

// redeliverMatching stages again every processed, failed or cancelled event
// matching the body's filters, and answers how many.
func (s *Server) redeliverMatching(w http.ResponseWriter, r *http.Request) {
	q, dryRun, ok := s.readFilter(w, r)
	if !ok {
		return
	}
	if q.Status == store.StatusStaged {
		writeError(w, http.StatusBadRequest, "status: staged events are delivered already: redeliver takes processed, failed and cancelled events")
		return
	}
	if dryRun {
		s.countMatching(w, r, q, s.store.Redeliverable)
		return
	}
	s.changeMatching(w, r, q, "redelivered", s.store.Redeliver)
}

// cancelMatching cancels every staged event matching the body's filters,
// and answers how many.
func (s *Server) cancelMatching(w http.ResponseWriter, r *http.Request) {
	q, dryRun, ok := s.readFilter(w, r)
	if !ok {
		return
	}
	if q.Status != "" && q.Status != store.StatusStaged {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("status: only staged events can be cancelled, not %s ones (leave status out)", q.Status))
		return
	}
	if dryRun {
		s.countMatching(w, r, q, s.store.Cancellable)
		return
	}
	s.changeMatching(w, r, q, "cancelled", s.store.Cancel)
}

// countMatching answers a dry run of a bulk change: {"matching": rows}.
func (s *Server) countMatching(w http.ResponseWriter, r *http.Request, q store.EventQuery, count func(context.Context, store.EventQuery) (int, error)) {
	n, err := count(r.Context(), q)
	if err != nil {
		s.storeFailed(w, r, "counting matching events", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"matching": n})
}

// changeMatching applies change to every event matching q, and answers
// {did: rows}. The change goes on if the client goes away; a store failure
// midway leaves the batches done so far done, and the answer says how many.
func (s *Server) changeMatching(w http.ResponseWriter, r *http.Request, q store.EventQuery, did string, change changeFunc) {
	done, err := change(context.WithoutCancel(r.Context()), q, did+" by "+adminUser(r))
	s.changed(did, done)
	if err != nil {
		s.log.Error("a bulk change of events failed", "change", did, "rows", done.Rows, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{did: done.Rows,
			"error": fmt.Sprintf("the event store failed after %d events were %s; send the request again for the rest", done.Rows, did)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{did: done.Rows})
}

// changed logs a change of events and wakes this node's lanes for the rows
// staged again (the store's announcement wakes every node's too, later).
func (s *Server) changed(did string, done store.Changed) {
	if done.Rows == 0 {
		return
	}
	triggers := make([]store.Trigger, 0, len(done.Triggers))
	for t := range done.Triggers {
		triggers = append(triggers, t)
	}
	s.log.Info("events "+did+" through the admin API", "rows", done.Rows, "triggers", len(triggers))
	if did == "redelivered" {
		s.disp.Wake(triggers)
	}
}

// triggerEvent takes a custom event from the admin, with the answers of
// the queue, without the type's rule.
func (s *Server) triggerEvent(w http.ResponseWriter, r *http.Request) {
	s.takeEvent(w, r, nil)
}

// countsSince is how far back counts looks by default.
const countsSince = 24 * time.Hour

// counts answers how many events each trigger has in each status: every
// staged one, and the others since the since parameter (24 hours ago by
// default; "all" for every row, which reads the whole table); only the
// statuses of the status parameter (a comma list), when it is given.
func (s *Server) counts(w http.ResponseWriter, r *http.Request) {
	fields, msg := queryFields(r, []string{"project", "since", "status"})
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	var statuses []store.Status
	if v := fields["status"]; v != "" {
		for name := range strings.SplitSeq(v, ",") {
			if st := store.Status(name); !st.Valid() {
				writeError(w, http.StatusBadRequest, notAStatus(name)+" (a list takes commas: staged,failed)")
				return
			}
			statuses = append(statuses, store.Status(name))
		}
	}
	since := time.Now().Add(-countsSince).UTC().Truncate(time.Second)
	switch v := fields["since"]; v {
	case "":
	case "all":
		since = time.Time{}
	default:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil || !inRange(t) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since: %s is not a time: write RFC 3339, such as 2026-11-30T08:00:00Z, or all", quote(v)))
			return
		}
		since = t
	}
	counts, err := s.store.Counts(r.Context(), fields["project"], since, statuses...)
	if err != nil {
		s.storeFailed(w, r, "counting events", err)
		return
	}
	type row struct {
		Project   string `json:"project"`
		Trigger   string `json:"trigger"`
		Staged    int64  `json:"staged"`
		Processed int64  `json:"processed"`
		Failed    int64  `json:"failed"`
		Cancelled int64  `json:"cancelled"`
	}
	var rows []*row
	byTrigger := make(map[store.Trigger]*row)
	get := func(project, trigger string) *row {
		k := store.Trigger{Project: project, Name: trigger}
		if byTrigger[k] == nil {
			byTrigger[k] = &row{Project: project, Trigger: trigger}
			rows = append(rows, byTrigger[k])
		}
		return byTrigger[k]
	}
	for _, p := range s.cfg.Projects {
		if fields["project"] == "" || fields["project"] == p.ID {
			for _, t := range p.Triggers {
				get(p.ID, t.Name)
			}
		}
	}
	for _, c := range counts {
		rw := get(c.Project, c.Trigger)
		switch c.Status {
		case store.StatusStaged:
			rw.Staged = c.Rows
		case store.StatusProcessed:
			rw.Processed = c.Rows
		case store.StatusFailed:
			rw.Failed = c.Rows
		case store.StatusCancelled:
			rw.Cancelled = c.Rows
		}
	}
	out := map[string]any{"since": nil, "triggers": rows}
	if !since.IsZero() {
		out["since"] = since.Format(time.RFC3339Nano)
	}
	if rows == nil {
		out["triggers"] = []*row{}
	}
	writeJSON(w, http.StatusOK, out)
}

// activityWindow is how far back activity looks by default, and at most.
const (
	activityWindow    = time.Hour
	maxActivityWindow = 24 * time.Hour
)

// activity answers how many rows of each trigger were processed and
// failed in each minute, among the rows created since the since
// parameter (an hour ago by default, at most a day).
func (s *Server) activity(w http.ResponseWriter, r *http.Request) {
	fields, msg := queryFields(r, []string{"project", "since"})
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	now := time.Now()
	since := now.Add(-activityWindow).UTC().Truncate(time.Minute)
	if v := fields["since"]; v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil || !inRange(t) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since: %s is not a time: write RFC 3339, such as 2026-11-30T08:00:00Z", quote(v)))
			return
		}
		if now.Sub(t) > maxActivityWindow {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since: %s is more than %s ago: activity looks back a day at most", quote(v), maxActivityWindow))
			return
		}
		since = t
	}
	rows, err := s.store.Activity(r.Context(), fields["project"], since)
	if err != nil {
		s.storeFailed(w, r, "counting activity", err)
		return
	}
	minutes := make([]map[string]any, len(rows))
	for i, a := range rows {
		minutes[i] = map[string]any{"project": a.Project, "trigger": a.Trigger, "minute": jsonTime(a.Minute),
			"processed": a.Processed, "failed": a.Failed}
	}
	writeJSON(w, http.StatusOK, map[string]any{"since": jsonTime(since), "minutes": minutes})
}

// storeFailed answers a store failure with 503, naming nothing of the
// store; the error goes to the log.
func (s *Server) storeFailed(w http.ResponseWriter, r *http.Request, doing string, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Error(doing+" failed", "err", err)
	writeError(w, http.StatusServiceUnavailable, "the event store did not answer; try again (the node's log says why)")
}

// eventJSON is an event as the admin API shows it; bodies adds its
// attempts' request and response bodies.
func eventJSON(e store.EventWithAttempts, bodies bool) map[string]any {
	attempts := make([]map[string]any, len(e.Invocations))
	for i, in := range e.Invocations {
		a := map[string]any{
			"id": in.ID, "attempt": in.Attempt, "node_id": in.NodeID, "started_at": jsonTime(in.StartedAt),
			"duration_ms": float64(in.Duration) / float64(time.Millisecond), "response_status": nil, "error": nil,
		}
		if in.ResponseStatus != 0 {
			a["response_status"] = in.ResponseStatus
		}
		if in.Error != "" {
			a["error"] = in.Error
		}
		if bodies {
			// Its only error is json.Marshal's of a string, which has none.
			request, _ := dispatch.AttemptBody(&e.EventLog, &in)
			a["request_body"], a["response_body"] = string(request), in.ResponseBody
		}
		attempts[i] = a
	}
	return map[string]any{
		"id": e.ID, "batch_id": e.BatchID, "project": e.Project, "trigger": e.Trigger, "type": e.Type,
		"data": rawOrNull(e.Payload), "event_time": jsonTime(e.EventTime), "fire_at": jsonTime(e.FireAt),
		"is_synchronous": e.Synchronous, "status": e.Status, "attempt_count": e.Attempts, "retry_base": e.RetryBase,
		"due_at": timeOrNull(e.DueAt), "claimed_by": stringOrNull(e.ClaimedBy), "remark": stringOrNull(e.Remark),
		"response": rawOrNull(e.Response), "created_at": jsonTime(e.CreatedAt), "updated_at": jsonTime(e.UpdatedAt),
		"attempts": attempts,
	}
}

// eventsJSON is a list of events as the admin API shows them.
func eventsJSON(events []store.EventWithAttempts) []map[string]any {
	out := make([]map[string]any, len(events))
	for i, e := range events {
		out[i] = eventJSON(e, false)
	}
	return out
}

// jsonTime writes a time in RFC 3339, UTC; a year past 9999, which
// encoding/json refuses, is written with more digits.
func jsonTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func timeOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return jsonTime(t)
}

func stringOrNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func rawOrNull(b json.RawMessage) json.RawMessage {
	if b == nil {
		return json.RawMessage("null")
	}
	return b
}

// nodes answers the nodes that share the store, from their heartbeats: a
// node is alive while its last heartbeat is at most three intervals old.
func (s *Server) nodes(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.store.Nodes(r.Context())
	if err != nil {
		s.storeFailed(w, r, "listing nodes", err)
		return
	}
	out := make([]map[string]any, len(nodes))
	for i, n := range nodes {
		out[i] = map[string]any{"id": n.ID, "version": n.Version, "started_at": jsonTime(n.StartedAt),
			"last_heartbeat": jsonTime(n.Heartbeat), "rows_held": n.RowsHeld, "alive": n.Age <= 3*store.HeartbeatEvery}
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}
