package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/triggerd/triggerd/cdc"
	"github.com/triggerd/triggerd/config"
)

// sourcesUsage is the help of "triggerd sources".
const sourcesUsage = `Usage:
  triggerd sources list --config FILE [--json]
  triggerd sources drop --config FILE [--project P] --db ALIAS [--slot NAME] [--force]

They connect to the config's databases themselves (no node needs to run).

list shows, for each database of the config, the replication slots of its
server and the publications of the database that are named triggerd_* or
named in the config: who streams each slot, the WAL it keeps on the server,
and which project and database of the config use it ("not in the config":
none does).

drop drops the slot and the publication of database ALIAS of project P,
each if it exists. It refuses while a session streams the slot, unless
--force, which ends that session first. With --slot NAME it drops instead
slot NAME, on the server of ALIAS, and the publication of that name in the
slot's database: what was made for a database no longer in the config.
--project may be left out when the config has one project.
`

// sourcesCommand is "triggerd sources": list and drop the replication
// slots and publications triggerd made on the configured databases.
func sourcesCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, sourcesUsage)
		if len(args) == 0 {
			return errors.New("sources needs a subcommand: list or drop")
		}
		return flag.ErrHelp
	}
	sub := args[0]
	if sub != "list" && sub != "drop" {
		fmt.Fprint(stderr, sourcesUsage)
		return fmt.Errorf("sources %s: no such subcommand: use list or drop", sub)
	}
	fs := flag.NewFlagSet("sources "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, sourcesUsage); fs.PrintDefaults() }
	path := fs.String("config", os.Getenv("TRIGGERD_CONFIG"), "config file: the databases (default: $TRIGGERD_CONFIG)")
	asJSON := fs.Bool("json", false, "list: print JSON")
	project := fs.String("project", "", "drop: the project (default: the config's only project)")
	alias := fs.String("db", "", "drop: the database's alias in the project's databases")
	slot := fs.String("slot", "", "drop: a slot no database of the config uses, on the server of --db")
	force := fs.Bool("force", false, "drop: end the session streaming the slot, if any")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("sources %s takes no arguments, got %q", sub, fs.Args())
	}
	if *path == "" {
		return fmt.Errorf("sources %s needs the config: pass --config FILE, or set TRIGGERD_CONFIG", sub)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if sub == "list" {
		return listSources(ctx, cfg, *asJSON, stdout, stderr)
	}
	return dropSource(ctx, *path, cfg, *project, *alias, *slot, *force, stdout, stderr)
}

// listSources prints what cdc.List finds, as a table or as JSON. The
// databases it could not read go to stderr, and make it fail after it
// printed the others.
func listSources(ctx context.Context, cfg *config.Config, asJSON bool, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	found := cdc.List(ctx, cfg)
	if asJSON {
		out, err := json.MarshalIndent(found, "", "  ")
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(stdout, "%s\n", out); err != nil {
			return err
		}
	} else {
		usedBy := func(project, alias string) string {
			if project == "" {
				return "not in the config"
			}
			return project + "/" + alias
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVER\tDATABASE\tKIND\tNAME\tPLUGIN\tSTREAMED BY\tRETAINED WAL\tUSED BY")
		for _, s := range found.Slots {
			by := "-"
			if s.Active {
				by = fmt.Sprintf("pid %d", s.PID)
				if s.Application != "" {
					by += " " + s.Application
				}
				if s.Client != "" {
					by += " " + s.Client
				}
			}
			retained := "-"
			if s.RetainedBytes != nil {
				retained = fmt.Sprintf("%s (%d bytes)", s.Retained, *s.RetainedBytes)
			}
			fmt.Fprintf(tw, "%s\t%s\tslot\t%s\t%s\t%s\t%s\t%s\n", s.Server, s.Database, s.Slot, s.Plugin, by, retained, usedBy(s.Project, s.Alias))
		}
		for _, p := range found.Publications {
			fmt.Fprintf(tw, "%s\t%s\tpublication\t%s\t-\t-\t-\t%s\n", p.Server, p.Database, p.Publication, usedBy(p.Project, p.Alias))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, u := range found.Unread {
		fmt.Fprintf(stderr, "triggerd: database %s of project %s not read: %s\n", u.Alias, u.Project, u.Error)
	}
	if len(found.Unread) > 0 {
		return fmt.Errorf("%d of the config's databases could not be read: the list lacks their slots and publications", len(found.Unread))
	}
	return nil
}

// dropSource drops the slot and publication of a database of the config
// cfg, read from path (or, with slot, a slot of its server that the config does not use), and
// says what it dropped.
func dropSource(ctx context.Context, path string, cfg *config.Config, project, alias, slot string, force bool, stdout, stderr io.Writer) error {
	if project == "" {
		var err error
		if project, err = onlyProject(path); err != nil {
			return err
		}
	}
	i := slices.IndexFunc(cfg.Projects, func(p config.Project) bool { return p.ID == project })
	if i < 0 {
		return fmt.Errorf("the config has no project %q", project)
	}
	p := &cfg.Projects[i]
	if alias == "" {
		return fmt.Errorf("sources drop needs --db ALIAS: one of project %s's databases", project)
	}
	db, ok := p.Databases[alias]
	if !ok {
		return fmt.Errorf("project %s has no database %q in the config (sources list shows what the servers have; --slot drops a slot of a database no longer in the config)", project, alias)
	}
	if slot != "" {
		for _, q := range cfg.Projects {
			for a, d := range q.Databases {
				if d.Slot == slot {
					return fmt.Errorf("slot %s is the slot of database %s of project %s in the config: drop it with --project %s --db %s, without --slot", slot, a, q.ID, q.ID, a)
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	d, err := cdc.Drop(ctx, p, alias, slot, force)
	if err != nil {
		return err
	}
	if d.Ended != 0 {
		fmt.Fprintf(stdout, "ended the session streaming the slot (server process %d)\n", d.Ended)
	}
	slotName, pubName := db.Slot, db.Publication
	if slot != "" {
		slotName, pubName = slot, slot
	}
	for _, x := range []struct{ kind, name, dropped string }{{"replication slot", slotName, d.Slot}, {"publication", pubName, d.Publication}} {
		if x.dropped != "" {
			fmt.Fprintf(stdout, "dropped %s %s\n", x.kind, x.name)
		} else {
			fmt.Fprintf(stdout, "no %s %s: nothing to drop\n", x.kind, x.name)
		}
	}
	if slot == "" {
		fmt.Fprintf(stderr, "triggerd: note: a node whose config still has database %s in project %s creates slot %s and publication %s again when it next starts streaming it: remove the database from every node's config first (and reload or restart them)\n", alias, project, db.Slot, db.Publication)
	}
	return nil
}
