package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"

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
	n, err := node.New(cfg, node.Options{Logger: log, Version: version()})
	if err != nil {
		return err
	}
	return n.Run(ctx)
}
