package store_test

import (
	"encoding/binary"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/triggerd/triggerd/store"
)

// aged is a row of a retention test: made at made, its outcome status
// reached at done, with two attempts.
type aged struct {
	name    string
	project string
	status  store.Status
	made    time.Duration // before now
	done    time.Duration // before now
}

// insertAged writes the rows, with ids of their making time, and returns
// their ids by name.
func insertAged(t *testing.T, st *store.Store, now time.Time, rows []aged) map[string]uuid.UUID {
	t.Helper()
	ids := make(map[string]uuid.UUID)
	for _, r := range rows {
		id := uuid.Must(uuid.NewV7())
		var ms [8]byte
		binary.BigEndian.PutUint64(ms[:], uint64(now.Add(-r.made).UnixMilli()))
		copy(id[:6], ms[2:])
		ids[r.name] = id
		made, done := now.Add(-r.made), now.Add(-r.done)
		_, err := st.Pool().Exec(t.Context(), `
			INSERT INTO event_logs (id, batch_id, project, trigger_name, type, payload, event_time, fire_at, status,
			                        due_at, created_at, updated_at)
			VALUES ($1, $1, $2, 't', 'x', '{}', $3, $3, $4, CASE WHEN $4 = 'staged' THEN $3::timestamptz END, $3, $5)`,
			id, r.project, made, r.status, done)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Pool().Exec(t.Context(), `
			INSERT INTO invocation_logs (id, event_id, attempt, node_id, started_at, duration_ms, request_body)
			SELECT gen_random_uuid(), $1, a, 'n', $2, 1, '{}' FROM generate_series(1, 2) a`, id, made)
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// left returns the names of the rows still in event_logs, and fails when
// a deleted row's attempts remain or a kept row's are gone.
func left(t *testing.T, st *store.Store, ids map[string]uuid.UUID) []string {
	t.Helper()
	var names []string
	for name, id := range ids {
		var rows, attempts int
		err := st.Pool().QueryRow(t.Context(), `SELECT (SELECT count(*) FROM event_logs WHERE id = $1),
			(SELECT count(*) FROM invocation_logs WHERE event_id = $1)`, id).Scan(&rows, &attempts)
		if err != nil {
			t.Fatal(err)
		}
		if attempts != 2*rows {
			t.Errorf("row %s: %d event rows and %d attempts: attempts must go with their row", name, rows, attempts)
		}
		if rows == 1 {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

const day = 24 * time.Hour

func TestDeleteExpired(t *testing.T) {
	t.Parallel()
	st := open(t)
	now := time.Now()
	ids := insertAged(t, st, now, []aged{
		{"processed-old", "p", store.StatusProcessed, 9 * day, 8 * day},
		{"processed-new", "p", store.StatusProcessed, 9 * day, 6 * day}, // made long ago, delivered lately
		{"failed-old", "p", store.StatusFailed, 40 * day, 31 * day},
		{"failed-new", "p", store.StatusFailed, 20 * day, 20 * day},
		{"cancelled-old", "p", store.StatusCancelled, 8 * day, 8 * day},
		{"cancelled-new", "p", store.StatusCancelled, time.Hour, time.Hour},
		{"staged-ancient", "p", store.StatusStaged, 400 * day, 400 * day},
		// Project "keep" keeps processed rows forever and failed ones 60 days.
		{"keep-processed", "keep", store.StatusProcessed, 400 * day, 400 * day},
		{"keep-failed-40", "keep", store.StatusFailed, 40 * day, 40 * day},
		{"keep-failed-61", "keep", store.StatusFailed, 70 * day, 61 * day},
		// Project "short" keeps processed rows one day.
		{"short-processed-2", "short", store.StatusProcessed, 2 * day, 2 * day},
		{"short-processed-0", "short", store.StatusProcessed, time.Hour, time.Hour},
	})
	r := store.Retention{
		store.StatusProcessed: {Default: 7 * day, Projects: map[string]time.Duration{"keep": 0, "short": day}},
		store.StatusFailed:    {Default: 30 * day, Projects: map[string]time.Duration{"keep": 60 * day}},
		store.StatusCancelled: {Default: 7 * day},
	}
	// Batches of 2 rows, so that the walk goes on past a batch.
	n, err := st.DeleteExpired(t.Context(), r, now, store.Deleting{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("deleted %d rows, want 5", n)
	}
	got := left(t, st, ids)
	want := []string{"cancelled-new", "failed-new", "keep-failed-40", "keep-processed", "processed-new", "short-processed-0", "staged-ancient"}
	if !slices.Equal(got, want) {
		t.Errorf("rows left %v, want %v", got, want)
	}
	// A default of 0 keeps every project's rows forever but those of a
	// project with a window of its own.
	r = store.Retention{store.StatusProcessed: {Default: 0, Projects: map[string]time.Duration{"keep": day}}}
	if n, err = st.DeleteExpired(t.Context(), r, now, store.Deleting{}); err != nil || n != 1 {
		t.Errorf("deleted %d rows (%v), want 1: the processed row of keep", n, err)
	}
	if got := left(t, st, ids); !slices.Equal(got, []string{"cancelled-new", "failed-new", "keep-failed-40", "processed-new", "short-processed-0", "staged-ancient"}) {
		t.Errorf("rows left %v", got)
	}
	if _, err := st.DeleteExpired(t.Context(), store.Retention{store.StatusStaged: {Default: time.Second}}, now, store.Deleting{}); err == nil {
		t.Error("a retention of staged rows was taken")
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	st := open(t)
	now := time.Now()
	ids := insertAged(t, st, now, []aged{
		{"p-processed", "p", store.StatusProcessed, 3 * day, 3 * day},
		{"p-failed", "p", store.StatusFailed, 3 * day, 3 * day},
		{"p-cancelled", "p", store.StatusCancelled, 3 * day, 3 * day},
		{"p-staged", "p", store.StatusStaged, 3 * day, 3 * day},
		{"p-failed-new", "p", store.StatusFailed, 3 * day, time.Hour},
		{"q-failed", "q", store.StatusFailed, 3 * day, 3 * day},
	})
	p := store.Purge{Filter: store.Filter{Project: "p"}, Before: now.Add(-day),
		Statuses: []store.Status{store.StatusFailed, store.StatusCancelled, store.StatusFailed}}
	n, err := st.Purge(t.Context(), p, store.Deleting{Batch: 1})
	if err != nil || n != 2 {
		t.Errorf("purged %d rows (%v), want 2", n, err)
	}
	if got := left(t, st, ids); !slices.Equal(got, []string{"p-failed-new", "p-processed", "p-staged", "q-failed"}) {
		t.Errorf("rows left %v", got)
	}
	// A staged status refuses the whole purge, before deleting anything.
	p.Statuses = []store.Status{store.StatusProcessed, store.StatusStaged}
	if _, err := st.Purge(t.Context(), p, store.Deleting{}); err == nil || !strings.Contains(err.Error(), `"staged" rows are never deleted`) {
		t.Errorf("a purge of staged rows: %v", err)
	}
	if got := left(t, st, ids); !slices.Contains(got, "p-processed") {
		t.Errorf("a refused purge deleted rows: left %v", got)
	}
}

// TestDeleteStopsAtCheck: a sweep whose lock is lost stops before its next
// batch.
func TestDeleteStopsAtCheck(t *testing.T) {
	t.Parallel()
	st := open(t)
	now := time.Now()
	ids := insertAged(t, st, now, []aged{
		{"a", "p", store.StatusProcessed, 3 * day, 3 * day},
		{"b", "p", store.StatusProcessed, 3 * day, 3 * day},
		{"c", "p", store.StatusProcessed, 3 * day, 3 * day},
	})
	calls := 0
	lost := errors.New("lock lost")
	check := func() error {
		if calls++; calls > 1 {
			return lost
		}
		return nil
	}
	n, err := st.DeleteExpired(t.Context(), store.Retention{store.StatusProcessed: {Default: day}}, now, store.Deleting{Batch: 1, Check: check})
	if !errors.Is(err, lost) || n != 1 {
		t.Errorf("deleted %d rows (%v), want 1 and the check's error", n, err)
	}
	if got := left(t, st, ids); len(got) != 2 {
		t.Errorf("rows left %v, want 2", got)
	}
}
