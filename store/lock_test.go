package store_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/store"
)

// holdLock takes the advisory lock named key on a connection of its own
// that then stays idle, as a frozen node's does, and returns it.
func holdLock(t *testing.T, dbURL, key string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	got, fenced, err := store.TakeLock(ctx, conn, key)
	if err != nil || !got || fenced != nil {
		t.Fatalf("take lock %s: %v %v %v", key, got, fenced, err)
	}
	return conn
}

// TestLockFencesAHolderThatStopsRenewing: a lock whose session stays idle
// for longer than FenceAfter is taken from it, its session ended; a Lock
// that renews itself is not, and notices when its session is ended.
func TestLockFencesAHolderThatStopsRenewing(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	other, err := store.Open(ctx, store.Options{URL: st.Pool().Config().ConnString(), Schema: st.Schema()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	frozenKey, liveKey := st.Schema()+".frozen", st.Schema()+".live"
	frozen := holdLock(t, st.Pool().Config().ConnString(), frozenKey)
	live, err := st.TryLock(ctx, liveKey)
	if err != nil || live == nil {
		t.Fatalf("take the live lock: %v %v", live, err)
	}
	defer live.Release()
	if l, err := other.TryLock(ctx, frozenKey); err != nil || l != nil {
		t.Fatalf("a lock idle for less than %s: %v %v, want it kept", store.FenceAfter, l, err)
	}

	hidden := connectAsNewRole(t, st)

	time.Sleep(store.FenceAfter + 500*time.Millisecond)
	// A node whose role cannot see the holder's session cannot tell
	// whether it is live, and says how to fix that.
	if got, fenced, err := store.TakeLock(ctx, hidden, frozenKey); got || fenced != nil || err == nil || !strings.Contains(err.Error(), "grant this one pg_read_all_stats") {
		t.Errorf("take a lock held by a session hidden from the role: %v %v %v, want an error saying what to grant", got, fenced, err)
	}
	if l, err := other.TryLock(ctx, liveKey); err != nil || l != nil {
		t.Fatalf("a lock renewed by its holder: %v %v, want it kept", l, err)
	}
	if err := live.Check(); err != nil {
		t.Fatalf("the live lock: %v", err)
	}
	took, err := other.TryLock(ctx, frozenKey)
	if err != nil || took == nil {
		t.Fatalf("a lock idle for longer than %s: %v %v, want it taken", store.FenceAfter, took, err)
	}
	defer took.Release()
	if f := took.Fenced; f == nil || f.PID != frozen.PgConn().PID() || f.Idle < store.FenceAfter || f.Client != "local" {
		t.Errorf("fenced %+v, want pid %d, idle over %s, local", f, frozen.PgConn().PID(), store.FenceAfter)
	}
	if err := frozen.Ping(ctx); err == nil {
		t.Error("the fenced session still answers")
	}

	// A Lock whose session is ended (fenced by another node) says so
	// within about RenewEvery.
	var ended bool
	if err := st.Pool().QueryRow(ctx, `SELECT pg_terminate_backend(l.pid) FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.granted AND (l.classid::int8 << 32 | l.objid::int8) = hashtextextended($1, 0)`, liveKey).Scan(&ended); err != nil || !ended {
		t.Fatalf("end the live lock's session: %v %v", ended, err)
	}
	waittest.For(t, 3*store.RenewEvery, func() error {
		if live.Check() == nil {
			return errors.New("the lock whose session was ended still checks fine")
		}
		return nil
	})
	if err := live.Check(); !strings.Contains(err.Error(), "connection broke") {
		t.Errorf("the lock whose session was ended: %v", err)
	}
}

// connectAsNewRole connects to the store's database as a new role with no
// privileges, dropped at cleanup.
func connectAsNewRole(t *testing.T, st *store.Store) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	role := "r_" + st.Schema()
	if _, err := st.Pool().Exec(ctx, `CREATE ROLE `+role+` LOGIN`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(st.Pool().Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("connect as a new role (the tests' server must trust local connections): %v", err)
	}
	t.Cleanup(func() {
		conn.Close(context.Background())
		if _, err := st.Pool().Exec(context.Background(), `DROP ROLE `+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	return conn
}
