package cdc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store"
)

// table is a table to capture, as the catalog describes it.
type table struct {
	schema, name string
	kind         string // pg_class.relkind: r (table), p (partitioned table), v (view)...
	identity     byte   // pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
	hasKey       bool   // a primary key or replica identity index
	columns      []string
}

// qualified is the table's quoted schema.name, for SQL.
func (t *table) qualified() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// String is the table's schema.name as a person writes it, for messages.
func (t *table) String() string { return ident(t.schema) + "." + ident(t.name) }

// ident quotes a name for messages only where SQL needs it.
func ident(name string) string {
	if simpleName.MatchString(name) {
		return name
	}
	return pgx.Identifier{name}.Sanitize()
}

var simpleName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// plan is what a session captures: the tables to publish and, for each
// trigger that names tables, the set of their qualified names (a trigger
// that names none takes every table).
type plan struct {
	triggers []*config.Trigger // the source's triggers when the plan was made
	tables   []table
	routes   map[string]map[string]bool
}

// takes reports whether trigger tr takes changes of the table schema.name.
func (p *plan) takes(tr *config.Trigger, schema, name string) bool {
	set, ok := p.routes[tr.Name]
	return !ok || set[pgx.Identifier{schema, name}.Sanitize()]
}

const describeColumns = `n.nspname, c.relname, c.relkind, c.relreplident,
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)),
	ARRAY(SELECT attname::text FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace`

// connect opens a plain connection to the database.
func (s *Source) connect(ctx context.Context) (*pgx.Conn, error) {
	return s.connectTo(ctx, "")
}

// connectTo opens a plain connection to the database's server, to the
// database named (the source's own when "").
func (s *Source) connectTo(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.db.URL)
	if err != nil {
		return nil, fmt.Errorf("%s: url: %w (write it as postgres://user:password@host:5432/database)", s.where(), err)
	}
	if database != "" {
		cfg.Database = database
	}
	cfg.RuntimeParams["application_name"] = "triggerd-cdc"
	// This connection holds the slot's lock: if the node's host vanishes,
	// the server must notice within seconds, not TCP's two hours, for a
	// standby to take over. (Unix sockets ignore these.)
	for k, v := range map[string]string{"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"} {
		cfg.RuntimeParams[k] = v
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w (is the server up, and databases.%s.url right?)", s.where(), err, s.alias)
	}
	return conn, nil
}

// inspect checks the server and the triggers' tables, and returns the
// tables to publish: those the triggers name, or every table of the
// database when a trigger names none, never the store's own.
func (s *Source) inspect(ctx context.Context, conn *pgx.Conn) (*plan, error) {
	var walLevel, version string
	var versionNum int
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version'), current_setting('server_version_num')::int").Scan(&walLevel, &version, &versionNum); err != nil {
		return nil, fmt.Errorf("%s: read wal_level: %w", s.where(), err)
	}
	if versionNum < 140000 {
		return nil, fmt.Errorf("%s: the server runs PostgreSQL %s, and change capture needs 14 or later (for logical messages in pgoutput): upgrade it", s.where(), version)
	}
	if walLevel != "logical" {
		return nil, fmt.Errorf("%s: the server's wal_level is %s, and change capture needs logical: set wal_level = logical in postgresql.conf (or run ALTER SYSTEM SET wal_level = logical) and restart Postgres", s.where(), walLevel)
	}
	var role string
	var canReplicate bool
	if err := conn.QueryRow(ctx, `SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&role, &canReplicate); err != nil {
		return nil, fmt.Errorf("%s: read the role's attributes: %w", s.where(), err)
	}
	if !canReplicate {
		return nil, fmt.Errorf("%s: role %s lacks the REPLICATION attribute that change capture needs: run ALTER ROLE %s REPLICATION as a superuser", s.where(), role, ident(role))
	}

	pl := &plan{triggers: s.current(), routes: make(map[string]map[string]bool)}
	seen := make(map[string]int) // qualified name → index in pl.tables
	add := func(t table) int {
		key := t.qualified()
		if i, ok := seen[key]; ok {
			return i
		}
		seen[key] = len(pl.tables)
		pl.tables = append(pl.tables, t)
		return len(pl.tables) - 1
	}
	everyTable := false
	for _, tr := range pl.triggers {
		if len(tr.Options.Tables()) == 0 {
			everyTable = true
		}
	}
	if everyTable {
		rows, err := conn.Query(ctx, `SELECT `+describeColumns+`
			WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND NOT c.relispartition
			  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
			ORDER BY 1, 2`)
		if err != nil {
			return nil, fmt.Errorf("%s: list tables: %w", s.where(), err)
		}
		all, err := pgx.CollectRows(rows, scanTable)
		if err != nil {
			return nil, fmt.Errorf("%s: list tables: %w", s.where(), err)
		}
		for _, t := range all {
			if !s.isStoreTable(&t) {
				add(t)
			}
		}
	}
	for _, tr := range pl.triggers {
		for _, name := range tr.Options.Tables() {
			t, err := s.describe(ctx, conn, tr, name)
			if err != nil {
				return nil, err
			}
			i := add(t)
			if err := s.checkColumns(tr, &pl.tables[i]); err != nil {
				return nil, err
			}
			if pl.routes[tr.Name] == nil {
				pl.routes[tr.Name] = make(map[string]bool)
			}
			pl.routes[tr.Name][t.qualified()] = true
		}
	}
	for i := range pl.tables {
		if err := s.checkIdentity(pl, &pl.tables[i]); err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// scanTable reads a row of describeColumns.
func scanTable(row pgx.CollectableRow) (table, error) {
	var t table
	var identity string
	err := row.Scan(&t.schema, &t.name, &t.kind, &identity, &t.hasKey, &t.columns)
	if identity != "" {
		t.identity = identity[0]
	}
	return t, err
}

// describe looks up a table a trigger names.
func (s *Source) describe(ctx context.Context, conn *pgx.Conn, tr *config.Trigger, name string) (table, error) {
	rows, err := conn.Query(ctx, `SELECT `+describeColumns+` WHERE c.oid = to_regclass($1)`, name)
	var found []table
	if err == nil {
		found, err = pgx.CollectRows(rows, scanTable)
	}
	switch {
	case err != nil:
		return table{}, fmt.Errorf("%s: trigger %s: look up table %s: %w", s.where(), tr.Name, name, err)
	case len(found) == 0:
		return table{}, fmt.Errorf("%s: trigger %s: table %s does not exist: create it, or fix options.col (write schema.table for a table outside the search_path)", s.where(), tr.Name, name)
	case found[0].kind != "r" && found[0].kind != "p":
		return table{}, fmt.Errorf("%s: trigger %s: %s is not a table (relkind %s): name a table in options.col", s.where(), tr.Name, name, found[0].kind)
	case s.isStoreTable(&found[0]):
		return table{}, fmt.Errorf("%s: trigger %s: %s is triggerd's own table, which is never captured: remove it from options.col", s.where(), tr.Name, name)
	}
	return found[0], nil
}

// checkColumns checks a trigger's column filter against a table it names:
// the columns exist, and the table logs old rows, without which no one can
// tell whether a column changed.
func (s *Source) checkColumns(tr *config.Trigger, t *table) error {
	cols := tr.Options.ColumnList()
	if len(cols) == 0 {
		return nil
	}
	for _, c := range cols {
		if !slices.Contains(t.columns, c) {
			return fmt.Errorf("%s: trigger %s: table %s has no column %q (it has %s): fix options.columns", s.where(), tr.Name, t, c, strings.Join(t.columns, ", "))
		}
	}
	if t.identity != 'f' {
		return fmt.Errorf("%s: trigger %s: options.columns needs the old row of %s to see which columns changed: run ALTER TABLE %s REPLICA IDENTITY FULL", s.where(), tr.Name, t, t)
	}
	return nil
}

// checkIdentity refuses a table whose updates or deletes are to be
// captured but which has no replica identity: publishing them would make
// UPDATE and DELETE on it fail.
func (s *Source) checkIdentity(pl *plan, t *table) error {
	if t.identity == 'f' || (t.hasKey && t.identity != 'n') {
		return nil
	}
	for _, tr := range pl.triggers {
		if tr.Type != config.TypeInsert && pl.takes(tr, t.schema, t.name) {
			return fmt.Errorf("%s: trigger %s: table %s has no primary key or replica identity, so Postgres cannot publish its updates and deletes (and would refuse them once published): add a primary key, or run ALTER TABLE %s REPLICA IDENTITY FULL", s.where(), tr.Name, t, t)
		}
	}
	return nil
}

// isStoreTable reports whether t is one of the store's tables.
func (s *Source) isStoreTable(t *table) bool {
	return t.schema == s.opts.StoreSchema && slices.Contains(store.Tables(), t.name)
}

// publishOps lists the operations a plan's triggers need, for the publication.
func (pl *plan) publishOps() string {
	var ops []string
	for _, op := range []struct{ typ, name string }{{config.TypeInsert, "insert"}, {config.TypeUpdate, "update"}, {config.TypeDelete, "delete"}} {
		if slices.ContainsFunc(pl.triggers, func(t *config.Trigger) bool { return t.Type == op.typ }) {
			ops = append(ops, op.name)
		}
	}
	if len(ops) == 0 {
		return "insert" // a database no trigger uses yet: publish as little as possible
	}
	return strings.Join(ops, ", ")
}

// prepare makes the publication list exactly the plan's tables, with the
// operations of its triggers, and creates the slot when missing. It runs
// under the slot's lock, so nodes do not race, and under the publication's
// lock (see Publish). Holding that lock, it reads the triggers again: a
// plan that is out of date (a trigger was added since) ends the session
// rather than drop a table a newer trigger has just published.
func (s *Source) prepare(ctx context.Context, conn *pgx.Conn, pl *plan) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := lockPublication(ctx, tx, s.db.Publication); err != nil {
			return err
		}
		if changed, err := s.refresh(ctx, pl); err != nil || changed {
			if err == nil {
				err = errTriggersChanged
			}
			return err
		}
		return s.syncPublication(ctx, tx, pl, true)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", s.where(), err)
	}

	var plugin, database, current string
	err = conn.QueryRow(ctx, `SELECT s.plugin::text, s.database::text, current_database()::text FROM pg_replication_slots s WHERE s.slot_name = $1`, s.db.Slot).Scan(&plugin, &database, &current)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s.db.Slot); err != nil {
			return fmt.Errorf("%s: create replication slot %s: %w", s.where(), s.db.Slot, err)
		}
		s.log.Info("replication slot created: changes committed from now on are captured")
	case err != nil:
		return fmt.Errorf("%s: read replication slot %s: %w", s.where(), s.db.Slot, err)
	case plugin != "pgoutput" || database != current:
		return fmt.Errorf("%s: replication slot %s belongs to database %s with plugin %s, not to this database with pgoutput: set databases.%s.slot to another name", s.where(), s.db.Slot, database, plugin, s.alias)
	}
	return nil
}

// Streaming reports whether a node streams the slot, so that every change
// committed from now on is captured. (A slot being created shows as
// active too, held by the session creating it: that does not count.)
func Streaming(ctx context.Context, db store.Querier, slot string) (bool, error) {
	var streaming bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots s
		JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1 AND a.backend_type = 'walsender')`, slot).Scan(&streaming)
	if err != nil {
		return false, fmt.Errorf("read the state of slot %s: %w", slot, err)
	}
	return streaming, nil
}

// syncPublication brings the publication in line with a plan, in tx:
// exactly, its tables and operations and no others (a session's prepare);
// or not (Publish), adding what the plan needs and dropping nothing.
func (s *Source) syncPublication(ctx context.Context, tx pgx.Tx, pl *plan, exact bool) error {
	tables := pl.tables
	pub := pgx.Identifier{s.db.Publication}.Sanitize()
	var allTables bool
	var ops []string
	err := tx.QueryRow(ctx, `SELECT puballtables, array_remove(ARRAY[CASE WHEN pubinsert THEN 'insert' END,
		CASE WHEN pubupdate THEN 'update' END, CASE WHEN pubdelete THEN 'delete' END], NULL)
		FROM pg_publication WHERE pubname = $1`, s.db.Publication).Scan(&allTables, &ops)
	publish := pl.publishOps()
	if !exact {
		publish = strings.Join(unionOps(ops, strings.Split(publish, ", ")), ", ")
	}
	with := fmt.Sprintf("publish = '%s', publish_via_partition_root = true", publish)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `CREATE PUBLICATION `+pub+` WITH (`+with+`)`); err != nil {
			return fmt.Errorf("create publication %s: %w", s.db.Publication, err)
		}
	case err != nil:
		return fmt.Errorf("read publication %s: %w", s.db.Publication, err)
	case allTables:
		return fmt.Errorf("publication %s is FOR ALL TABLES, so triggerd did not create it: drop it, or set databases.%s.publication to another name", s.db.Publication, s.alias)
	default:
		if _, err := tx.Exec(ctx, `ALTER PUBLICATION `+pub+` SET (`+with+`)`); err != nil {
			return fmt.Errorf("alter publication %s: %w", s.db.Publication, err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT n.nspname, c.relname FROM pg_publication_rel r
		JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1`, s.db.Publication)
	if err != nil {
		return fmt.Errorf("read publication %s: %w", s.db.Publication, err)
	}
	have, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var schema, name string
		err := row.Scan(&schema, &name)
		return pgx.Identifier{schema, name}.Sanitize(), err
	})
	if err != nil {
		return fmt.Errorf("read publication %s: %w", s.db.Publication, err)
	}
	var want []string
	for i := range tables {
		want = append(want, tables[i].qualified())
	}
	var add, drop []string
	for _, t := range want {
		if !slices.Contains(have, t) {
			add = append(add, t)
		}
	}
	for _, t := range have {
		if exact && !slices.Contains(want, t) {
			drop = append(drop, t)
		}
	}
	if len(add) > 0 {
		if _, err := tx.Exec(ctx, `ALTER PUBLICATION `+pub+` ADD TABLE `+strings.Join(add, ", ")); err != nil {
			return fmt.Errorf("add %s to publication %s: %w (the role must own the tables)", strings.Join(add, ", "), s.db.Publication, err)
		}
	}
	if len(drop) > 0 {
		if _, err := tx.Exec(ctx, `ALTER PUBLICATION `+pub+` DROP TABLE `+strings.Join(drop, ", ")); err != nil {
			return fmt.Errorf("drop %s from publication %s: %w", strings.Join(drop, ", "), s.db.Publication, err)
		}
	}
	if len(add)+len(drop) > 0 {
		s.log.Info("publication updated", "publication", s.db.Publication, "added", add, "dropped", drop)
	}
	return nil
}

// unionOps lists the operations in a or b, in the order insert, update, delete.
func unionOps(a, b []string) []string {
	var out []string
	for _, op := range []string{"insert", "update", "delete"} {
		if slices.Contains(a, op) || slices.Contains(b, op) {
			out = append(out, op)
		}
	}
	return out
}

// lockPublication takes, for the rest of tx, the lock that orders the
// changes of a publication: a session's prepare and Publish.
func lockPublication(ctx context.Context, tx pgx.Tx, publication string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "triggerd.publication."+publication); err != nil {
		return fmt.Errorf("lock publication %s: %w", publication, err)
	}
	return nil
}
