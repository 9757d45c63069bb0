// Command triggerd is an event-trigger engine: it turns custom events posted
// over HTTP (and, in later versions, Postgres row changes and files) into
// reliable webhook deliveries, logged in Postgres.
//
// Usage:
//
//	triggerd serve --config FILE   run a node
//	triggerd dev                   run a node on a throwaway Postgres, with a demo receiver
//	triggerd tail --config FILE    print event_logs rows, and follow them
//	triggerd version               print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `triggerd: webhooks for events, delivered reliably

Usage:
  triggerd serve --config FILE [--log-format text|json]
  triggerd dev [--listen ADDR] [--log-format text|json]
  triggerd tail --config FILE [--project P] [--type T] [--trigger NAME] [--status S] [--limit N] [--follow] [--json]
  triggerd version

Run "triggerd COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals()...)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "triggerd:", err)
		os.Exit(1)
	}
}

// stopSignals are the signals that stop a command cleanly: SIGTERM, and
// Ctrl-C (SIGINT) and SIGHUP (its terminal closed) unless they were
// ignored when triggerd started, as nohup and background jobs ask.
func stopSignals() []os.Signal {
	sigs := []os.Signal{syscall.SIGTERM}
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGHUP} {
		if !signal.Ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	return sigs
}

// run carries out one command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serveCommand(ctx, args[1:], stderr)
	case "dev":
		return devCommand(ctx, args[1:], stdout, stderr)
	case "tail":
		return tailCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "triggerd", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// version describes this build: the module version, or the VCS revision of
// a build from a checkout.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" && (v == "" || v == "(devel)") {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v = "devel-" + rev + modified
	}
	if v == "" {
		v = "(devel)"
	}
	return v + " " + info.GoVersion
}

// newLogger builds the slog logger a --log-format flag asks for.
func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
