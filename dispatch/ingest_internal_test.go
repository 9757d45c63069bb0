package dispatch

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestStableIDsSortInOrder checks the order of change ids: by Time to the
// nanosecond without Seq (a file's changes, in the order they were seen);
// by Time's millisecond, then Seq and Sub, with Seq (a database's changes,
// in commit order); and that they stay version-8 UUIDs, are the same for
// the same change, and differ between triggers and sources.
func TestStableIDsSortInOrder(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	check := func(what string, changes []Change, key func(*Change) string) {
		t.Helper()
		ids := make([]uuid.UUID, len(changes))
		for i := range changes {
			ids[i] = stableID(&changes[i], key(&changes[i]))
			if ids[i].Version() != 8 || ids[i].Variant() != uuid.RFC4122 {
				t.Fatalf("%s: %s is not a version-8 RFC 4122 UUID", what, ids[i])
			}
			if again := stableID(&changes[i], key(&changes[i])); again != ids[i] {
				t.Fatalf("%s: the same change has ids %s and %s", what, ids[i], again)
			}
			if ms := int64(binary.BigEndian.Uint64(ids[i][:8]) >> 16); ms != changes[i].Time.UnixMilli() {
				t.Fatalf("%s: id %s begins with millisecond %d, want %d", what, ids[i], ms, changes[i].Time.UnixMilli())
			}
		}
		for i := 1; i < len(ids); i++ {
			if ids[i-1].String() >= ids[i].String() {
				t.Fatalf("%s: change %d's id %s sorts after change %d's %s", what, i-1, ids[i-1], i, ids[i])
			}
		}
	}

	// Without Seq: by Time, within one millisecond and across them.
	var files []Change
	at := base
	for i := range 2000 {
		at = at.Add(time.Duration(1 + rnd.IntN(3000)))
		files = append(files, Change{Event: Event{Time: at}, Key: fmt.Sprintf("p\x00uploads\x00FILE_CREATE\x00f%d", i)})
	}
	check("files", files, func(c *Change) string { return c.Key + "\x00thumbnail" })

	// With Seq: by millisecond, then Seq, then Sub; the same for every
	// trigger and source, whatever their hashes.
	var rows []Change
	lsn, at := uint64(0x16B3748), base
	for range 2000 {
		if rnd.IntN(20) == 0 {
			at = at.Add(time.Duration(1 + rnd.IntN(3e6)))
		}
		lsn += uint64(24 + rnd.IntN(1e6))
		for sub := range uint64(1 + rnd.IntN(5)) {
			rows = append(rows, Change{Event: Event{Time: at}, Key: "p\x00app", Seq: lsn, Sub: sub})
		}
	}
	for _, key := range []string{"p\x00app", "p\x00app\x00audit", "q\x00app\x00audit"} {
		check("rows of "+key, rows, func(*Change) string { return key })
	}
	big := []Change{{Event: Event{Time: base}, Key: "p\x00app", Seq: lsn, Sub: 1<<32 - 1}, {Event: Event{Time: base}, Key: "p\x00app", Seq: lsn + 24}}
	check("the largest Sub", big, func(c *Change) string { return c.Key })

	// A change's ids for two triggers, or for two sources, differ.
	seen := make(map[uuid.UUID]string)
	for _, key := range []string{"p\x00app", "p\x00app\x00audit", "p\x00app\x00mail", "q\x00app", "q\x00app\x00audit"} {
		for i := range rows[:200] {
			id := stableID(&rows[i], key)
			if other, ok := seen[id]; ok {
				t.Fatalf("change %d has id %s for %q and for %s", i, id, key, other)
			}
			seen[id] = fmt.Sprintf("%q, change %d", key, i)
		}
	}
}
