// Package api is triggerd's HTTP interface: the queue endpoint that custom
// events arrive on, the health and readiness probes, and the admin API
// (/v1/admin/..., admin.go).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// Server answers the HTTP API. Build it with New.
type Server struct {
	cfg    *config.Config
	disp   *dispatch.Dispatcher
	keys   map[string]*auth.Keyring
	store  *store.Store
	log    *slog.Logger
	router *mux.Router
	// admin checks admin logins and tokens (see adminRoute); nil without
	// an admin section.
	admin *adminAuth
	// triggers serves the trigger routes (see UseTriggers).
	triggers Triggers
	// slots reads the databases' slots for GET /v1/admin/sources (see
	// UseSources).
	slots SlotReader
	// feed hands changed rows to the streams of the live feed (RunFeed).
	feed *feed
	// requests counts the answers (see UseMetrics); nil counts none.
	requests *prometheus.CounterVec
}

// New builds the API over a dispatcher and its store. keys holds each
// project's keyring; the store answers /readyz and the admin API; log
// defaults to slog.Default().
func New(cfg *config.Config, disp *dispatch.Dispatcher, keys map[string]*auth.Keyring,
	st *store.Store, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, disp: disp, keys: keys, store: st, log: log, router: mux.NewRouter(), feed: newFeed()}
	s.adminRoutes()
	s.consoleRoutes()
	for _, route := range []string{"/v1/api/{project}/event-triggers/queue", "/v1/api/{project}/eventing/queue"} {
		s.router.HandleFunc(route, s.queue).Methods(http.MethodPost)
	}
	s.router.HandleFunc("/healthz", s.healthz).Methods(http.MethodGet, http.MethodHead)
	s.router.HandleFunc("/readyz", s.readyz).Methods(http.MethodGet, http.MethodHead)
	// mux would answer a path with "..", "." or "//" with a redirect to the
	// path cleaned, and no body; such a path is no endpoint of the API.
	s.router.SkipClean(true)
	s.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.admin != nil && strings.HasPrefix(r.URL.Path, adminPrefix+"/") {
			adminNotFound(w, r)
			return
		}
		hint := "events are queued with POST /v1/api/{project}/event-triggers/queue"
		if p := r.URL.Path; path.Clean(p) != p {
			hint = `paths are taken as sent: ".", "..", "//" and a trailing slash are not resolved; ` + hint
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s (%s)", clip(r.Method), quote(r.URL.EscapedPath()), hint))
	})
	s.router.MethodNotAllowedHandler = http.HandlerFunc(methodNotAllowed)
	return s
}

// methodNotAllowed answers a method a path does not take.
func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", clip(r.Method), quote(r.URL.EscapedPath())))
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.requests != nil {
		s.serveCounted(w, r)
		return
	}
	s.router.ServeHTTP(w, r)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ready(ctx); err != nil {
		s.log.Warn("not ready", "err", err)
		writeError(w, http.StatusServiceUnavailable, "not ready: the event store cannot take events; the node's log says why")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// queue takes one custom event: checks the project, the body, the type's
// rule and the caller's token, then stages it or, for a synchronous event,
// delivers it and answers with the webhook's response.
func (s *Server) queue(w http.ResponseWriter, r *http.Request) {
	s.takeEvent(w, r, func(p *config.Project, eventType string) (int, string) {
		return s.authorize(r, p, eventType)
	})
}

// takeEvent takes one custom event for the project the path names, as
// queue describes; authorize applies the type's rule, and is nil for the
// admin API, which bypasses it.
func (s *Server) takeEvent(w http.ResponseWriter, r *http.Request, authorize func(*config.Project, string) (int, string)) {
	projectID := mux.Vars(r)["project"]
	p := s.cfg.Project(projectID)
	if p == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown project %s", quote(projectID)))
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, err := parseQueueRequest(body, time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if config.IsReservedType(req.Type) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("type %s is reserved for database and file events, which triggerd raises itself; queue custom events with another type", quote(req.Type)))
		return
	}
	if authorize != nil {
		if status, msg := authorize(p, req.Type); status != 0 {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="triggerd"`)
			}
			writeError(w, status, msg)
			return
		}
	}
	ev := dispatch.Event{Project: p.ID, Type: req.Type, Data: req.Data, Time: req.Time, FireAt: req.FireAt}
	if req.Synchronous {
		s.call(w, r, ev)
		return
	}
	// A stopping dispatcher still stores the event, for another node or a
	// restart to deliver: that is a success for the caller.
	id, _, err := s.disp.Enqueue(r.Context(), ev)
	if err != nil && !errors.Is(err, dispatch.ErrStopping) {
		s.notStored(w, ev, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id})
}

// readBody reads a request's body, up to body_limit. It answers the
// request and reports false when the body is larger (413) or cannot be read.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.BodyLimit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than the %d-byte limit (body_limit in the config)", tooBig.Limit))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("reading the body failed: %v", err))
		return nil, false
	}
	return body, true
}

// notStored answers an event the store did not take: 400 when it refused
// the event's content, which no retry changes, else 503 (an outage). The
// error, which names the store and carries its SQL error, goes to the log
// only.
func (s *Server) notStored(w http.ResponseWriter, ev dispatch.Event, err error) {
	s.log.Error("staging an event failed", "project", ev.Project, "type", ev.Type, "err", err)
	if errors.Is(err, dispatch.ErrUnstorable) {
		writeError(w, http.StatusBadRequest, "the event cannot be stored: the event store refused its type or data as sent, so sending it again will not help (the node's log has the store's reason)")
		return
	}
	writeError(w, http.StatusServiceUnavailable, "the event was not stored: the event store did not take it; try again")
}

// call delivers a synchronous event and answers with its result.
func (s *Server) call(w http.ResponseWriter, r *http.Request, ev dispatch.Event) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SyncTimeout.Std())
	defer cancel()
	res, err := s.disp.Call(ctx, ev)
	var failed *dispatch.FailedError
	switch {
	case err == nil:
		result := res.Response
		if result == nil {
			result = json.RawMessage("null")
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": res.ID, "result": result})
	case errors.Is(err, dispatch.ErrNoTrigger):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no trigger of project %s handles events of type %s", ev.Project, quote(ev.Type)))
	case errors.As(err, &failed):
		writeJSON(w, http.StatusBadGateway, map[string]any{"id": res.ID, "error": failed.Reason})
	case errors.Is(err, context.DeadlineExceeded):
		writeJSON(w, http.StatusGatewayTimeout, map[string]any{"id": res.ID,
			"error": fmt.Sprintf("no result within %s (sync_timeout); delivery goes on in the background", s.cfg.SyncTimeout.Std())})
	case errors.Is(err, context.Canceled):
		// The caller went away; delivery goes on.
	case errors.Is(err, dispatch.ErrStopping):
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"id": res.ID,
			"error": "triggerd is shutting down; the event is stored and will be delivered by another node or after a restart"})
	default:
		s.notStored(w, ev, err)
	}
}

// authorize applies the type's rule; it returns 0 when the caller may queue.
func (s *Server) authorize(r *http.Request, p *config.Project, eventType string) (int, string) {
	switch p.Rule(eventType) {
	case config.RuleAllow:
		return 0, ""
	case config.RuleDeny:
		return http.StatusForbidden, fmt.Sprintf("events of type %s may not be queued in project %s (its rule is deny)", quote(eventType), p.ID)
	}
	token, err := bearerToken(r)
	switch {
	case errors.Is(err, errNoToken):
		return http.StatusUnauthorized, fmt.Sprintf("events of type %s need a token: send Authorization: Bearer <JWT signed with a secret of project %s>", quote(eventType), p.ID)
	case err != nil:
		return http.StatusUnauthorized, err.Error()
	}
	if _, err := s.keys[p.ID].VerifyClient(token); err != nil {
		return http.StatusUnauthorized, fmt.Sprintf("bad token: %v", err)
	}
	return 0, ""
}

// maxQuoted bounds how much of a client's text an error message repeats.
const maxQuoted = 100

// clip cuts a client's text to maxQuoted bytes for an error message,
// marking the cut with "...".
func clip(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:cutAt(s)] + "..."
}

// quote quotes a client's text for an error message, as %q does, cut to
// maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:cutAt(s)]) + "..."
}

// cutAt is where clip and quote cut a text longer than maxQuoted: at most
// maxQuoted bytes, at the start of a character.
func cutAt(s string) int {
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return cut
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing to do
}

// writeError answers with {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
