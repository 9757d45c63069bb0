package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/triggerd/triggerd/api"
	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/store"
)

// triggerBackstop is how often a node reads the stored triggers again
// besides when the store announces a change, so that a notification lost
// with a broken connection delays a change by this much at most.
const triggerBackstop = 10 * time.Second

// listenRetry is how long a node waits before listening again after the
// store refused.
const listenRetry = time.Second

// liveTriggers keeps a node's triggers: those of its config, which a
// SIGHUP may replace, and those kept in the store, which the admin API
// changes (ApplyTrigger, DeleteTrigger). It applies them to the
// dispatcher and the sources whenever either changes.
type liveTriggers struct {
	// Set by newLiveTriggers and Run's caller before Run; read-only after.
	st   *store.Store
	disp *dispatch.Dispatcher
	dbs  []*cdc.Source
	dirs []*filewatch.Source
	log  *slog.Logger

	// mu makes one change at a time and guards the fields below.
	mu sync.Mutex
	// cfg is the config whose triggers apply.
	cfg *config.Config
	// stored names the stored triggers read last; refused says why some
	// of them are not applied here (logged when it changes).
	stored  map[store.Trigger]bool
	refused map[store.Trigger]string
	// applied are each project's triggers as last applied.
	applied map[string][]*config.Trigger
}

func newLiveTriggers(cfg *config.Config, st *store.Store, log *slog.Logger) *liveTriggers {
	lt := &liveTriggers{cfg: cfg, st: st, log: log, stored: map[store.Trigger]bool{}, refused: map[store.Trigger]string{},
		applied: make(map[string][]*config.Trigger)}
	for i := range cfg.Projects {
		p := &cfg.Projects[i]
		for j := range p.Triggers {
			lt.applied[p.ID] = append(lt.applied[p.ID], &p.Triggers[j])
		}
	}
	return lt
}

// Run applies every change of the stored triggers until ctx ends: at
// once when the store announces one, and every triggerBackstop.
func (lt *liveTriggers) Run(ctx context.Context) {
	for ctx.Err() == nil {
		l, err := lt.st.ListenTriggers(ctx)
		if err != nil {
			if ctx.Err() == nil {
				lt.log.Warn("cannot listen for changes of the stored triggers; trying again", "err", err, "retry_in", listenRetry)
			}
			select {
			case <-ctx.Done():
			case <-time.After(listenRetry):
			}
			continue
		}
		// Listening first: a change committed from now on is heard.
		for {
			lt.reloadLogged(ctx)
			wctx, cancel := context.WithTimeout(ctx, triggerBackstop)
			err := l.Wait(wctx)
			cancel()
			if err != nil {
				break // the backstop's time, or a broken connection: listen anew
			}
		}
		l.Close()
	}
}

// reloadLogged reloads, logging a failure.
func (lt *liveTriggers) reloadLogged(ctx context.Context) {
	if err := lt.reload(ctx); err != nil && ctx.Err() == nil {
		lt.log.Warn("reading the stored triggers failed; trying again", "err", err)
	}
}

// reload reads the stored triggers and applies them with the config's.
func (lt *liveTriggers) reload(ctx context.Context) error {
	stored, err := lt.st.Triggers(ctx)
	if err != nil {
		return err
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.apply(ctx, stored)
	return nil
}

// setConfig makes cfg's triggers the config's (a SIGHUP), and applies them.
func (lt *liveTriggers) setConfig(ctx context.Context, cfg *config.Config) error {
	stored, err := lt.st.Triggers(ctx)
	if err != nil {
		return err
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.cfg = cfg
	lt.apply(ctx, stored)
	return nil
}

// apply gives the dispatcher and the sources the config's triggers and
// the stored ones that are valid here, and cancels the staged rows of
// stored triggers that were deleted. The caller holds mu.
func (lt *liveTriggers) apply(ctx context.Context, stored []store.StoredTrigger) {
	byProject := make(map[string][]*config.Trigger)
	for i := range lt.cfg.Projects {
		p := &lt.cfg.Projects[i]
		list := make([]*config.Trigger, 0, len(p.Triggers))
		for j := range p.Triggers {
			list = append(list, &p.Triggers[j])
		}
		byProject[p.ID] = list
	}
	storedNow := make(map[store.Trigger]bool, len(stored))
	refused := make(map[store.Trigger]string)
	for _, s := range stored {
		key := store.Trigger{Project: s.Project, Name: s.Name}
		storedNow[key] = true
		t, why := lt.parseStored(s)
		if t == nil {
			refused[key] = why
			if lt.refused[key] != why {
				lt.log.Warn("a stored trigger is not applied on this node", "project", s.Project, "trigger", s.Name, "why", why)
			}
			continue
		}
		byProject[s.Project] = append(byProject[s.Project], t)
	}
	lt.refused = refused
	// The sources stop routing to removed triggers before the dispatcher
	// drops them, and route to new ones once it has them: a change they
	// route names only triggers the dispatcher has.
	for id, list := range byProject {
		kept := slices.DeleteFunc(slices.Clone(lt.applied[id]), func(old *config.Trigger) bool {
			return !slices.ContainsFunc(list, func(t *config.Trigger) bool { return t.Name == old.Name })
		})
		lt.setSources(id, kept)
	}
	removed, err := lt.disp.Update(byProject)
	if err != nil {
		lt.log.Error("some triggers could not be applied", "err", err)
	}
	for _, r := range removed {
		if !lt.stored[r] || storedNow[r] {
			continue // a trigger gone from the config: the sweeper's
		}
		n, err := lt.st.CancelDeleted(ctx, r.Project, r.Name)
		switch {
		case err != nil:
			lt.log.Warn("cancelling the staged rows of a deleted trigger failed; the sweeper will", "project", r.Project, "trigger", r.Name, "err", err)
		case n > 0:
			lt.log.Info("cancelled staged rows of a deleted trigger", "project", r.Project, "trigger", r.Name, "rows", n)
		}
	}
	lt.stored = storedNow
	lt.applied = byProject
	for id, list := range byProject {
		lt.setSources(id, list)
	}
}

// setSources gives the sources of project id its triggers.
func (lt *liveTriggers) setSources(id string, triggers []*config.Trigger) {
	for _, s := range lt.dbs {
		if s.Project() == id {
			s.SetTriggers(triggers)
		}
	}
	for _, s := range lt.dirs {
		if s.Project() == id {
			s.SetTriggers(triggers)
		}
	}
}

// parseStored checks a stored trigger against this node's config: it
// returns the trigger, or nil and why it does not apply here. The caller
// holds mu.
func (lt *liveTriggers) parseStored(s store.StoredTrigger) (*config.Trigger, string) {
	return lt.parseStoredWith(lt.cfg, s)
}

// parseStoredWith checks a stored trigger against cfg, as parseStored.
func (lt *liveTriggers) parseStoredWith(cfg *config.Config, s store.StoredTrigger) (*config.Trigger, string) {
	p := cfg.Project(s.Project)
	switch {
	case p == nil:
		return nil, "its project is not in this node's config"
	case configTrigger(p, s.Name) != nil:
		return nil, "the config has a trigger of that name, which wins"
	}
	t, err := config.ParseTrigger("stored trigger "+s.Project+"/"+s.Name, s.Spec, p)
	switch {
	case err != nil:
		return nil, err.Error()
	case t.Name != s.Name:
		return nil, fmt.Sprintf("its spec names trigger %q", t.Name)
	}
	return t, ""
}

// configTrigger returns the config's trigger of project p with the name, or nil.
func configTrigger(p *config.Project, name string) *config.Trigger {
	for i := range p.Triggers {
		if p.Triggers[i].Name == name {
			return &p.Triggers[i]
		}
	}
	return nil
}

// applyTrigger checks trigger name of a project, given as the admin API
// takes it (YAML or JSON with the config's keys), exactly as the config
// loader would, and creates or replaces it in the store of cfg, recording
// actor in the audit; it reports whether it created it. A DB_* trigger is
// checked against its database first, and the database's publication
// follows before ApplyTrigger returns (see cdc.Publish): every change
// committed after that is captured. Nothing is stored when a check fails.
// The nodes on the store apply the change within about a second.
func applyTrigger(ctx context.Context, cfg *config.Config, st *store.Store, project, name string, body []byte, actor string, log *slog.Logger) (*config.Trigger, bool, error) {
	p := cfg.Project(project)
	if p == nil {
		return nil, false, fmt.Errorf("%w: %q", api.ErrUnknownProject, project)
	}
	t, err := config.ParseTrigger("trigger", body, p)
	if err != nil {
		return nil, false, err
	}
	if t.Name != name {
		return nil, false, &config.FieldError{Name: "trigger", Line: 1, Field: "name",
			Message: fmt.Sprintf("the body names trigger %q, and the path %q: a trigger is renamed by deleting it and creating it anew", t.Name, name)}
	}
	if configTrigger(p, t.Name) != nil {
		return nil, false, fmt.Errorf("trigger %q: %w", t.Name, api.ErrConfigTrigger)
	}
	after, old, err := projectTriggers(ctx, p, st, t)
	if err != nil {
		return nil, false, err
	}
	opts := cdc.Options{StoreSchema: cfg.Store.Schema, Logger: log}
	dbs := changedDatabases(old, t)
	for _, alias := range dbs {
		if err := cdc.CheckTriggers(ctx, p, alias, after, opts); errors.Is(err, cdc.ErrUnreachable) {
			return nil, false, err
		} else if err != nil {
			return nil, false, fmt.Errorf("%w: %w", api.ErrCannotCapture, err)
		}
	}
	created, err := st.PutTrigger(ctx, project, t.Name, t.Document(), actor)
	if err != nil {
		return nil, false, err
	}
	for _, alias := range dbs {
		if err := cdc.Publish(ctx, p, alias, after, opts); err != nil {
			// Stored: the node streaming the database publishes the
			// tables when it learns of the trigger; changes committed
			// until then to tables not yet published are not captured.
			return t, created, fmt.Errorf("the trigger is stored, but the publication of database %s was not updated: the node streaming it will update it within a second or so, "+
				"and changes committed until then to tables not yet published are not captured: %w", alias, err)
		}
	}
	return t, created, nil
}

// projectTriggers returns the triggers project p will have once t is
// stored (the config's, then the stored ones that check, t in place of
// the one of its name), and the stored trigger t replaces, if any.
func projectTriggers(ctx context.Context, p *config.Project, st *store.Store, t *config.Trigger) ([]*config.Trigger, *config.Trigger, error) {
	stored, err := st.Triggers(ctx)
	if err != nil {
		return nil, nil, err
	}
	var out []*config.Trigger
	for i := range p.Triggers {
		out = append(out, &p.Triggers[i])
	}
	var old *config.Trigger
	for _, s := range stored {
		if s.Project != p.ID || configTrigger(p, s.Name) != nil {
			continue
		}
		tr, err := config.ParseTrigger("stored trigger", s.Spec, p)
		if err != nil {
			continue
		}
		if s.Name == t.Name {
			old = tr
			continue
		}
		out = append(out, tr)
	}
	return append(out, t), old, nil
}

// deleteTrigger deletes a stored trigger of a project in the store of
// cfg, recording actor in the audit, and cancels its staged rows. It
// returns how many it cancelled. The nodes on the store drop the trigger
// within about a second.
func deleteTrigger(ctx context.Context, cfg *config.Config, st *store.Store, project, name, actor string) (int, error) {
	p := cfg.Project(project)
	switch {
	case p == nil:
		return 0, fmt.Errorf("%w: %q", api.ErrUnknownProject, project)
	case configTrigger(p, name) != nil:
		return 0, fmt.Errorf("trigger %q: %w", name, api.ErrConfigTrigger)
	}
	found, n, err := st.DeleteTrigger(ctx, project, name, actor)
	switch {
	case err != nil:
		return 0, err
	case !found:
		return 0, fmt.Errorf("trigger %q: %w", name, api.ErrNoTrigger)
	}
	return n, nil
}

// changedDatabases lists the databases whose capture a change of trigger
// old (nil: none) to t concerns.
func changedDatabases(old, t *config.Trigger) []string {
	var out []string
	for _, tr := range []*config.Trigger{old, t} {
		if tr != nil && config.IsChangeType(tr.Type) && !slices.Contains(out, tr.Options.DB) {
			out = append(out, tr.Options.DB)
		}
	}
	return out
}

// List returns the triggers of a project, or of every project when
// project is "": the config's, then the stored ones (api.Triggers).
func (lt *liveTriggers) List(ctx context.Context, project string) ([]api.TriggerInfo, error) {
	lt.mu.Lock()
	cfg := lt.cfg
	lt.mu.Unlock()
	if project != "" && cfg.Project(project) == nil {
		return nil, fmt.Errorf("%w: %q", api.ErrUnknownProject, project)
	}
	stored, err := lt.st.Triggers(ctx)
	if err != nil {
		return nil, err
	}
	var out []api.TriggerInfo
	for i := range cfg.Projects {
		p := &cfg.Projects[i]
		if project != "" && p.ID != project {
			continue
		}
		for j := range p.Triggers {
			t := &p.Triggers[j]
			out = append(out, api.TriggerInfo{Project: p.ID, Name: t.Name, DefinedIn: api.DefinedInConfig, Trigger: t.Shown()})
		}
	}
	for _, s := range stored {
		if project != "" && s.Project != project {
			continue
		}
		info := api.TriggerInfo{Project: s.Project, Name: s.Name, DefinedIn: api.DefinedInStore, UpdatedAt: &s.UpdatedAt, UpdatedBy: s.UpdatedBy}
		t, why := lt.parseStoredWith(cfg, s)
		if t == nil {
			info.Problem = why
			// What the store holds, as far as it reads.
			if t, _ = config.ParseTrigger("stored", s.Spec, &config.Project{ID: s.Project}); t == nil {
				t = &config.Trigger{Name: s.Name}
			}
		}
		info.Trigger = t.Shown()
		out = append(out, info)
	}
	return out, nil
}

// Apply creates or replaces a stored trigger (api.Triggers), and applies
// it on this node before it returns.
func (lt *liveTriggers) Apply(ctx context.Context, project, name string, body []byte, actor string) (*api.TriggerInfo, bool, error) {
	lt.mu.Lock()
	cfg := lt.cfg
	lt.mu.Unlock()
	t, created, err := applyTrigger(ctx, cfg, lt.st, project, name, body, actor, lt.log)
	if t == nil {
		return nil, false, err
	}
	if rerr := lt.reload(ctx); rerr != nil {
		lt.log.Warn("applying a stored trigger on this node failed; the next read of the store will", "err", rerr)
	}
	now := time.Now()
	return &api.TriggerInfo{Project: project, Name: t.Name, DefinedIn: api.DefinedInStore, Trigger: t.Shown(),
		UpdatedAt: &now, UpdatedBy: actor}, created, err
}

// Delete deletes a stored trigger (api.Triggers), and drops it on this
// node before it returns.
func (lt *liveTriggers) Delete(ctx context.Context, project, name, actor string) (int, error) {
	lt.mu.Lock()
	cfg := lt.cfg
	lt.mu.Unlock()
	n, err := deleteTrigger(ctx, cfg, lt.st, project, name, actor)
	if err != nil {
		return 0, err
	}
	if rerr := lt.reload(ctx); rerr != nil {
		lt.log.Warn("dropping a deleted trigger on this node failed; the next read of the store will", "err", rerr)
	}
	return n, nil
}
