package filewatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/google/uuid"

	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// data is a file event's data.
type data struct {
	Store string `json:"store"`
	Path  string `json:"path"`
	Type  string `json:"type"`
	Meta  meta   `json:"meta"`
}

// meta describes a file or folder. A FILE_DELETE carries the size and time
// the index last knew.
type meta struct {
	Size     int64  `json:"size"`
	Modified string `json:"modified"`
	Mode     string `json:"mode,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
}

// dirChange is a change to the directory: its index update and the event
// it causes when the index did not know of it.
type dirChange struct {
	index store.IndexChange
	// event has no Triggers when no trigger takes the change.
	event dispatch.Change
}

// commit applies changes to the directory's index and stages the events of
// those that are news to it, in one transaction, returning once it is
// committed: a change applied before (after a crash, or seen twice)
// stages nothing.
func (s *Source) commit(ctx context.Context, changes []dirChange) error {
	events := make([]dispatch.Change, len(changes))
	for i := range changes {
		events[i] = changes[i].event
	}
	return s.disp.IngestWith(ctx, events, func(ctx context.Context, rows []store.EventLog) (map[uuid.UUID]bool, error) {
		index := make([]store.IndexChange, len(changes))
		for i := range changes {
			index[i] = changes[i].index
			n := len(events[i].Triggers) // the change's rows, one per trigger
			index[i].Events, rows = rows[:n:n], rows[n:]
		}
		return s.store.ApplyFiles(ctx, s.project, s.alias, index)
	})
}

// event attaches to c the event of type typ for e, addressed to the
// triggers of that type whose path glob matches e's path. describe is
// called only when a trigger takes the event.
func (s *Source) event(c *dirChange, typ string, e store.FileEntry, describe func() meta) {
	var names []string
	for _, t := range *s.triggers.Load() {
		if t.Type != typ {
			continue
		}
		if t.Options.Path != "" {
			if ok, _ := doublestar.Match(t.Options.Path, e.Path); !ok {
				continue
			}
		}
		names = append(names, t.Name)
	}
	if len(names) == 0 {
		return
	}
	body, err := json.Marshal(data{Store: s.alias, Path: e.Path, Type: e.Type, Meta: describe()})
	if err != nil {
		panic(fmt.Sprintf("filewatch: encode event data: %v", err)) // strings and numbers always encode
	}
	seen := time.Now()
	c.event = dispatch.Change{
		Event:    dispatch.Event{Project: s.project, Type: typ, Data: body, Time: seen},
		Key:      strings.Join([]string{s.project, s.alias, typ, e.Path, strconv.FormatInt(seen.UnixNano(), 10)}, "\x00"),
		Triggers: names,
	}
}

// ignored reports whether a relative path, or a folder it is in, matches one
// of the directory's ignore globs. A glob without '/' is matched against
// each name of the path, one with '/' against the path and its folders.
func (s *Source) ignored(rel string) bool {
	for _, g := range s.dir.Ignore {
		if !strings.Contains(g, "/") {
			for name := range strings.SplitSeq(rel, "/") {
				if ok, _ := doublestar.Match(g, name); ok {
					return true
				}
			}
			continue
		}
		for p := rel; p != "."; p = parent(p) {
			if ok, _ := doublestar.Match(g, p); ok {
				return true
			}
		}
	}
	return false
}

// parent is the folder of a relative path, "." at the top.
func parent(rel string) string {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "."
	}
	return rel[:i]
}

// errReplaced says that a path is no longer the regular file that settled:
// something else took its place, and the events of that change follow.
var errReplaced = errors.New("no longer a regular file")

// hashFile returns the hex SHA-256 of a file's first size bytes, or
// errReplaced when the path is no longer a regular file. It follows no
// symlink and does not block on a FIFO put in the file's place.
func hashFile(name string, size int64) (string, error) {
	f, err := os.OpenFile(name, hashOpenFlags, 0)
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
		return "", errReplaced // a symlink, or a folder above that became a file
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", errReplaced
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
