package node

import (
	"context"
	"fmt"

	"github.com/triggerd/triggerd/api"
	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/store"
)

// nodeSources are the event sources of a node: what it reports of those
// it holds with its heartbeat, and the reads of the databases' slots for
// the admin API (api.SlotReader).
type nodeSources struct {
	dbs  []*cdc.Source
	dirs []*filewatch.Source
}

// held returns the state of the sources this node holds now: the
// databases it streams and the directories it watches.
func (ns nodeSources) held() []store.SourceState {
	var out []store.SourceState
	for _, s := range ns.dbs {
		if st := s.State(); st.Streaming {
			out = append(out, store.SourceState{Kind: store.SourceDatabase, Project: s.Project(), Alias: s.Alias(), LastChange: st.LastChange})
		}
	}
	for _, s := range ns.dirs {
		if st := s.State(); st.Watching {
			out = append(out, store.SourceState{Kind: store.SourceStorage, Project: s.Project(), Alias: s.Alias(),
				Indexed: st.Indexed, Watches: st.Watches, LastRescan: st.LastRescan})
		}
	}
	return out
}

// ReadSlot reads the slot of a database of the config from the database
// (api.SlotReader).
func (ns nodeSources) ReadSlot(ctx context.Context, project, database string) (api.SlotState, error) {
	for _, s := range ns.dbs {
		if s.Project() == project && s.Alias() == database {
			st, err := s.Slot(ctx)
			return api.SlotState{Exists: st.Exists, Active: st.Active, Confirmed: st.Confirmed, Lag: st.Lag}, err
		}
	}
	return api.SlotState{}, fmt.Errorf("project %s has no database %s on this node", project, database)
}
