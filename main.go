// Command triggerd is an event-trigger engine: it turns custom events posted
// over HTTP, Postgres row changes and files written to watched folders into
// reliable webhook deliveries, logged in Postgres. This package reads the
// command line, the config and the signals; package node runs the node.
//
// Usage:
//
//	triggerd serve --config FILE   run a node
//	triggerd dev                   run a node on a throwaway Postgres, with a demo receiver
//	triggerd tail --config FILE    print event_logs rows, and follow them
//	triggerd triggers ...          list, get, apply and delete a running node's triggers
//	triggerd events list|redeliver|cancel|purge   find, redeliver, cancel and purge events through a node's admin API
//	triggerd sources list|drop     list and drop the replication slots and publications on the databases
//	triggerd version               print the version, revision and Go version
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
	"runtime"
	"runtime/debug"
	"syscall"
)

const usage = `triggerd: webhooks for events, delivered reliably

Usage:
  triggerd serve --config FILE [--log-format text|json]
  triggerd dev [--listen ADDR] [--log-format text|json]
  triggerd tail --config FILE [--project P] [--type T] [--trigger NAME] [--status S] [--limit N] [--follow] [--json]
  triggerd triggers list|get|apply|delete --config FILE [--project P] [NAME | -f FILE]
  triggerd events list|redeliver|cancel|purge [--config FILE] [--url URL] [filters]
  triggerd sources list|drop --config FILE [--json] [--project P --db ALIAS [--slot NAME] [--force]]
  triggerd receive --config FILE [--project P] [--listen ADDR]
  triggerd version

Run "triggerd COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals(os.Args[1:])...)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "triggerd:", err)
		os.Exit(1)
	}
}

// stopSignals are the signals that stop the command of args cleanly:
// Ctrl-C (SIGINT), SIGTERM, and SIGHUP (its terminal closed) unless it
// was ignored when triggerd started, as nohup asks, or the command is
// serve, which reloads its config on SIGHUP.
func stopSignals(args []string) []os.Signal {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) && (len(args) == 0 || args[0] != "serve") {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}

// survivePipes keeps a write to a broken pipe on stdout or stderr from
// killing the process, as it does by default: the write fails instead
// (SIGPIPE arrives on a channel no one reads). Call the function it returns
// to restore the default.
func survivePipes() (restore func()) {
	broken := make(chan os.Signal, 1)
	signal.Notify(broken, syscall.SIGPIPE)
	return func() { signal.Stop(broken) }
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
	case "triggers":
		return triggersCommand(ctx, args[1:], os.Stdin, stdout, stderr)
	case "events":
		return eventsCommand(ctx, args[1:], stdout, stderr)
	case "sources":
		return sourcesCommand(ctx, args[1:], stdout, stderr)
	case "receive":
		return receiveCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		return printVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// buildInfo is what the go command recorded about this build.
type buildInfo struct {
	version   string // the module's version, or (devel)
	revision  string // the VCS revision; empty without VCS information
	time      string // the revision's commit time
	modified  bool   // the tree had changes not committed
	goVersion string
}

// readBuildInfo reads this build's description from the binary.
func readBuildInfo() buildInfo {
	b := buildInfo{version: "(devel)", goVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if info.Main.Version != "" {
		b.version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.time":
			b.time = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

// version is this build in one line, for the User-Agent and the log: the
// module version, or the VCS revision of a build without one.
func version() string {
	b := readBuildInfo()
	v := b.version
	if b.revision != "" && v == "(devel)" {
		v = "devel-" + b.revision[:min(12, len(b.revision))]
		if b.modified {
			v += "+dirty"
		}
	}
	return v + " " + b.goVersion
}

// printVersion is "triggerd version": the module version, the revision
// and its commit time, whether the tree had changes, and the Go version.
func printVersion(w io.Writer) error {
	b := readBuildInfo()
	text := fmt.Sprintf("triggerd %s\n", b.version)
	if b.revision == "" {
		text += "  revision  unknown: no version control information in this build (go run, -buildvcs=false, or not built in a git clone)\n"
	} else {
		committed, modified := b.time, "no"
		if committed == "" {
			committed = "unknown"
		}
		if b.modified {
			modified = "yes: the tree had changes not committed"
		}
		text += fmt.Sprintf("  revision  %s\n  committed %s\n  modified  %s\n", b.revision, committed, modified)
	}
	text += fmt.Sprintf("  go        %s %s/%s\n", b.goVersion, runtime.GOOS, runtime.GOARCH)
	_, err := io.WriteString(w, text)
	return err
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
