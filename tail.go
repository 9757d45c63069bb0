package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// tailCommand is "triggerd tail": it prints event_logs rows, newest last,
// and with --follow keeps printing rows as they are created or change.
func tailCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("TRIGGERD_CONFIG"), "config file (default: $TRIGGERD_CONFIG)")
	var f store.Filter
	fs.StringVar(&f.Project, "project", "", "only this project")
	fs.StringVar(&f.Type, "type", "", "only this event type")
	fs.StringVar(&f.Trigger, "trigger", "", "only this trigger")
	status := fs.String("status", "", "only this status: staged, processed, failed or cancelled")
	limit := fs.Int("limit", 20, "how many existing rows to print first")
	follow := fs.Bool("follow", false, "keep printing rows as they are created or change status")
	asJSON := fs.Bool("json", false, "print one JSON object per row")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("tail needs a config: pass --config FILE or set TRIGGERD_CONFIG")
	}
	switch s := store.Status(*status); s {
	case "", store.StatusStaged, store.StatusProcessed, store.StatusFailed, store.StatusCancelled:
		f.Status = s
	default:
		return fmt.Errorf("--status %q: use staged, processed, failed or cancelled", *status)
	}
	if *limit < 0 {
		return fmt.Errorf("--limit %d: use 0 or more", *limit)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Options{URL: cfg.Store.URL, Schema: cfg.Store.Schema, MaxConns: 2, Writers: 1})
	if err != nil {
		return err
	}
	defer st.Close()

	p := &rowPrinter{w: stdout, json: *asJSON, seen: make(map[uuid.UUID]rowState)}
	var l *store.Listener
	if *follow {
		// Listen first, so that nothing committed while the recent rows are
		// read is missed.
		if l, err = st.Listen(ctx); err != nil {
			return err
		}
		defer l.Close()
	}
	rows, err := st.Recent(ctx, f, *limit)
	if err != nil {
		return explainMissingTables(err, cfg.Store.Schema)
	}
	if err := p.printAll(rows); err != nil {
		return err
	}
	if l == nil {
		return nil
	}
	for {
		ids, err := l.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		rows, err := st.Events(ctx, ids, f)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if err := p.printAll(rows); err != nil {
			return err
		}
	}
}

// explainMissingTables turns "relation does not exist" into advice.
func explainMissingTables(err error, schema string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return fmt.Errorf("schema %s has no event_logs table yet: start triggerd serve with this config once to create it", schema)
	}
	return err
}

// rowState is what was last printed of a row.
type rowState struct {
	status   store.Status
	attempts int
}

// rowPrinter prints rows, skipping a row whose status and attempts are
// those it last printed (a notification can name a row that did not change).
type rowPrinter struct {
	w    io.Writer
	json bool
	seen map[uuid.UUID]rowState
}

// seenLimit bounds the memory of printed rows in a long --follow.
const seenLimit = 100000

// printAll prints rows in order, stopping at the first that fails.
func (p *rowPrinter) printAll(rows []store.EventLog) error {
	for i := range rows {
		if err := p.print(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}

// print writes a row as a line, unless it is the row's last line again.
func (p *rowPrinter) print(r *store.EventLog) error {
	state := rowState{r.Status, r.Attempts}
	if last, ok := p.seen[r.ID]; ok && last == state {
		return nil
	}
	if len(p.seen) >= seenLimit {
		clear(p.seen)
	}
	var line []byte
	if p.json {
		var err error
		line, err = json.Marshal(tailRow{
			Time: formatTime(r.UpdatedAt), ID: r.ID, BatchID: r.BatchID, Project: r.Project, Type: r.Type,
			Trigger: r.Trigger, Status: r.Status, Attempts: r.Attempts, Remark: r.Remark,
			FireAt: formatTime(r.FireAt), Data: r.Payload, Response: r.Response,
		})
		if err != nil {
			return fmt.Errorf("row %s as JSON: %w", r.ID, err)
		}
	} else {
		line = fmt.Appendf(nil, "%s  %s  %-16s %-16s %-9s %d  %s", r.UpdatedAt.UTC().Format("2006-01-02T15:04:05.000Z"),
			r.ID, r.Type, r.Trigger, r.Status, r.Attempts, r.Remark)
	}
	if _, err := p.w.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("writing to stdout: %w", err)
	}
	p.seen[r.ID] = state
	return nil
}

// formatTime writes t in UTC as RFC 3339 with as many fractional digits
// as it needs. Unlike time.Time's JSON encoding it writes any year the
// store can hold (past 9999 with more digits, before 1 with a sign).
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// tailRow is a row as --json prints it.
type tailRow struct {
	Time     string          `json:"time"`
	ID       uuid.UUID       `json:"id"`
	BatchID  uuid.UUID       `json:"batch_id"`
	Project  string          `json:"project"`
	Type     string          `json:"type"`
	Trigger  string          `json:"trigger"`
	Status   store.Status    `json:"status"`
	Attempts int             `json:"attempts"`
	Remark   string          `json:"remark,omitempty"`
	FireAt   string          `json:"fire_at"`
	Data     json.RawMessage `json:"data,omitempty"`
	Response json.RawMessage `json:"response,omitempty"`
}
