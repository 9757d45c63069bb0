package node

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/triggerd/triggerd/config"
)

// reconfigure applies the configs of Options.Reconfigure until ctx ends.
func (n *Node) reconfigure(ctx context.Context, live *liveTriggers) {
	for {
		select {
		case <-ctx.Done():
			return
		case next := <-n.opts.Reconfigure:
			live.mu.Lock()
			cur := live.cfg
			live.mu.Unlock()
			merged, refused := mergeTriggers(cur, next)
			for _, r := range refused {
				n.log.Warn("config reloaded: a change that needs a restart is refused, and the old value kept", "change", r)
			}
			if err := live.setConfig(ctx, merged); err != nil {
				n.log.Error("config reloaded: applying its triggers failed; the old ones stay", "err", err)
				continue
			}
			n.log.Info("config reloaded: its triggers apply", "refused", len(refused))
		}
	}
}

// mergeTriggers returns cur with the triggers of next, and what else next
// changes, each refused: only triggers change while a node runs. A
// project whose triggers do not all check against cur's project (a new
// database or storage directory, which is refused) keeps its triggers.
func mergeTriggers(cur, next *config.Config) (*config.Config, []string) {
	merged := *cur
	merged.Projects = make([]config.Project, len(cur.Projects))
	copy(merged.Projects, cur.Projects)
	refused := differences("", reflect.ValueOf(*cur), reflect.ValueOf(*next), "projects")
	if len(cur.Projects) != len(next.Projects) {
		refused = append(refused, "projects: a project added or removed")
	}
	for i := range merged.Projects {
		p := &merged.Projects[i]
		np := next.Project(p.ID)
		if np == nil {
			continue // refused above, or ids changed: keeps its triggers
		}
		path := fmt.Sprintf("projects[%d]", i)
		refused = append(refused, differences(path, reflect.ValueOf(*p), reflect.ValueOf(*np), "triggers")...)
		triggers := make([]config.Trigger, 0, len(np.Triggers))
		ok := true
		for j := range np.Triggers {
			// Checked against the project kept: its databases and storage.
			t, err := config.ParseTrigger(fmt.Sprintf("%s.triggers[%d]", path, j), np.Triggers[j].Document(), p)
			if err != nil {
				refused = append(refused, fmt.Sprintf("%s.triggers: %v (the project's triggers stay as they were)", path, err))
				ok = false
				break
			}
			triggers = append(triggers, *t)
		}
		if ok {
			p.Triggers = triggers
		}
	}
	return &merged, refused
}

// differences names the fields of two structs that differ, by their YAML
// keys under path, leaving out the field keyed skip.
func differences(path string, a, b reflect.Value, skip string) []string {
	var out []string
	for i := range a.NumField() {
		key, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" || key == skip {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			if path != "" {
				key = path + "." + key
			}
			out = append(out, key+" cannot change without a restart")
		}
	}
	return out
}
