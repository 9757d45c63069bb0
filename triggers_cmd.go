package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/triggerd/triggerd/config"
)

const triggersUsage = `Usage:
  triggerd triggers list   [flags] [--project P] [--json]
  triggerd triggers get    [flags] --project P NAME
  triggerd triggers apply  [flags] --project P -f FILE
  triggerd triggers delete [flags] --project P NAME

They call the admin API of a running node. --project may be left out when
the config has one project. FILE is one trigger in YAML or JSON, with the
keys of a trigger in the config file; - reads it from stdin.

` + adminConnection

// triggersCommand is "triggerd triggers": list, get, apply and delete the
// triggers of a running node through its admin API.
func triggersCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, triggersUsage)
		return errors.New("triggers needs a subcommand: list, get, apply or delete")
	}
	sub := args[0]
	fs := flag.NewFlagSet("triggers "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, triggersUsage); fs.PrintDefaults() }
	var af adminFlags
	af.register(fs)
	project := fs.String("project", "", "the project (default: the config's only project)")
	file := fs.String("f", "", "apply: the trigger's file, YAML or JSON (- for stdin)")
	asJSON := fs.Bool("json", false, "list: print the admin API's JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := af.client(ctx, "triggers")
	if err != nil {
		return err
	}
	if *project == "" && sub != "list" {
		if *project, err = onlyProject(af.config); err != nil {
			return err
		}
	}
	name := ""
	switch sub {
	case "get", "delete":
		if fs.NArg() != 1 {
			return fmt.Errorf("triggers %s takes the trigger's name, and only it", sub)
		}
		name = fs.Arg(0)
	case "list", "apply":
		if fs.NArg() != 0 {
			return fmt.Errorf("triggers %s takes no arguments, got %q", sub, fs.Args())
		}
	default:
		fmt.Fprint(stderr, triggersUsage)
		return fmt.Errorf("unknown triggers subcommand %q: use list, get, apply or delete", sub)
	}
	one := "/projects/" + url.PathEscape(*project) + "/triggers/" + url.PathEscape(name)
	switch sub {
	case "list":
		return listTriggers(ctx, c, *project, *asJSON, stdout)
	case "get":
		var t json.RawMessage
		if err := c.do(ctx, "GET", one, nil, &t); err != nil {
			return err
		}
		return printJSON(stdout, t)
	case "delete":
		var out struct {
			Cancelled int `json:"cancelled"`
		}
		if err := c.do(ctx, "DELETE", one, nil, &out); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "deleted trigger %s of project %s; %d staged rows cancelled\n", name, *project, out.Cancelled)
		return err
	}
	return applyTrigger(ctx, c, *project, *file, stdin, stdout)
}

// applyTrigger sends the trigger of file to the node.
func applyTrigger(ctx context.Context, c *adminClient, project, file string, stdin io.Reader, stdout io.Writer) error {
	var body []byte
	var err error
	switch file {
	case "":
		return errors.New("triggers apply needs -f FILE (or -f - for stdin)")
	case "-":
		body, err = io.ReadAll(stdin)
	default:
		body, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("read the trigger: %w", err)
	}
	// The name is the path's: read it from the file; the node checks the rest.
	var named struct {
		Name string `yaml:"name"`
	}
	if err := yaml.Unmarshal(body, &named); err != nil || named.Name == "" {
		return fmt.Errorf("%s: the trigger needs a name (name: ...); the node checks the rest", file)
	}
	var t json.RawMessage
	path := "/projects/" + url.PathEscape(project) + "/triggers/" + url.PathEscape(named.Name)
	if err := c.do(ctx, "PUT", path, body, &t); err != nil {
		return err
	}
	return printJSON(stdout, t)
}

// listTriggers prints the triggers of one project, or of all.
func listTriggers(ctx context.Context, c *adminClient, project string, asJSON bool, stdout io.Writer) error {
	path := "/triggers"
	if project != "" {
		path = "/projects/" + url.PathEscape(project) + "/triggers"
	}
	var out struct {
		Triggers []struct {
			Project   string `json:"project"`
			Name      string `json:"name"`
			DefinedIn string `json:"defined_in"`
			Problem   string `json:"problem"`
			Trigger   struct {
				Type string `json:"type"`
				URL  string `json:"url"`
			} `json:"trigger"`
		} `json:"triggers"`
	}
	if asJSON {
		var raw json.RawMessage
		if err := c.do(ctx, "GET", path, nil, &raw); err != nil {
			return err
		}
		return printJSON(stdout, raw)
	}
	if err := c.do(ctx, "GET", path, nil, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tNAME\tTYPE\tDEFINED IN\tURL\tPROBLEM")
	for _, t := range out.Triggers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Project, t.Name, t.Trigger.Type, t.DefinedIn, t.Trigger.URL, t.Problem)
	}
	return tw.Flush()
}

// printJSON prints a JSON answer indented.
func printJSON(w io.Writer, v json.RawMessage) error {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return err
}

// onlyProject is the id of the only project of the config at path.
func onlyProject(path string) (string, error) {
	if path == "" {
		return "", errors.New("which project? pass --project")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return "", err
	}
	if len(cfg.Projects) != 1 {
		return "", fmt.Errorf("the config has %d projects: pass --project", len(cfg.Projects))
	}
	return cfg.Projects[0].ID, nil
}
