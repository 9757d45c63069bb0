package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

// eventsUsage is the help of "triggerd events".
const eventsUsage = `Usage:
  triggerd events list      [connection] [filters] [--limit N] [--cursor C] [--all] [--json]
  triggerd events redeliver [connection] (--id ID | filters)
  triggerd events cancel    [connection] (--id ID | filters)

Connection: --config FILE (or $TRIGGERD_CONFIG) gives the node's address
(listen) and signs an admin token with its admin secret; --url URL (or
$TRIGGERD_URL) names the node instead of listen; without a config's admin
section, log in with $TRIGGERD_ADMIN_USER and $TRIGGERD_ADMIN_PASSWORD, or
pass a token from POST /v1/admin/login in $TRIGGERD_ADMIN_TOKEN.
Filters: --project --type --trigger --status --since --until --batch-id --remark
(and --id), as the admin API's GET /v1/admin/events takes them.

Run "triggerd events list -h" for every flag.
`

// eventsCommand is "triggerd events": it lists, redelivers and cancels
// events through the admin API of a running node.
func eventsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, eventsUsage)
		if len(args) == 0 {
			return errors.New("events needs a subcommand: list, redeliver or cancel")
		}
		return flag.ErrHelp
	}
	sub := args[0]
	switch sub {
	case "list", "redeliver", "cancel":
	default:
		fmt.Fprint(stderr, eventsUsage)
		return fmt.Errorf("events %s: no such subcommand: use list, redeliver or cancel", sub)
	}
	fs := flag.NewFlagSet("events "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv("TRIGGERD_CONFIG"), "config file: the node's listen address and admin secret (default: $TRIGGERD_CONFIG)")
	baseURL := fs.String("url", os.Getenv("TRIGGERD_URL"), "the node's API, as http://host:port (default: $TRIGGERD_URL, else the config's listen)")
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
	c, err := newAdminClient(ctx, *configPath, *baseURL)
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

// adminClient calls the admin API of one node with a token.
type adminClient struct {
	base  string // http://host:port
	token string
	http  *http.Client
}

// newAdminClient finds the node and a token: a token from the
// environment, else a login with the user and password from the
// environment, else one signed with the config's admin secret.
func newAdminClient(ctx context.Context, configPath, baseURL string) (*adminClient, error) {
	var cfg *config.Config
	if configPath != "" {
		var err error
		if cfg, err = config.Load(configPath); err != nil {
			return nil, err
		}
	}
	if baseURL == "" {
		if cfg == nil {
			return nil, errors.New("events needs the node's address: pass --config FILE (its listen) or --url http://host:port, or set TRIGGERD_CONFIG or TRIGGERD_URL")
		}
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("the config's listen %q is not host:port", cfg.Listen)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		baseURL = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: write the node's API as http://host:port", baseURL)
	}
	c := &adminClient{base: strings.TrimSuffix(baseURL, "/"), http: &http.Client{}}
	user, password := os.Getenv("TRIGGERD_ADMIN_USER"), os.Getenv("TRIGGERD_ADMIN_PASSWORD")
	switch {
	case os.Getenv("TRIGGERD_ADMIN_TOKEN") != "":
		c.token = os.Getenv("TRIGGERD_ADMIN_TOKEN")
	case user != "" || password != "":
		if user == "" || password == "" {
			return nil, errors.New("set both TRIGGERD_ADMIN_USER and TRIGGERD_ADMIN_PASSWORD to log in")
		}
		var login struct {
			Token string `json:"token"`
		}
		body, _ := json.Marshal(map[string]string{"user": user, "password": password})
		if err := c.call(ctx, http.MethodPost, "/v1/admin/login", body, &login); err != nil {
			return nil, err
		}
		c.token = login.Token
	case cfg != nil && cfg.Admin != nil:
		token, _, err := auth.NewAdminKeys(cfg.Admin.Secret, cfg.Admin.TokenTTL.Std()).Sign(cfg.Admin.User, time.Now())
		if err != nil {
			return nil, err
		}
		c.token = token
	case cfg != nil:
		return nil, fmt.Errorf("%s has no admin section: add one (and restart the node), or set TRIGGERD_ADMIN_USER and TRIGGERD_ADMIN_PASSWORD, or TRIGGERD_ADMIN_TOKEN", configPath)
	default:
		return nil, errors.New("events needs admin credentials: pass --config FILE with an admin section, or set TRIGGERD_ADMIN_USER and TRIGGERD_ADMIN_PASSWORD, or TRIGGERD_ADMIN_TOKEN")
	}
	return c, nil
}

// call sends a request to the admin API and decodes its JSON answer into
// out; an answer other than 200 is an error with the API's message.
func (c *adminClient) call(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the node running, and is that its address?)", method, c.base+path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, c.base+path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, e.Error)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what the admin API answers: %w", method, path, err)
	}
	return nil
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
		if err := c.call(ctx, http.MethodGet, "/v1/admin/events?"+q.Encode(), nil, &page); err != nil {
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
	path, body := "/v1/admin/events/"+sub, []byte(nil)
	if id, ok := given["id"]; ok && len(given) == 1 {
		path = "/v1/admin/events/" + url.PathEscape(id) + "/" + sub
	} else {
		if len(given) == 0 {
			return fmt.Errorf("events %s needs --id or at least one filter (--project, --type, --trigger, --status, --since, --until, --batch-id, --remark)", sub)
		}
		body, _ = json.Marshal(given)
	}
	var out map[string]int
	if err := c.call(ctx, http.MethodPost, path, body, &out); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "%s: %d\n", did, out[did])
	return err
}
