package cdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch"
)

// recorder is an Ingester that keeps the batches it is given, or fails
// with err; Durable counts its calls, or fails with durableErr.
type recorder struct {
	batches    [][]dispatch.Change
	err        error
	durables   int
	durableErr error
}

func (r *recorder) Durable(context.Context) error {
	if r.durableErr != nil {
		return r.durableErr
	}
	r.durables++
	return nil
}

func (r *recorder) Ingest(_ context.Context, changes []dispatch.Change, _ func() bool) (*dispatch.Logged, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.batches = append(r.batches, slices.Clone(changes)) // the consumer reuses its slice
	return nil, nil
}

// consumerRig is a consumer of a source whose trigger "ins" takes the
// inserts of table public.orders (relation 1), logging to a recorder.
type consumerRig struct {
	t   *testing.T
	c   *consumer
	rec *recorder
}

func newConsumerRig(t *testing.T, batch int) *consumerRig {
	p := &config.Project{
		ID:        "p",
		Databases: map[string]config.Database{"app": {Slot: "s", Publication: "pub"}},
		Triggers:  []config.Trigger{{Name: "ins", Type: config.TypeInsert, Options: config.TriggerOptions{DB: "app"}}},
	}
	rec := &recorder{}
	s, err := New(p, "app", rec, Options{Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	c := newConsumer(s, &plan{triggers: s.current()}, nil, &progress{})
	// The relation as a RelationMessage describes it; handling that
	// message looks up its primary key and types in the database.
	rel := &pglogrepl.RelationMessage{RelationID: 1, Namespace: "public", RelationName: "orders", ReplicaIdentity: 'd',
		Columns: []*pglogrepl.RelationMessageColumn{{Flags: 1, Name: "id", DataType: 23}, {Name: "note", DataType: 25}}}
	c.rels[1] = newRelation(s, c.plan, rel, []string{"id"})
	return &consumerRig{t: t, c: c, rec: rec}
}

// feed hands the consumer messages at lsn, each with others waiting after
// it but the last when idle.
func (r *consumerRig) feed(idle bool, lsn pglogrepl.LSN, msgs ...pglogrepl.Message) error {
	for i, m := range msgs {
		if err := r.c.handle(context.Background(), item{msg: m, lsn: lsn}, idle && i == len(msgs)-1); err != nil {
			return err
		}
	}
	return nil
}

// mustFeed is feed failing the test on an error.
func (r *consumerRig) mustFeed(idle bool, lsn pglogrepl.LSN, msgs ...pglogrepl.Message) {
	r.t.Helper()
	if err := r.feed(idle, lsn, msgs...); err != nil {
		r.t.Fatal(err)
	}
}

// keepalive is a keepalive with the position the server has sent.
func (r *consumerRig) keepalive(lsn pglogrepl.LSN) {
	r.t.Helper()
	if err := r.c.handle(context.Background(), item{lsn: lsn}, true); err != nil {
		r.t.Fatal(err)
	}
}

// check fails the test unless the recorder has the batches of positions
// (Sub) given, and the position confirmable now is confirmed.
func (r *consumerRig) check(when string, confirmed pglogrepl.LSN, batches ...[]uint64) {
	r.t.Helper()
	var got [][]uint64
	for _, b := range r.rec.batches {
		var subs []uint64
		for _, c := range b {
			subs = append(subs, c.Sub)
		}
		got = append(got, subs)
	}
	if !slices.EqualFunc(got, batches, slices.Equal) {
		r.t.Fatalf("%s: logged batches %v, want %v", when, got, batches)
	}
	if err := r.c.prog.confirmable(context.Background(), r.rec); err != nil {
		r.t.Fatal(err)
	}
	if c := pglogrepl.LSN(r.c.prog.confirmed.Load()); c != confirmed {
		r.t.Errorf("%s: confirmed %s, want %s", when, c, confirmed)
	}
}

func insert(id string) *pglogrepl.InsertMessage {
	return &pglogrepl.InsertMessage{RelationID: 1, Tuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte(id)}, {DataType: pglogrepl.TupleDataTypeNull}}}}
}

func del(id string) *pglogrepl.DeleteMessage {
	return &pglogrepl.DeleteMessage{RelationID: 1, OldTupleType: pglogrepl.DeleteMessageTupleTypeKey,
		OldTuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{{DataType: pglogrepl.TupleDataTypeText, Data: []byte(id)}}}}
}

// TestConsumerStartsSmallAfterIdle feeds the consumer two large
// transactions: after a time with nothing to log, its first write takes
// firstBatch changes and each next write twice as many, up to the batch,
// so that a large transaction's first rows are logged (and delivered)
// without waiting for a whole batch of them.
func TestConsumerStartsSmallAfterIdle(t *testing.T) {
	t.Parallel()
	r := newConsumerRig(t, 200)
	sizes := func() []int {
		var out []int
		for _, b := range r.rec.batches {
			out = append(out, len(b))
		}
		r.rec.batches = nil
		return out
	}
	txn := func(lsn pglogrepl.LSN, rows int) {
		t.Helper()
		r.mustFeed(false, lsn, &pglogrepl.BeginMessage{FinalLSN: lsn + 0x100, Xid: uint32(lsn)})
		for i := range rows {
			r.mustFeed(false, lsn, insert(fmt.Sprint(i)))
		}
		r.mustFeed(true, lsn, &pglogrepl.CommitMessage{CommitLSN: lsn + 0x100, TransactionEndLSN: lsn + 0x108})
	}
	txn(0x1000, 700)
	if got, want := sizes(), []int{firstBatch, 2 * firstBatch, 200, 200, 108}; !slices.Equal(got, want) {
		t.Errorf("a 700-row transaction from idle was logged in writes of %v rows, want %v", got, want)
	}
	txn(0x2000, 100) // after the idle commit: small again
	if got, want := sizes(), []int{firstBatch, 100 - firstBatch}; !slices.Equal(got, want) {
		t.Errorf("the next transaction, after an idle time, was logged in writes of %v rows, want %v", got, want)
	}
}

// TestConsumerBatchesAndConfirmsWhatIsLogged feeds the consumer a stream's
// messages: it logs a batch when it is full or when nothing else waits,
// and confirms a position only once every change before it is logged.
func TestConsumerBatchesAndConfirmsWhatIsLogged(t *testing.T) {
	t.Parallel()
	r := newConsumerRig(t, 2)
	commit := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	r.mustFeed(false, 0x10, &pglogrepl.BeginMessage{FinalLSN: 0x100, CommitTime: commit, Xid: 7}, insert("1"), insert("2"))
	r.check("a full batch within a transaction", 0, []uint64{0, 1})
	r.mustFeed(false, 0x20, insert("3"), &pglogrepl.CommitMessage{CommitLSN: 0x100, TransactionEndLSN: 0x108})
	r.check("a commit with more messages waiting", 0, []uint64{0, 1})
	r.keepalive(0x200)
	r.check("a keepalive with nothing waiting", 0x200, []uint64{0, 1}, []uint64{2})

	b := r.rec.batches[1][0]
	if b.Key != "p\x00app" || b.Seq != 0x100 || !slices.Equal(b.Triggers, []string{"ins"}) ||
		b.Project != "p" || b.Type != config.TypeInsert || !b.Time.Equal(commit) {
		t.Errorf("change %+v: want key p/app, seq the commit's position, trigger ins, type %s at the commit's time", b, config.TypeInsert)
	}
	if data := string(b.Data); !strings.Contains(data, `"find":{"id":3}`) || !strings.Contains(data, `"doc":{"id":3,"note":null}`) || !strings.Contains(data, `"xid":7`) {
		t.Errorf("change data %s lacks the row, its key or its transaction", data)
	}

	// Nothing is confirmed inside a transaction, even when idle.
	r.mustFeed(true, 0x300, &pglogrepl.BeginMessage{FinalLSN: 0x400, CommitTime: commit, Xid: 8}, del("1"))
	r.keepalive(0x350)
	r.check("inside a transaction", 0x200, []uint64{0, 1}, []uint64{2})
	// A transaction no trigger takes is confirmed without a write.
	r.mustFeed(true, 0x400, &pglogrepl.CommitMessage{CommitLSN: 0x400, TransactionEndLSN: 0x408})
	r.check("a commit of changes no trigger takes", 0x408, []uint64{0, 1}, []uint64{2})
	// So is a heartbeat message between transactions.
	r.mustFeed(true, 0x500, &pglogrepl.LogicalDecodingMessage{LSN: 0x500, Prefix: "triggerd.heartbeat"})
	r.check("a heartbeat", 0x500, []uint64{0, 1}, []uint64{2})
}

// TestConsumerConfirmsNothingItCouldNotLog: a failed write ends the
// session with the write's error, and the position stays where it was, so
// the next session replays the changes.
func TestConsumerConfirmsNothingItCouldNotLog(t *testing.T) {
	t.Parallel()
	r := newConsumerRig(t, 10)
	r.mustFeed(true, 0x10, &pglogrepl.BeginMessage{FinalLSN: 0x100, Xid: 7}, insert("1"),
		&pglogrepl.CommitMessage{CommitLSN: 0x100, TransactionEndLSN: 0x108})
	r.check("the first transaction", 0x108, []uint64{0})

	r.rec.err = errors.New("store unreachable")
	err := r.feed(true, 0x110, &pglogrepl.BeginMessage{FinalLSN: 0x200, Xid: 8}, insert("2"),
		&pglogrepl.CommitMessage{CommitLSN: 0x200, TransactionEndLSN: 0x208})
	if err == nil || !strings.Contains(err.Error(), "store unreachable") || !strings.Contains(err.Error(), "database app of project p") {
		t.Errorf("a failed write: %v, want its error naming the source", err)
	}
	r.check("a failed write", 0x108, []uint64{0})

	if err := r.feed(true, 0x300, insert("3")); err == nil || !strings.Contains(err.Error(), "outside a transaction") {
		t.Errorf("a row change outside a transaction: %v", err)
	}
}

// TestConfirmedOnlyOnceDurable: a position past a write is confirmable
// only once the store has the write on disk; positions reached without a
// write (keepalives, transactions no trigger takes) need no wait.
func TestConfirmedOnlyOnceDurable(t *testing.T) {
	t.Parallel()
	r := newConsumerRig(t, 10)
	ctx := context.Background()
	r.mustFeed(true, 0x10, &pglogrepl.BeginMessage{FinalLSN: 0x100, Xid: 7}, insert("1"),
		&pglogrepl.CommitMessage{CommitLSN: 0x100, TransactionEndLSN: 0x108})
	r.rec.durableErr = errors.New("store unreachable")
	if err := r.c.prog.confirmable(ctx, r.rec); err == nil || r.c.prog.confirmed.Load() != 0 {
		t.Errorf("with the store unreachable: confirmed %X (%v), want 0 and the error", r.c.prog.confirmed.Load(), err)
	}
	r.rec.durableErr = nil
	r.check("once durable", 0x108, []uint64{0})
	r.keepalive(0x200)
	r.check("a keepalive after it", 0x200, []uint64{0})
	if r.rec.durables != 1 {
		t.Errorf("Durable called %d times, want once: for the one write", r.rec.durables)
	}
}

// TestOnlyChangesNeverStreamedAreFresh feeds the consumer a transaction
// that commits before the session's start position and one after it: only
// the second can have no row logged by an earlier session, and is fresh.
func TestOnlyChangesNeverStreamedAreFresh(t *testing.T) {
	t.Parallel()
	r := newConsumerRig(t, 100)
	r.c.fresh = 0x200
	r.mustFeed(false, 0x10, &pglogrepl.BeginMessage{FinalLSN: 0x200, Xid: 7}, insert("1"))
	r.mustFeed(true, 0x10, &pglogrepl.CommitMessage{CommitLSN: 0x200, TransactionEndLSN: 0x208})
	r.mustFeed(false, 0x300, &pglogrepl.BeginMessage{FinalLSN: 0x300, Xid: 8}, insert("2"))
	r.mustFeed(true, 0x300, &pglogrepl.CommitMessage{CommitLSN: 0x300, TransactionEndLSN: 0x308})
	var fresh []bool
	for _, b := range r.rec.batches {
		for _, c := range b {
			fresh = append(fresh, c.Fresh)
		}
	}
	if want := []bool{false, true}; !slices.Equal(fresh, want) {
		t.Errorf("changes committed at the session's start position and after it: fresh %v, want %v", fresh, want)
	}
}

// slowStore is an Ingester whose Durable waits until gate is closed,
// then fails with err, if set.
type slowStore struct {
	recorder
	gate chan struct{}
	err  error
}

func (s *slowStore) Durable(ctx context.Context) error {
	select {
	case <-s.gate:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestConfirmingDoesNotHoldUpTheStream: the reader confirms in the
// background. While the store's disk is slow, confirmBehind returns at
// once, leaving the position confirmed before; once the store has the
// changes on disk, the new position is confirmed, and an error of a
// confirmation in the background comes back at the next call.
func TestConfirmingDoesNotHoldUpTheStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &slowStore{gate: make(chan struct{})}
	p := &progress{}
	p.logged(0x100, true, nil)
	returned := make(chan error, 1)
	go func() { returned <- p.confirmBehind(ctx, s) }()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("confirmBehind waited for the store's disk")
	}
	if got := p.confirmed.Load(); got != 0 {
		t.Errorf("confirmed %X before the store had the changes on disk, want 0", got)
	}
	close(s.gate)
	p.background.Wait()
	if got := p.confirmed.Load(); got != 0x100 {
		t.Errorf("confirmed %X once the store had the changes on disk, want 100", got)
	}

	s.err = errors.New("the store is unreachable")
	p.logged(0x200, true, nil)
	if err := p.confirmBehind(ctx, s); err != nil {
		t.Fatal(err)
	}
	p.background.Wait()
	if err := p.confirmBehind(ctx, s); err == nil || !strings.Contains(err.Error(), "the store is unreachable") {
		t.Errorf("the call after a failed confirmation: %v, want its error", err)
	}
	p.background.Wait()
	if got := p.confirmed.Load(); got != 0x100 {
		t.Errorf("confirmed %X after a failed confirmation, want 100 still", got)
	}
}
