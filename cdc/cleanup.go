package cdc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/triggerd/triggerd/config"
)

// ForgottenOver is how many bytes of WAL a slot that no configured
// database uses must retain for a node's start to warn of it (1 GB).
const ForgottenOver = 1 << 30

// SlotInfo is a replication slot named like triggerd's, as its server
// reports it.
type SlotInfo struct {
	// Server is the host:port it was read from, as the config's URL names it.
	Server string `json:"server"`
	// Database is the database the slot belongs to.
	Database string `json:"database"`
	Slot     string `json:"slot"`
	Plugin   string `json:"plugin"`
	// Active says a session streams the slot now: PID is its server
	// process, and Application and Client its application_name and
	// address, when the role may read them.
	Active      bool   `json:"active"`
	PID         uint32 `json:"pid,omitempty"`
	Application string `json:"application_name,omitempty"`
	Client      string `json:"client_addr,omitempty"`
	// RetainedBytes is how much WAL the server keeps for the slot (from its
	// restart_lsn to the current position), and Retained the same in
	// Postgres's units; nil and "" when the slot has no restart position.
	RetainedBytes *int64 `json:"retained_bytes"`
	Retained      string `json:"retained,omitempty"`
	// Project and Alias name the configured database that uses the slot;
	// "" when none does.
	Project string `json:"project,omitempty"`
	Alias   string `json:"alias,omitempty"`
}

// PublicationInfo is a publication named like triggerd's.
type PublicationInfo struct {
	Server      string `json:"server"`
	Database    string `json:"database"`
	Publication string `json:"publication"`
	// Tables is how many tables it publishes.
	Tables int `json:"tables"`
	// Project and Alias name the configured database that uses it; ""
	// when none does.
	Project string `json:"project,omitempty"`
	Alias   string `json:"alias,omitempty"`
}

// Listing is what List found on the configured databases.
type Listing struct {
	Slots        []SlotInfo        `json:"slots"`
	Publications []PublicationInfo `json:"publications"`
	// Unread are the databases that could not be read.
	Unread []Unread `json:"unread,omitempty"`
}

// Unread is a configured database List could not read, and why.
type Unread struct {
	Project string `json:"project"`
	Alias   string `json:"alias"`
	Error   string `json:"error"`
}

// target is one distinct database of a config, and the source whose URL
// reaches it.
type target struct {
	server, database string
	src              *Source
}

// use is a configured database: the project and alias that name it.
type use struct{ project, alias string }

// List reads, from each distinct database of cfg (by host, port and
// database name), the replication slots of its server and the
// publications of the database whose names start with triggerd_ or are
// configured, and says which configured database uses each. Slots are
// the whole server's, so a slot of a database removed from the config
// shows too, as long as another database of the same server remains. A
// database that cannot be read is listed in Unread; the others still are.
// Bound ctx: a server that does not answer keeps List waiting.
func List(ctx context.Context, cfg *config.Config) Listing {
	out := Listing{Slots: []SlotInfo{}, Publications: []PublicationInfo{}}
	targets, slotUse, pubUse := targets(cfg)
	var slots []string
	for k := range slotUse {
		slots = append(slots, k[1])
	}
	seen := make(map[[2]string]bool) // server, slot
	for _, t := range targets {
		var pubs []string
		for k := range pubUse {
			if k[0] == t.database {
				pubs = append(pubs, k[1])
			}
		}
		found, foundPubs, err := t.read(ctx, slots, pubs)
		if err != nil {
			out.Unread = append(out.Unread, Unread{Project: t.src.project, Alias: t.src.alias, Error: err.Error()})
			continue
		}
		for _, sl := range found {
			if seen[[2]string{t.server, sl.Slot}] {
				continue
			}
			seen[[2]string{t.server, sl.Slot}] = true
			u := slotUse[[2]string{sl.Database, sl.Slot}]
			sl.Project, sl.Alias = u.project, u.alias
			out.Slots = append(out.Slots, sl)
		}
		for _, p := range foundPubs {
			u := pubUse[[2]string{p.Database, p.Publication}]
			p.Project, p.Alias = u.project, u.alias
			out.Publications = append(out.Publications, p)
		}
	}
	return out
}

// targets lists the distinct databases of cfg, and which configured
// database uses each slot and publication, by database name and name.
// (Slots match by database name, not server: a server reached by two
// host names is still one server.)
func targets(cfg *config.Config) (ts []target, slotUse, pubUse map[[2]string]use) {
	slotUse, pubUse = make(map[[2]string]use), make(map[[2]string]use)
	seen := make(map[[2]string]bool)
	for i := range cfg.Projects {
		p := &cfg.Projects[i]
		for _, alias := range slices.Sorted(maps.Keys(p.Databases)) {
			db := p.Databases[alias]
			src, err := New(p, alias, nil, Options{})
			if err != nil {
				continue // cannot happen: alias is one of p's
			}
			t := target{src: src, server: "?", database: "?"}
			if pc, err := pgconn.ParseConfig(db.URL); err == nil {
				t.server, t.database = net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))), pc.Database
			} else {
				t.server = p.ID + "/" + alias // its own: reading it reports the URL's error
			}
			u := use{project: p.ID, alias: alias}
			slotUse[[2]string{t.database, db.Slot}] = u
			pubUse[[2]string{t.database, db.Publication}] = u
			if !seen[[2]string{t.server, t.database}] {
				seen[[2]string{t.server, t.database}] = true
				ts = append(ts, t)
			}
		}
	}
	slices.SortStableFunc(ts, func(a, b target) int {
		return cmp.Or(cmp.Compare(a.server, b.server), cmp.Compare(a.database, b.database))
	})
	return ts, slotUse, pubUse
}

// slotColumns reads a slot of pg_replication_slots s, with its walsender
// in pg_stat_replication r. A standby has no current WAL position of its
// own: what it has received stands in.
const slotColumns = `s.slot_name::text, coalesce(s.database::text, ''), coalesce(s.plugin::text, ''),
	s.active, coalesce(s.active_pid, 0), coalesce(r.application_name, ''), coalesce(host(r.client_addr), ''),
	pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, s.restart_lsn)::int8
	FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid`

// scanSlot reads a row of slotColumns.
func scanSlot(row pgx.CollectableRow) (SlotInfo, error) {
	var sl SlotInfo
	err := row.Scan(&sl.Slot, &sl.Database, &sl.Plugin, &sl.Active, &sl.PID, &sl.Application, &sl.Client, &sl.RetainedBytes)
	if sl.RetainedBytes != nil {
		sl.Retained = sizeText(*sl.RetainedBytes)
	}
	return sl, err
}

// sizeText writes a number of bytes in binary units, as Postgres's
// pg_size_pretty does (kB, MB, GB, TB of 1024), to one decimal.
func sizeText(n int64) string {
	units := []string{"bytes", "kB", "MB", "GB", "TB"}
	f, i := float64(n), 0
	for ; f >= 1024 && i < len(units)-1; i++ {
		f /= 1024
	}
	if i == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + units[i]
}

// read reads the target's server's slots and database's publications
// named triggerd_* or among slots and pubs.
func (t target) read(ctx context.Context, slots, pubs []string) ([]SlotInfo, []PublicationInfo, error) {
	conn, err := t.src.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT `+slotColumns+`
		WHERE s.slot_name LIKE 'triggerd\_%' OR s.slot_name = ANY($1) ORDER BY 1`, slots)
	var found []SlotInfo
	if err == nil {
		found, err = pgx.CollectRows(rows, scanSlot)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read the replication slots: %w", t.src.where(), err)
	}
	rows, err = conn.Query(ctx, `SELECT p.pubname::text, current_database()::text,
		(SELECT count(*) FROM pg_publication_tables pt WHERE pt.pubname = p.pubname)::int
		FROM pg_publication p WHERE p.pubname LIKE 'triggerd\_%' OR p.pubname = ANY($1) ORDER BY 1`, pubs)
	var foundPubs []PublicationInfo
	if err == nil {
		foundPubs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (PublicationInfo, error) {
			var p PublicationInfo
			return p, row.Scan(&p.Publication, &p.Database, &p.Tables)
		})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read the publications: %w", t.src.where(), err)
	}
	for i := range found {
		found[i].Server = t.server
	}
	for i := range foundPubs {
		foundPubs[i].Server = t.server
	}
	return found, foundPubs, nil
}

// WarnForgotten logs a warning for each slot named triggerd_* on the
// servers of cfg's databases that no configured database uses and that
// retains more than over bytes of WAL (ForgottenOver at a node's start),
// naming the command that drops it. It gives up, silently, when ctx ends
// (bound it: a node's start must not wait on it); databases it cannot read
// are left to the sources' own checks.
func WarnForgotten(ctx context.Context, cfg *config.Config, over int64, log *slog.Logger) {
	found := List(ctx, cfg)
	ts, _, _ := targets(cfg)
	for _, sl := range found.Slots {
		if sl.Project != "" || !strings.HasPrefix(sl.Slot, "triggerd_") || sl.RetainedBytes == nil || *sl.RetainedBytes <= over {
			continue
		}
		// Name a configured database of the slot's server to reach it by.
		via := ts[slices.IndexFunc(ts, func(t target) bool { return t.server == sl.Server })].src
		log.Warn("a replication slot no configured database uses keeps WAL on its server: drop it if nothing else uses it",
			"slot", sl.Slot, "slot_database", sl.Database, "server", sl.Server, "retained", sl.Retained, "retained_bytes", *sl.RetainedBytes,
			"drop_with", fmt.Sprintf("triggerd sources drop --config FILE --project %s --db %s --slot %s", via.project, via.alias, sl.Slot))
	}
}

// Dropped says what Drop dropped.
type Dropped struct {
	// Slot and Publication are the names Drop dropped, "" where there was
	// nothing of that name to drop.
	Slot, Publication string
	// Ended is the server process of the session Drop ended (with force)
	// to drop the slot; 0 when none streamed it.
	Ended uint32
}

// Drop drops the replication slot and the publication of database alias
// of project p, each only if it exists. With slot set, it drops instead,
// on the same server, the slot of that name, and the publication of the
// same name in the slot's database: what triggerd made for a database
// removed from the config. It refuses, dropping nothing, while a session
// streams the slot, unless force: then it ends that session first. It
// also refuses a slot of another database, or a publication triggerd
// cannot have made (FOR ALL TABLES). A node that still has the database in
// its config creates both again when its next session starts.
func Drop(ctx context.Context, p *config.Project, alias, slot string, force bool) (Dropped, error) {
	s, err := New(p, alias, nil, Options{})
	if err != nil {
		return Dropped{}, err
	}
	conn, err := s.connect(ctx)
	if err != nil {
		return Dropped{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	where, pub := s.where(), s.db.Publication
	var sl *SlotInfo
	rows, err := conn.Query(ctx, `SELECT `+slotColumns+` WHERE s.slot_name = $1`, cmp.Or(slot, s.db.Slot))
	var found []SlotInfo
	if err == nil {
		found, err = pgx.CollectRows(rows, scanSlot)
	}
	if err != nil {
		return Dropped{}, fmt.Errorf("%s: read replication slot %s: %w", where, cmp.Or(slot, s.db.Slot), err)
	}
	if len(found) > 0 {
		sl = &found[0]
		if sl.Database == "" {
			return Dropped{}, fmt.Errorf("%s: replication slot %s is a physical slot (a standby's), which triggerd never creates: nothing dropped", where, sl.Slot)
		}
	}
	if slot != "" {
		// Another database's slot: its publication is in that database.
		if sl == nil {
			return Dropped{}, fmt.Errorf("the server of %s has no replication slot %s: run triggerd sources list to see those it has", where, slot)
		}
		conn.Close(ctx)
		if conn, err = s.connectTo(ctx, sl.Database); err != nil {
			return Dropped{}, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		where, pub = fmt.Sprintf("database %s on the server of %s", sl.Database, where), slot
	}
	var current string
	if err := conn.QueryRow(ctx, `SELECT current_database()::text`).Scan(&current); err != nil {
		return Dropped{}, fmt.Errorf("%s: %w", where, err)
	}
	switch {
	case sl == nil:
	case sl.Database != current:
		return Dropped{}, fmt.Errorf("%s: replication slot %s belongs to database %q, not to this one (%s), so triggerd did not make it for this database: nothing dropped", where, sl.Slot, sl.Database, current)
	case sl.Active && !force:
		return Dropped{}, fmt.Errorf("%s: replication slot %s is in use by server process %d%s: stop the nodes that stream it (or remove the database from their config and reload them), or pass --force to end that session; nothing dropped", where, sl.Slot, sl.PID, streamer(sl))
	}

	var d Dropped
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := lockPublication(ctx, tx, pub); err != nil {
			return err
		}
		var allTables bool
		err := tx.QueryRow(ctx, `SELECT puballtables FROM pg_publication WHERE pubname = $1`, pub).Scan(&allTables)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read publication %s: %w", pub, err)
		case allTables:
			return fmt.Errorf("publication %s is FOR ALL TABLES, so triggerd did not create it: nothing dropped (drop it yourself if nothing uses it)", pub)
		default:
			if _, err := tx.Exec(ctx, `DROP PUBLICATION `+pgx.Identifier{pub}.Sanitize()); err != nil {
				return fmt.Errorf("drop publication %s: %w (the role must own it)", pub, err)
			}
			d.Publication = pub
		}
		if sl != nil {
			// In the transaction, so that a slot that cannot be dropped
			// leaves the publication too. A node whose session was ended
			// may take the slot again at once: end it again, a few times.
			for try := 0; ; try++ {
				if force {
					pid, err := endStream(ctx, conn, sl.Slot)
					if err != nil {
						return fmt.Errorf("end the session streaming slot %s: %w", sl.Slot, err)
					}
					d.Ended = cmp.Or(d.Ended, pid)
				}
				err := dropSlot(ctx, tx, sl.Slot)
				if err == nil {
					break
				}
				var pgErr *pgconn.PgError
				if !force || try == 4 || !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use
					return fmt.Errorf("drop replication slot %s: %w", sl.Slot, err)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
			d.Slot = sl.Slot
		}
		return nil
	})
	if err != nil {
		return Dropped{}, fmt.Errorf("%s: %w", where, err)
	}
	return d, nil
}

// dropSlot drops a slot in tx, in a savepoint of its own, so that tx
// survives a failure.
func dropSlot(ctx context.Context, tx pgx.Tx, slot string) error {
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		return err
	})
}

// streamer describes the session streaming a slot, for messages.
func streamer(sl *SlotInfo) string {
	var parts []string
	if sl.Application != "" {
		parts = append(parts, "application "+sl.Application)
	}
	if sl.Client != "" {
		parts = append(parts, "from "+sl.Client)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
