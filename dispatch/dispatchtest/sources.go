package dispatchtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/triggerd/triggerd/config"
)

// Config parses the config of a test node: node nodeID on the store's
// schema, with one project "p" that has project (YAML keys at four
// spaces, such as a databases: block) and triggers (YAML list items, one
// a line, indented here), with {hook} in them replaced by hook.
func Config(tb testing.TB, nodeID, storeURL, schema, project, triggers, hook string) *config.Config {
	tb.Helper()
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(triggers, "{hook}", hook)), "\n")
	for i, l := range lines {
		lines[i] = "      " + strings.TrimSpace(l)
	}
	text := fmt.Sprintf(`
node_id: %s
store: {url: %q, schema: %s}
shutdown_grace: 2s
lease: 2s
projects:
  - id: p
    secrets: [{kid: k1, alg: HS256, secret: source-test-secret-0123456789abcdef}]
%s
    triggers:
%s
`, nodeID, storeURL, schema, strings.TrimRight(project, "\n"), strings.Join(lines, "\n"))
	cfg, err := config.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

// Source is an event source run beside a node's dispatcher.
type Source interface {
	Check(ctx context.Context) error
	Run(ctx context.Context)
}

// RunSources checks the sources and runs them until stop, which the test's
// cleanup calls too; stop stops the sources, then the dispatcher they feed.
// A failed check is returned, and nothing runs.
func (n *Node) RunSources(tb testing.TB, sources ...Source) (stop func(), err error) {
	ctx := context.Background()
	for _, s := range sources {
		if err := s.Check(ctx); err != nil {
			return nil, err
		}
	}
	sctx, stopSources := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range sources {
		wg.Go(func() { s.Run(sctx) })
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stopSources()
			wg.Wait()
			if err := n.Stop(); err != nil {
				tb.Errorf("dispatcher: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop, nil
}
