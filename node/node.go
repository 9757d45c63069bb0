// Package node runs a triggerd node: one process that takes events from
// the API, from captured Postgres row changes and from watched folders,
// stages them in the store and delivers them to webhooks. Nodes that share
// a store share its rows; each row is delivered by one node at a time.
//
// The commands in package main read flags and a config, then call New and
// Run; the order in which a node starts and stops its parts lives here.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/triggerd/triggerd/api"
	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/store"
)

// Options are what a node takes besides its config.
type Options struct {
	// Logger receives the node's log; nil discards it.
	Logger *slog.Logger
	// Version is the build, logged at start and sent in the User-Agent of
	// deliveries as triggerd/Version.
	Version string
	// Started, when set, is called with the API's address once it listens.
	Started func(addr string)
	// Reconfigure, when set, takes configs read again while the node runs
	// (serve's SIGHUP): their triggers are applied as the stored ones are;
	// what else differs needs a restart, is logged as refused, and keeps
	// its old value.
	Reconfigure <-chan *config.Config
}

// Node is a node built from a config, ready to run once.
type Node struct {
	cfg  *config.Config
	opts Options
	log  *slog.Logger
	keys map[string]*auth.Keyring
}

// New checks what a node needs beyond the config (the projects' keys) and
// builds it. It connects to nothing: Run does.
func New(cfg *config.Config, opts Options) (*Node, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys, err := auth.Keyrings(cfg, log)
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, opts: opts, log: log, keys: keys}, nil
}

// Run runs the node until ctx ends: it opens and migrates the store,
// adds the triggers kept there to the config's, checks the event sources
// (and warns, within 2 s, of forgotten slots: cdc.WarnForgotten), then starts the dispatcher, the sources, the following of trigger
// changes (the store's, and Options.Reconfigure's), the retention sweep
// and the API. When ctx ends (or the API server fails) intake stops first: the
// sources end and the API takes no new request; attempts in flight get the
// config's shutdown grace; the dispatcher hands its rows back; the store
// closes last. A failure before the API listens is returned as is.
func (n *Node) Run(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	reg := newRegistry()
	st, err := store.Open(ctx, store.Options{URL: cfg.Store.URL, Schema: cfg.Store.Schema, MaxConns: cfg.Store.MaxConns, Metrics: reg})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	disp, err := dispatch.New(cfg, st, n.keys, dispatch.Options{
		NodeID:    cfg.NodeID,
		Logger:    log,
		UserAgent: "triggerd/" + n.opts.Version,
		Metrics:   dispatch.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	live := newLiveTriggers(cfg, st, log)
	live.disp = disp
	cdcOpts := cdc.Options{StoreSchema: cfg.Store.Schema, Logger: log, Refresh: live.reload}
	if live.dbs, err = cdc.Sources(cfg, disp, cdcOpts); err != nil {
		return err
	}
	if live.dirs, err = filewatch.Sources(cfg, disp, st, filewatch.Options{Logger: log}); err != nil {
		return err
	}
	// The stored triggers apply from the start, the sources' checks included.
	if err := live.reload(ctx); err != nil {
		return err
	}
	var sources []source
	for _, s := range live.dbs {
		sources = append(sources, s)
	}
	for _, s := range live.dirs {
		sources = append(sources, s)
	}
	for _, src := range sources {
		if err := src.Check(ctx); err != nil {
			return err
		}
	}
	if len(live.dbs) > 0 {
		warnCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cdc.WarnForgotten(warnCtx, cfg, cdc.ForgottenOver, log)
		cancel()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another process using it? change listen in the config)", cfg.Listen, err)
	}
	held := nodeSources{dbs: live.dbs, dirs: live.dirs}
	reg.MustRegister(newSourcesCollector(held, log))
	apiServer := api.New(cfg, disp, n.keys, st, log)
	apiServer.UseTriggers(live)
	apiServer.UseSources(held)
	apiServer.UseMetrics(reg)
	var srv, metricsSrv *http.Server
	var metricsLn net.Listener
	if cfg.MetricsListen == "" {
		srv = httpServer(cfg, withMetrics(apiServer, metricsHandler(reg)), log)
	} else {
		srv = httpServer(cfg, apiServer, log)
		if metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w (is another process using it? change metrics_listen in the config)", cfg.MetricsListen, err)
		}
		metricsSrv = httpServer(cfg, withMetrics(http.NotFoundHandler(), metricsHandler(reg)), log)
	}

	// The dispatcher and the sources outlive ctx: each is stopped in turn
	// below, in the order that hands every row back.
	dispCtx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDispatch()
	dispDone := make(chan error, 1)
	go func() { dispDone <- disp.Run(dispCtx) }()
	srcCtx, stopSources := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSources()
	var capturing sync.WaitGroup
	for _, src := range sources {
		capturing.Go(func() { src.Run(srcCtx) })
	}
	capturing.Go(func() { live.Run(srcCtx) })
	capturing.Go(func() { apiServer.RunFeed(srcCtx) })
	capturing.Go(func() { n.reconfigure(srcCtx, live) })
	capturing.Go(func() { newSweeper(cfg, st, log).run(srcCtx) })
	var beating sync.WaitGroup
	beating.Go(func() { heartbeat(srcCtx, st, disp, held, n.opts.Version, log) })
	srvDone := make(chan error, 2)
	go func() { srvDone <- srv.Serve(ln) }()
	if metricsSrv != nil {
		go func() { srvDone <- metricsSrv.Serve(metricsLn) }()
		log.Info("serving /metrics", "metrics_listen", metricsLn.Addr().String())
	}
	log.Info("triggerd is serving", "listen", ln.Addr().String(), "node", cfg.NodeID,
		"store_schema", cfg.Store.Schema, "projects", len(cfg.Projects), "version", n.opts.Version)
	if n.opts.Started != nil {
		n.opts.Started(ln.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-srvDone:
		serveErr = fmt.Errorf("http server: %w", serveErr)
	}
	grace := cfg.ShutdownGrace.Std()
	log.Info("stopping: no new events are taken; attempts in flight may finish", "grace", grace)
	stopSources()
	capturing.Wait()
	beating.Wait()
	stopDispatch()
	shutCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
	}
	if metricsSrv != nil {
		metricsSrv.Close() // a scrape in flight needs no grace
	}
	if err := <-dispDone; err != nil {
		log.Error("releasing held rows failed; their leases will lapse", "err", err)
	}
	log.Info("stopped")
	return serveErr
}

// httpServer is the API's server, with the config's limits.
func httpServer(cfg *config.Config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout.Std(),
		ReadTimeout:       cfg.HTTP.ReadTimeout.Std(),
		WriteTimeout:      cfg.HTTP.WriteTimeout.Std(),
		IdleTimeout:       cfg.HTTP.IdleTimeout.Std(),
		MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// source is a feed of events: database changes or watched directories.
type source interface {
	// Check says what to fix when the source cannot start.
	Check(ctx context.Context) error
	// Run feeds the dispatcher until ctx ends.
	Run(ctx context.Context)
}

// heartbeat registers the node in the store's nodes table, and writes its
// heartbeat (with the rows it holds, and the state of the sources it
// holds) every store.HeartbeatEvery until ctx ends, so that every node's
// admin API can list the live nodes and say who holds each source.
func heartbeat(ctx context.Context, st *store.Store, disp *dispatch.Dispatcher, sources nodeSources, version string, log *slog.Logger) {
	started := time.Now()
	tick := time.NewTicker(store.HeartbeatEvery)
	defer tick.Stop()
	for {
		if err := st.Heartbeat(ctx, disp.NodeID(), version, started, disp.Held(), sources.held()...); err != nil && ctx.Err() == nil {
			log.Warn("writing this node's heartbeat failed; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
