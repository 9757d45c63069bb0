package filewatch_test

import (
	"testing"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/filewatch"
)

// TestTriggersChangeAtTheNextFileEvent adds a FILE_CREATE trigger to a
// running source, then removes another: each change applies to the next
// file event, without a restart.
func TestTriggersChangeAtTheNextFileEvent(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	cfg := r.config("node-1", "", both)
	n := r.start(cfg, filewatch.Options{}, false)
	r.write("a.txt", "a")
	r.expect("created file a.txt")

	p := &cfg.Projects[0]
	images, err := config.ParseTrigger("trigger", []byte(`{name: images, type: FILE_CREATE, url: "`+r.hook.URL+`/images", options: {path: "*.png"}}`), p)
	if err != nil {
		t.Fatal(err)
	}
	set := func(ts ...*config.Trigger) {
		t.Helper()
		if _, err := n.run.Dispatcher.Update(map[string][]*config.Trigger{"p": ts}); err != nil {
			t.Fatal(err)
		}
		for _, s := range n.sources {
			s.SetTriggers(ts)
		}
	}
	set(&p.Triggers[0], &p.Triggers[1], images)
	r.reset()
	r.write("b.png", "b")
	r.expect("created file b.png", "images file b.png")

	// Removed: the source stops routing to it first, as node does.
	for _, s := range n.sources {
		s.SetTriggers([]*config.Trigger{&p.Triggers[1], images})
	}
	set(&p.Triggers[1], images)
	r.reset()
	r.write("c.png", "c")
	r.expect("images file c.png")
}
