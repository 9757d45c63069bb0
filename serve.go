package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/triggerd/triggerd/api"
	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/filewatch"
	"github.com/triggerd/triggerd/store"
)

// serveCommand is "triggerd serve".
func serveCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("TRIGGERD_CONFIG"), "config file (default: $TRIGGERD_CONFIG)")
	format := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("serve needs a config: pass --config FILE or set TRIGGERD_CONFIG")
	}
	log, err := newLogger(*format, stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	// A log reader that goes away (triggerd serve | tee, stopped with
	// Ctrl-C) must not kill the node before it hands its rows back: its
	// log lines are lost instead.
	defer survivePipes()()
	return serve(ctx, cfg, log, nil)
}

// serve runs a node until ctx ends: the store, the dispatcher, the change
// sources and the API.
// started, when set, is called with the API's address once it listens. On
// shutdown, intake stops and attempts in flight get the grace period.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, started func(addr string)) error {
	keys, err := auth.Keyrings(cfg, log)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Options{URL: cfg.Store.URL, Schema: cfg.Store.Schema, MaxConns: cfg.Store.MaxConns})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	disp, err := dispatch.New(cfg, st, keys, dispatch.Options{
		NodeID:    cfg.NodeID,
		Logger:    log,
		UserAgent: "triggerd/" + version(),
	})
	if err != nil {
		return err
	}
	sources, err := eventSources(cfg, disp, st, log)
	if err != nil {
		return err
	}
	for _, src := range sources {
		if err := src.Check(ctx); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another process using it? change listen in the config)", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           api.New(cfg, disp, keys, st.Ready, log),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout.Std(),
		ReadTimeout:       cfg.HTTP.ReadTimeout.Std(),
		WriteTimeout:      cfg.HTTP.WriteTimeout.Std(),
		IdleTimeout:       cfg.HTTP.IdleTimeout.Std(),
		MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

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
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ln) }()
	log.Info("triggerd is serving", "listen", ln.Addr().String(), "node", cfg.NodeID,
		"store_schema", cfg.Store.Schema, "projects", len(cfg.Projects), "version", version())
	if started != nil {
		started(ln.Addr().String())
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
	stopDispatch()
	shutCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
	}
	if err := <-dispDone; err != nil {
		log.Error("releasing held rows failed; their leases will lapse", "err", err)
	}
	log.Info("stopped")
	return serveErr
}

// source is a feed of events: database changes or watched directories.
type source interface {
	// Check says what to fix when the source cannot start.
	Check(ctx context.Context) error
	// Run feeds the dispatcher until ctx ends.
	Run(ctx context.Context)
}

// eventSources builds the change capture and file sources of every project.
func eventSources(cfg *config.Config, disp *dispatch.Dispatcher, st *store.Store, log *slog.Logger) ([]source, error) {
	var out []source
	dbs, err := cdc.Sources(cfg, disp, cdc.Options{StoreSchema: cfg.Store.Schema, Logger: log})
	if err != nil {
		return nil, err
	}
	for _, s := range dbs {
		out = append(out, s)
	}
	dirs, err := filewatch.Sources(cfg, disp, st, filewatch.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	for _, s := range dirs {
		out = append(out, s)
	}
	return out, nil
}
