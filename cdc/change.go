package cdc

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/triggerd/triggerd/config"
)

// relation is a table as the stream describes it, with what is needed to
// turn its rows into events.
type relation struct {
	cols   []relColumn
	pk     []int   // primary key columns by position; the identity key when there is no primary key
	ident  []int   // the replica identity's columns by position
	routes []route // the triggers that take the table's changes
	head   []byte  // the event data's opening: {"db":…,"schema":…,"col":…
}

// relColumn is one column of a relation.
type relColumn struct {
	name string
	key  []byte // the JSON-quoted name and a colon
	oid  uint32
}

// route is a trigger that takes a relation's changes of one type.
type route struct {
	trigger string
	typ     string
	columns []int // DB_UPDATE only: fire when one of these changed; nil: any update
}

// newRelation describes a relation message's table. pk names its primary
// key columns; routes come from the plan and its triggers.
func newRelation(s *Source, pl *plan, m *pglogrepl.RelationMessage, pk []string) *relation {
	r := &relation{}
	for i, c := range m.Columns {
		key := appendString(nil, []byte(c.Name))
		r.cols = append(r.cols, relColumn{name: c.Name, key: append(key, ':'), oid: c.DataType})
		if c.Flags&1 != 0 {
			r.ident = append(r.ident, i)
		}
	}
	for _, name := range pk {
		if i := r.column(name); i >= 0 {
			r.pk = append(r.pk, i)
		}
	}
	if len(r.pk) == 0 && m.ReplicaIdentity != 'f' {
		r.pk = r.ident
	}
	if !s.isStoreTable(&table{schema: m.Namespace, name: m.RelationName}) {
		for _, tr := range pl.triggers {
			if !pl.takes(tr, m.Namespace, m.RelationName) {
				continue
			}
			rt := route{trigger: tr.Name, typ: tr.Type}
			for _, name := range tr.Options.ColumnList() {
				if i := r.column(name); i >= 0 {
					rt.columns = append(rt.columns, i)
				}
			}
			if len(tr.Options.ColumnList()) > 0 && len(rt.columns) == 0 {
				continue // the filtered columns are gone from the table: nothing can change them
			}
			r.routes = append(r.routes, rt)
		}
	}
	h := []byte(`{"db":`)
	h = appendString(h, []byte(s.alias))
	h = append(h, `,"schema":`...)
	h = appendString(h, []byte(m.Namespace))
	h = append(h, `,"col":`...)
	h = appendString(h, []byte(m.RelationName))
	r.head = h
	return r
}

// learnTypes teaches the consumer's encoder the types of a relation's
// columns, so that their values convert as their types say.
func (c *consumer) learnTypes(ctx context.Context, m *pglogrepl.RelationMessage) error {
	oids := make([]uint32, len(m.Columns))
	for i, col := range m.Columns {
		oids[i] = col.DataType
	}
	c.shared.mu.Lock()
	defer c.shared.mu.Unlock()
	if err := c.enc.learn(ctx, c.shared.conn, oids); err != nil {
		return fmt.Errorf("%s: relation %s.%s: %w", c.s.where(), m.Namespace, m.RelationName, err)
	}
	return nil
}

// column returns the position of the named column, or -1.
func (r *relation) column(name string) int {
	return slices.IndexFunc(r.cols, func(c relColumn) bool { return c.name == name })
}

// txn is the transaction a change belongs to.
type txn struct {
	xid    uint32
	commit time.Time
	lsn    pglogrepl.LSN // of the commit record
}

// change is one row change as pgoutput sends it.
type change struct {
	typ     string // DB_INSERT, DB_UPDATE or DB_DELETE
	lsn     pglogrepl.LSN
	newRow  *pglogrepl.TupleData // insert and update
	oldRow  *pglogrepl.TupleData // update and delete, when sent
	oldFull bool                 // oldRow has every column (REPLICA IDENTITY FULL)
}

// fire returns the triggers that take c.
func (r *relation) fire(c *change) []string {
	var out []string
	for _, rt := range r.routes {
		if rt.typ == c.typ && (rt.columns == nil || r.changed(c, rt.columns)) {
			out = append(out, rt.trigger)
		}
	}
	return out
}

// changed reports whether an update changed one of the columns. Without
// the full old row nobody can tell; inspect refuses such filters.
func (r *relation) changed(c *change, cols []int) bool {
	if c.oldRow == nil || !c.oldFull {
		return true
	}
	for _, i := range cols {
		if i >= len(c.newRow.Columns) || i >= len(c.oldRow.Columns) {
			continue
		}
		n, o := c.newRow.Columns[i], c.oldRow.Columns[i]
		if n.DataType == pglogrepl.TupleDataTypeToast {
			continue // not sent because it did not change
		}
		if n.DataType != o.DataType || string(n.Data) != string(o.Data) {
			return true
		}
	}
	return false
}

// appendData appends the event data of c: where it happened, the primary
// key, the row after and before, and the columns left out as unchanged TOAST.
func (r *relation) appendData(dst []byte, enc *valueEncoder, c *change, t *txn) []byte {
	dst = append(dst, r.head...)
	dst = append(dst, `,"lsn":"`...)
	dst = append(dst, c.lsn.String()...)
	dst = append(dst, `","xid":`...)
	dst = strconv.AppendUint(dst, uint64(t.xid), 10)
	dst = append(dst, `,"commit_time":"`...)
	dst = t.commit.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')

	keyRow := c.newRow
	if keyRow == nil {
		keyRow = c.oldRow
	}
	if len(r.pk) > 0 && keyRow != nil {
		dst = append(dst, `,"find":`...)
		dst = r.appendRow(dst, enc, keyRow, r.pk, nil, nil)
	}
	var toast []int
	if c.newRow != nil {
		var old *pglogrepl.TupleData
		if c.oldFull {
			old = c.oldRow // holds the values of unchanged TOAST columns
		}
		dst = append(dst, `,"doc":`...)
		dst = r.appendRow(dst, enc, c.newRow, nil, old, &toast)
	}
	if c.typ != config.TypeInsert {
		dst = append(dst, `,"before":`...)
		switch {
		case c.oldRow != nil && c.oldFull:
			dst = r.appendRow(dst, enc, c.oldRow, nil, nil, nil)
		case c.oldRow != nil:
			dst = r.appendRow(dst, enc, c.oldRow, r.ident, nil, nil)
		default: // an update that left the key alone: the old key is the new one
			dst = r.appendRow(dst, enc, c.newRow, r.ident, nil, nil)
		}
	}
	if len(toast) > 0 {
		dst = append(dst, `,"unchanged_toast":[`...)
		for i, col := range toast {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, r.cols[col].key[:len(r.cols[col].key)-1]...)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// appendRow appends a JSON object of row's columns: those in only, or all
// when only is nil. An unchanged TOAST value, which the server does not
// send, is taken from old when that has it; otherwise it is left out and,
// when toast is set, listed there.
func (r *relation) appendRow(dst []byte, enc *valueEncoder, row *pglogrepl.TupleData, only []int, old *pglogrepl.TupleData, toast *[]int) []byte {
	dst = append(dst, '{')
	first := true
	put := func(i int) {
		if i >= len(row.Columns) || i >= len(r.cols) {
			return
		}
		col := row.Columns[i]
		if col.DataType == pglogrepl.TupleDataTypeToast && old != nil && i < len(old.Columns) {
			col = old.Columns[i]
		}
		if col.DataType == pglogrepl.TupleDataTypeToast {
			if toast != nil {
				*toast = append(*toast, i)
			}
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, r.cols[i].key...)
		if col.DataType == pglogrepl.TupleDataTypeText {
			dst = enc.appendJSON(dst, r.cols[i].oid, col.Data)
		} else {
			dst = append(dst, "null"...)
		}
	}
	if only == nil {
		for i := range r.cols {
			put(i)
		}
	} else {
		for _, i := range only {
			put(i)
		}
	}
	return append(dst, '}')
}
