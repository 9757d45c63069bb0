package api

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/triggerd/triggerd/store"
)

// SlotReader reads the replication slot of a database of the config, for
// GET /v1/admin/sources. Package node provides it (see
// Server.UseSources), so that api imports no source. Its errors say why
// the database could not be read; they go to the log only.
type SlotReader interface {
	ReadSlot(ctx context.Context, project, database string) (SlotState, error)
}

// SlotState is a replication slot as its server reports it.
type SlotState struct {
	// Exists says the slot exists, and Active that a session streams it.
	Exists, Active bool
	// Confirmed is the position the slot is confirmed up to, and Lag how
	// many bytes of WAL the server has written past it.
	Confirmed string
	Lag       int64
}

// slotTimeout bounds the read of each database's slot: a database that
// does not answer within it is reported as unreachable.
const slotTimeout = 2 * time.Second

// UseSources gives the admin API its GET /v1/admin/sources route, which
// reads the databases' slots with slots. Call it before the server serves.
func (s *Server) UseSources(slots SlotReader) {
	if s.admin == nil {
		return // every admin path answers adminDisabled
	}
	s.slots = slots
	s.adminRoute("/sources", s.sources, http.MethodGet)
}

// sources answers the state of every database and storage directory of
// the config: which node holds each and what it last reported of it with
// its heartbeat (from the store), and each database's slot, read from the
// database itself at once.
func (s *Server) sources(w http.ResponseWriter, r *http.Request) {
	reported, err := s.store.Sources(r.Context())
	if err != nil {
		s.storeFailed(w, r, "listing sources", err)
		return
	}
	find := func(kind, project, alias string) *store.SourceState {
		for i := range reported {
			if h := &reported[i]; h.Kind == kind && h.Project == project && h.Alias == alias {
				return h
			}
		}
		return nil
	}
	databases := []map[string]any{}
	directories := []map[string]any{}
	var reads sync.WaitGroup
	for i := range s.cfg.Projects {
		p := &s.cfg.Projects[i]
		for _, alias := range slices.Sorted(maps.Keys(p.Databases)) {
			db := p.Databases[alias]
			h := find(store.SourceDatabase, p.ID, alias)
			out := map[string]any{"project": p.ID, "database": alias, "slot": db.Slot, "publication": db.Publication}
			holder(out, h)
			out["last_change_at"] = nil
			if h != nil {
				out["last_change_at"] = timeOrNull(h.LastChange)
			}
			databases = append(databases, out)
			reads.Go(func() { s.readSlot(r.Context(), out, p.ID, alias) })
		}
		for _, alias := range slices.Sorted(maps.Keys(p.Storage)) {
			h := find(store.SourceStorage, p.ID, alias)
			out := map[string]any{"project": p.ID, "storage": alias, "path": p.Storage[alias].Path,
				"files_indexed": nil, "watches": nil, "last_rescan_at": nil}
			holder(out, h)
			if h != nil {
				out["files_indexed"], out["watches"], out["last_rescan_at"] = h.Indexed, h.Watches, timeOrNull(h.LastRescan)
			}
			directories = append(directories, out)
		}
	}
	reads.Wait()
	if r.Context().Err() != nil {
		return // the client went away
	}
	writeJSON(w, http.StatusOK, map[string]any{"databases": databases, "directories": directories})
}

// holder adds to a source's answer the node holding it, when its last
// report is at most three heartbeats old, and when it was last reported.
func holder(out map[string]any, h *store.SourceState) {
	out["node"], out["reported_at"] = nil, nil
	if h == nil {
		return
	}
	out["reported_at"] = jsonTime(h.Reported)
	if h.Age <= 3*store.HeartbeatEvery {
		out["node"] = h.Node
	}
}

// readSlot adds to a database's answer its slot's state, read within
// slotTimeout; a database that cannot be read is reported as unreachable,
// and why goes to the log only (it names the server and its SQL errors).
func (s *Server) readSlot(ctx context.Context, out map[string]any, project, alias string) {
	rctx, cancel := context.WithTimeout(ctx, slotTimeout)
	defer cancel()
	slot, err := s.slots.ReadSlot(rctx, project, alias)
	out["reachable"] = err == nil
	out["slot_exists"], out["slot_active"], out["confirmed_lsn"], out["lag_bytes"] = nil, nil, nil, nil
	switch {
	case err != nil:
		if ctx.Err() == nil { // else the client went away
			s.log.Warn("reading a database's replication slot for the admin API failed", "project", project, "database", alias, "err", err)
		}
		out["error"] = "the slot's state could not be read from the database within " + slotTimeout.String() + " (the node's log says why)"
	case slot.Confirmed == "":
		out["slot_exists"], out["slot_active"] = slot.Exists, slot.Active
	default:
		out["slot_exists"], out["slot_active"] = slot.Exists, slot.Active
		out["confirmed_lsn"], out["lag_bytes"] = slot.Confirmed, slot.Lag
	}
}
