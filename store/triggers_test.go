package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// TestStoredTriggersAudited creates, replaces and deletes a stored
// trigger, and reads each change back from the triggers and the audit.
func TestStoredTriggersAudited(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	v1 := json.RawMessage(`{"name": "t", "type": "x", "url": "http://h/1"}`)
	v2 := json.RawMessage(`{"name": "t", "type": "x", "url": "http://h/2"}`)
	if created, err := st.PutTrigger(ctx, "p", "t", v1, "alice"); err != nil || !created {
		t.Fatalf("create: %v, %v", created, err)
	}
	if created, err := st.PutTrigger(ctx, "p", "t", v2, "bob"); err != nil || created {
		t.Fatalf("replace: created %v, %v", created, err)
	}
	got, ok, err := st.StoredTrigger(ctx, "p", "t")
	if err != nil || !ok || !jsonEqual(got.Spec, v2) || got.UpdatedBy != "bob" {
		t.Fatalf("stored: %+v %v %v", got, ok, err)
	}
	if all, err := st.Triggers(ctx); err != nil || len(all) != 1 {
		t.Fatalf("all stored triggers: %+v %v", all, err)
	}
	found, _, err := st.DeleteTrigger(ctx, "p", "t", "carol")
	if err != nil || !found {
		t.Fatalf("delete: %v %v", found, err)
	}
	if found, _, err := st.DeleteTrigger(ctx, "p", "t", "carol"); err != nil || found {
		t.Fatalf("delete again: found %v, %v", found, err)
	}
	if _, ok, err := st.StoredTrigger(ctx, "p", "t"); err != nil || ok {
		t.Fatalf("after delete: %v %v", ok, err)
	}
	changes, err := st.TriggerAudit(ctx, "p", "t")
	if err != nil || len(changes) != 3 {
		t.Fatalf("audit: %+v %v", changes, err)
	}
	want := []struct {
		action, actor string
		before, after json.RawMessage
	}{{store.ActionCreate, "alice", nil, v1}, {store.ActionUpdate, "bob", v1, v2}, {store.ActionDelete, "carol", v2, nil}}
	for i, w := range want {
		c := changes[i]
		if c.Action != w.action || c.Actor != w.actor || !jsonEqual(c.Before, w.before) || !jsonEqual(c.After, w.after) || c.At.IsZero() {
			t.Errorf("change %d: %+v, want %+v", i, c, w)
		}
	}
}

// jsonEqual reports whether two JSON texts hold the same value (nil: none).
func jsonEqual(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// TestDeleteTriggerCancelsItsRows deletes a stored trigger whose rows are
// staged, free and claimed: all are cancelled with a remark, the claimed
// one's outcome is not recorded over it, and other triggers' rows stay.
func TestDeleteTriggerCancelsItsRows(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	if _, err := st.PutTrigger(ctx, "p", "t", json.RawMessage(`{}`), "alice"); err != nil {
		t.Fatal(err)
	}
	free := staged(time.Now().Add(time.Hour), "")
	claimed := staged(time.Now().Add(time.Minute), "node-1")
	other := staged(time.Now(), "")
	other.Trigger = "other"
	if err := st.Insert(ctx, []store.EventLog{free, claimed, other}); err != nil {
		t.Fatal(err)
	}
	_, n, err := st.DeleteTrigger(ctx, "p", "t", "alice")
	if err != nil || n != 2 {
		t.Fatalf("delete cancelled %d rows (%v), want 2", n, err)
	}
	// The attempt in flight ends; its outcome finds the row cancelled.
	applied, err := st.Record(ctx, "node-1", []store.Outcome{{EventID: claimed.ID, Status: store.StatusProcessed, Attempts: 1}})
	if err != nil || applied[claimed.ID] {
		t.Fatalf("the outcome of a cancelled row was applied: %v %v", applied, err)
	}
	got, err := st.Events(ctx, []uuid.UUID{free.ID, claimed.ID, other.ID}, store.Filter{})
	if err != nil || len(got) != 3 {
		t.Fatal(got, err)
	}
	for _, r := range got {
		switch {
		case r.ID == other.ID && r.Status != store.StatusStaged:
			t.Errorf("another trigger's row became %s", r.Status)
		case r.ID != other.ID && (r.Status != store.StatusCancelled || r.Remark != store.DeletedRemark || r.ClaimedBy != ""):
			t.Errorf("row of the deleted trigger: %s, %q, claimed by %q", r.Status, r.Remark, r.ClaimedBy)
		}
	}
	// A row staged late, by a node that did not know yet, is cancelled
	// when that node drops the trigger; a stored trigger's rows are not.
	late := staged(time.Now(), "")
	if err := st.Insert(ctx, []store.EventLog{late}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutTrigger(ctx, "p", "other", json.RawMessage(`{}`), "alice"); err != nil {
		t.Fatal(err)
	}
	if n, err := st.CancelDeleted(ctx, "p", "other"); err != nil || n != 0 {
		t.Fatalf("cancelled %d rows of a stored trigger (%v)", n, err)
	}
	if n, err := st.CancelDeleted(ctx, "p", "t"); err != nil || n != 1 {
		t.Fatalf("cancelled %d late rows (%v), want 1", n, err)
	}
	// Stored triggers are known to the sweeper.
	old := staged(time.Now().Add(-time.Hour), "")
	old.Trigger = "other"
	if err := st.Insert(ctx, []store.EventLog{old}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.CancelOrphans(ctx, nil, time.Minute); err != nil || len(n) != 0 {
		t.Fatalf("the sweeper cancelled rows of a stored trigger: %v %v", n, err)
	}
}

// TestTriggerListenerHearsChanges listens, changes a trigger, and hears it.
func TestTriggerListenerHearsChanges(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	l, err := st.ListenTriggers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, change := range []func() error{
		func() error { _, err := st.PutTrigger(ctx, "p", "t", json.RawMessage(`{}`), "a"); return err },
		func() error { _, _, err := st.DeleteTrigger(ctx, "p", "t", "a"); return err },
	} {
		if err := change(); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.Wait(wctx)
		cancel()
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
	}
}
