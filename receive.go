package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

// receiveCommand is "triggerd receive": a webhook that checks each
// delivery's X-SC-Token with a project's keys and prints it, as dev's
// receiver does, for nodes it does not run (docker-compose's demo
// receiver). Any node of the project may send to it.
func receiveCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("receive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("TRIGGERD_CONFIG"), "the nodes' config file, for the project's keys (default: $TRIGGERD_CONFIG)")
	project := fs.String("project", "", "the project whose deliveries it takes (default: the config's only project)")
	listen := fs.String("listen", "127.0.0.1:9000", "the address to take deliveries on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("receive needs the nodes' config, for the project's keys: pass --config FILE or set TRIGGERD_CONFIG")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *project == "" {
		if len(cfg.Projects) != 1 {
			return fmt.Errorf("the config has %d projects: pass --project", len(cfg.Projects))
		}
		*project = cfg.Projects[0].ID
	}
	keys, err := auth.Keyrings(cfg, nil)
	if err != nil {
		return err
	}
	if keys[*project] == nil {
		return fmt.Errorf("--project %s: the config has no such project", *project)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	srv := newReceiver(stdout, keys[*project], "")
	fmt.Fprintf(stdout, "receiver: taking the deliveries of project %s on http://%s/ (Ctrl-C stops it)\n", *project, ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("receiver: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("receiver: %w", err)
	}
	return nil
}
