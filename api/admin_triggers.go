package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/triggerd/triggerd/config"
)

// Triggers reads and changes a node's triggers, for the admin API.
// Package node provides it (see Server.UseTriggers). Its errors wrap
// ErrUnknownProject, ErrNoTrigger, ErrConfigTrigger, ErrCannotCapture or
// a *config.FieldError when the request is at fault; any other error is
// the node's (the store is unavailable).
type Triggers interface {
	// List returns the triggers of a project, or of every project when
	// project is "": the config's, then the stored ones.
	List(ctx context.Context, project string) ([]TriggerInfo, error)
	// Apply creates or replaces a stored trigger, given as YAML or JSON
	// with the config's keys, checked as the config loader checks one;
	// actor is recorded in the audit. It reports whether it created it.
	// A non-nil TriggerInfo with an error means the trigger is stored but
	// its database's publication is not yet updated.
	// The body must name the trigger name.
	Apply(ctx context.Context, project, name string, body []byte, actor string) (*TriggerInfo, bool, error)
	// Delete deletes a stored trigger and cancels its staged rows,
	// returning how many.
	Delete(ctx context.Context, project, name, actor string) (int, error)
}

// The errors of Triggers that the admin API answers for.
var (
	// ErrUnknownProject: no project has the id (404).
	ErrUnknownProject = errors.New("no project has this id")
	// ErrNoTrigger: the project has no trigger of the name (404).
	ErrNoTrigger = errors.New("the project has no trigger of this name")
	// ErrConfigTrigger: the trigger is defined in the config file, and is
	// changed there (409).
	ErrConfigTrigger = errors.New("the trigger is defined in the config file, and is read-only here: change it in the file of every node, and send each a SIGHUP")
	// ErrCannotCapture: the database cannot capture what a DB_* trigger
	// names, such as a table that does not exist (400).
	ErrCannotCapture = errors.New("the trigger's database cannot capture what it names")
)

// The places a trigger is defined in.
const (
	DefinedInConfig = "config"
	DefinedInStore  = "store"
)

// TriggerInfo is a trigger as the admin API shows it.
type TriggerInfo struct {
	Project string `json:"project"`
	Name    string `json:"name"`
	// DefinedIn is DefinedInConfig (read-only here) or DefinedInStore.
	DefinedIn string `json:"defined_in"`
	// Trigger has the config's keys, without its secrets (config.Trigger.Shown).
	Trigger   config.ShownTrigger `json:"trigger"`
	UpdatedAt *time.Time          `json:"updated_at,omitempty"`
	UpdatedBy string              `json:"updated_by,omitempty"`
	// Problem, for a stored trigger, says why this node does not apply it.
	Problem string `json:"problem,omitempty"`
}

// UseTriggers gives the admin API its trigger routes, served by t. Call it
// before the server serves.
func (s *Server) UseTriggers(t Triggers) {
	if s.admin == nil {
		return // every admin path answers adminDisabled
	}
	s.triggers = t
	s.adminRoute("/triggers", s.listTriggers, http.MethodGet)
	s.adminRoute("/projects/{project}/triggers", s.listTriggers, http.MethodGet)
	s.adminRoute("/projects/{project}/triggers/{name}", s.getTrigger, http.MethodGet)
	s.adminRoute("/projects/{project}/triggers/{name}", s.putTrigger, http.MethodPut)
	s.adminRoute("/projects/{project}/triggers/{name}", s.deleteTrigger, http.MethodDelete)
}

// listTriggers answers the triggers of one project, or of all.
func (s *Server) listTriggers(w http.ResponseWriter, r *http.Request) {
	list, err := s.triggers.List(r.Context(), mux.Vars(r)["project"])
	if err != nil {
		s.triggerError(w, err)
		return
	}
	if list == nil {
		list = []TriggerInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"triggers": list})
}

// getTrigger answers one trigger.
func (s *Server) getTrigger(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	list, err := s.triggers.List(r.Context(), vars["project"])
	if err != nil {
		s.triggerError(w, err)
		return
	}
	for _, t := range list {
		if t.Name == vars["name"] {
			writeJSON(w, http.StatusOK, t)
			return
		}
	}
	s.triggerError(w, ErrNoTrigger)
}

// putTrigger creates or replaces a stored trigger: 201 when created, 200
// when replaced. The body is the trigger, as YAML or JSON with the
// config's keys; its name must be the path's.
func (s *Server) putTrigger(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	vars := mux.Vars(r)
	info, created, err := s.triggers.Apply(r.Context(), vars["project"], vars["name"], body, adminUser(r))
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	switch {
	case err == nil:
		writeJSON(w, status, info)
	case info != nil:
		s.log.Error("a trigger is stored, but its database's publication was not updated", "project", info.Project, "trigger", info.Name, "err", err)
		writeJSON(w, status, map[string]any{"trigger": info,
			"warning": "the trigger is stored, but its database's publication could not be updated yet (the node's log says why): the node streaming the database updates it within seconds; changes committed until then to tables not yet published are not captured"})
	default:
		s.triggerError(w, err)
	}
}

// deleteTrigger deletes a stored trigger and answers how many staged rows
// were cancelled.
func (s *Server) deleteTrigger(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	n, err := s.triggers.Delete(r.Context(), vars["project"], vars["name"], adminUser(r))
	if err != nil {
		s.triggerError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": vars["name"], "cancelled": n})
}

// triggerError answers an error of Triggers.
func (s *Server) triggerError(w http.ResponseWriter, err error) {
	var field *config.FieldError
	switch {
	case errors.As(err, &field):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": field.Error(), "field": field.Field})
	case errors.Is(err, ErrUnknownProject), errors.Is(err, ErrNoTrigger):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrConfigTrigger):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrCannotCapture):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		s.log.Error("an admin request about triggers failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the store is unavailable; the node's log says why")
	}
}
