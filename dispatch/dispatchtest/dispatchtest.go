// Package dispatchtest runs a real dispatcher on a real store, for the
// tests of the packages that feed it.
package dispatchtest

import (
	"context"
	"sync"
	"testing"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// Node is a dispatcher running on its migrated store.
type Node struct {
	Config     *config.Config
	Store      *store.Store
	Dispatcher *dispatch.Dispatcher
	Keys       map[string]*auth.Keyring

	stop context.CancelFunc
	done chan error
	once sync.Once
	err  error
}

// Start opens and migrates cfg's store, builds the projects' keyrings and
// a dispatcher with opts, and runs it until Stop, which the test's cleanup
// calls (then closes the store).
func Start(tb testing.TB, cfg *config.Config, opts dispatch.Options) *Node {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{URL: cfg.Store.URL, Schema: cfg.Store.Schema, MaxConns: cfg.Store.MaxConns})
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		tb.Fatal(err)
	}
	keys, err := auth.Keyrings(cfg, nil)
	if err != nil {
		st.Close()
		tb.Fatal(err)
	}
	d, err := dispatch.New(cfg, st, keys, opts)
	if err != nil {
		st.Close()
		tb.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	n := &Node{Config: cfg, Store: st, Dispatcher: d, Keys: keys, stop: stop, done: make(chan error, 1)}
	go func() { n.done <- d.Run(runCtx) }()
	tb.Cleanup(func() {
		if err := n.Stop(); err != nil {
			tb.Errorf("dispatcher: %v", err)
		}
		st.Close()
	})
	return n
}

// Stop stops the dispatcher and returns Run's error once it has returned;
// later calls return the same.
func (n *Node) Stop() error {
	n.once.Do(func() {
		n.stop()
		n.err = <-n.done
	})
	return n.err
}
