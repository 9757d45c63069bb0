package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// eventsUsage is the help of "triggerd events".
const eventsUsage = `Usage:
  triggerd events list      [connection] [filters] [--limit N] [--cursor C] [--all] [--json]
  triggerd events redeliver [connection] (--id ID | filters)
  triggerd events cancel    [connection] (--id ID | filters)
  triggerd events purge     [connection] --before TIME [--status S,S] [--project P] [--type T] [--trigger N]

` + adminConnection + `Filters: --project --type --trigger --status --since --until --batch-id --remark
(and --id), as the admin API's GET /v1/admin/events takes them.

purge deletes the processed, failed and cancelled events (--status: some
of them) whose outcome is older than --before (an RFC 3339 time, or a
duration back from now such as 720h), with their attempts. Staged events
are never purged.

Run "triggerd events list -h" for every flag.
`

// eventsCommand is "triggerd events": it lists, redelivers and cancels
// events through the admin API of a running node.
func eventsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, eventsUsage)
		if len(args) == 0 {
			return errors.New("events needs a subcommand: list, redeliver, cancel or purge")
		}
		return flag.ErrHelp
	}
	sub := args[0]
	switch sub {
	case "list", "redeliver", "cancel":
	case "purge":
		return purgeCommand(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, eventsUsage)
		return fmt.Errorf("events %s: no such subcommand: use list, redeliver, cancel or purge", sub)
	}
	fs := flag.NewFlagSet("events "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	filters := map[string]*string{}
	for _, f := range []struct{ name, param, usage string }{
		{"project", "project", "only this project"},
		{"type", "type", "only this event type"},
		{"trigger", "trigger", "only this trigger"},
		{"status", "status", "only this status: staged, processed, failed or cancelled"},
		{"since", "since", "only events from this RFC 3339 time on (the time in their id)"},
		{"until", "until", "only events before this RFC 3339 time"},
		{"id", "id", "only this event"},
		{"batch-id", "batch_id", "only the rows of this queued event"},
		{"remark", "remark", "only events whose remark contains this text"},
	} {
		filters[f.param] = fs.String(f.name, "", f.usage)
	}
	var limit *int
	var cursor *string
	var all, asJSON *bool
	if sub == "list" {
		limit = fs.Int("limit", 50, "events per page, at most 500")
		cursor = fs.String("cursor", "", "start at the page this cursor names (printed after a page with more)")
		all = fs.Bool("all", false, "print every page, not only the first")
		asJSON = fs.Bool("json", false, "print one JSON object per event, with its attempts")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("events %s: unexpected argument %q: filters are flags, such as --trigger %s", sub, fs.Arg(0), fs.Arg(0))
	}
	c, err := af.client(ctx, "events")
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return listEvents(ctx, c, filters, *limit, *cursor, *all, *asJSON, stdout, stderr)
	default:
		return changeEvents(ctx, c, sub, filters, stdout)
	}
}

// listEvents prints events, a page at a time, newest first.
func listEvents(ctx context.Context, c *adminClient, filters map[string]*string, limit int, cursor string, all, asJSON bool, stdout, stderr io.Writer) error {
	for {
		q := url.Values{}
		for name, v := range filters {
			if *v != "" {
				q.Set(name, *v)
			}
		}
		q.Set("limit", fmt.Sprint(limit))
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Events     []json.RawMessage `json:"events"`
			NextCursor *string           `json:"next_cursor"`
		}
		if err := c.do(ctx, http.MethodGet, "/events?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		for _, raw := range page.Events {
			if err := printEvent(stdout, raw, asJSON); err != nil {
				return fmt.Errorf("write to stdout: %w", err)
			}
		}
		if page.NextCursor == nil {
			return nil
		}
		if !all {
			fmt.Fprintf(stderr, "more: --cursor %s (or --all)\n", *page.NextCursor)
			return nil
		}
		cursor = *page.NextCursor
	}
}

// printEvent prints one event: as its JSON, or as a line like tail's.
func printEvent(w io.Writer, raw json.RawMessage, asJSON bool) error {
	if asJSON {
		_, err := fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	var e struct {
		ID, Type, Trigger, Status string
		CreatedAt                 string  `json:"created_at"`
		Attempts                  int     `json:"attempt_count"`
		Remark                    *string `json:"remark"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return err
	}
	remark := ""
	if e.Remark != nil {
		remark = "  " + *e.Remark
	}
	_, err := fmt.Fprintf(w, "%s  %s  %-16s %-16s %-9s %d%s\n", e.CreatedAt, e.ID, e.Type, e.Trigger, e.Status, e.Attempts, remark)
	return err
}

// changeEvents redelivers or cancels one event (--id alone) or every
// event matching the filters, and prints how many, as "redelivered: N".
func changeEvents(ctx context.Context, c *adminClient, sub string, filters map[string]*string, stdout io.Writer) error {
	did := map[string]string{"redeliver": "redelivered", "cancel": "cancelled"}[sub]
	given := map[string]string{}
	for name, v := range filters {
		if *v != "" {
			given[name] = *v
		}
	}
	path, body := "/events/"+sub, []byte(nil)
	if id, ok := given["id"]; ok && len(given) == 1 {
		path = "/events/" + url.PathEscape(id) + "/" + sub
	} else {
		if len(given) == 0 {
			return fmt.Errorf("events %s needs --id or at least one filter (--project, --type, --trigger, --status, --since, --until, --batch-id, --remark)", sub)
		}
		body, _ = json.Marshal(given)
	}
	var out map[string]int
	if err := c.do(ctx, http.MethodPost, path, body, &out); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "%s: %d\n", did, out[did])
	return err
}

// purgeCommand is "triggerd events purge": it deletes, through the admin
// API, the events whose outcome is older than --before, and prints how
// many, as "purged: N".
func purgeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events purge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	before := fs.String("before", "", "required: purge events whose outcome is older than this RFC 3339 time, or than this duration back from now (720h)")
	statuses := fs.String("status", "", "only these statuses, comma-separated: processed, failed, cancelled (default: all three)")
	body := map[string]any{}
	filters := map[string]*string{}
	for _, f := range []struct{ name, usage string }{
		{"project", "only this project"}, {"type", "only this event type"}, {"trigger", "only this trigger"},
	} {
		filters[f.name] = fs.String(f.name, "", f.usage)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("events purge: unexpected argument %q: give everything as flags, such as --before 720h", fs.Arg(0))
	}
	switch d, err := time.ParseDuration(*before); {
	case *before == "":
		return errors.New("events purge needs --before: an RFC 3339 time (2026-11-01T00:00:00Z) or a duration back from now (720h for 30 days)")
	case err == nil && d < 0:
		return fmt.Errorf("events purge: --before %s is a negative duration: write how long ago, such as 720h", *before)
	case err == nil:
		body["before"] = time.Now().Add(-d).UTC().Format(time.RFC3339Nano)
	default:
		body["before"] = *before // the node checks it, and says what is wrong
	}
	if *statuses != "" {
		list := strings.Split(*statuses, ",")
		for i := range list {
			list[i] = strings.TrimSpace(list[i])
		}
		body["statuses"] = list
	}
	for name, v := range filters {
		if *v != "" {
			body[name] = *v
		}
	}
	c, err := af.client(ctx, "events")
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(body)
	var out map[string]int
	if err := c.do(ctx, http.MethodPost, "/events/purge", raw, &out); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "purged: %d\n", out["purged"])
	return err
}
