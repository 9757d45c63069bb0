package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/node"
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
	reconfigure := make(chan *config.Config)
	if !signal.Ignored(syscall.SIGHUP) { // under nohup, SIGHUP stays ignored
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go reloadOnHUP(ctx, *path, hup, reconfigure, log)
	}
	n, err := node.New(cfg, node.Options{Logger: log, Version: version(), Reconfigure: reconfigure})
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// reloadOnHUP reads the config file again at each SIGHUP and hands it to
// the node, until ctx ends. A file that does not load is logged, and the
// node keeps its config.
func reloadOnHUP(ctx context.Context, path string, hup <-chan os.Signal, to chan<- *config.Config, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := config.Load(path)
		if err != nil {
			log.Error("SIGHUP: the config file does not load; nothing changes", "err", err)
			continue
		}
		log.Info("SIGHUP: config file read again", "config", path)
		select {
		case to <- cfg:
		case <-ctx.Done():
			return
		}
	}
}
