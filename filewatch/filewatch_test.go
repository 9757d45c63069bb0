package filewatch_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/triggerd/triggerd/filewatch"
)

func TestCreateCarriesTheFilesMeta(t *testing.T) {
	r := newRig(t)
	r.start(r.config("n1", "", both), filewatch.Options{}, false)
	before := time.Now()
	r.write("a.txt", "hello")
	got := r.expect("created file a.txt")
	var d fileData
	r.must(json.Unmarshal(got[0].Data, &d))
	sum := sha256.Sum256([]byte("hello"))
	fi, err := os.Stat(r.path("a.txt"))
	r.must(err)
	if d.Store != "up" || d.Meta.Size != 5 || d.Meta.Mode != "0644" || d.Meta.SHA256 != hex.EncodeToString(sum[:]) ||
		d.Meta.Modified != fi.ModTime().UTC().Format(time.RFC3339Nano) {
		t.Errorf("data %s", got[0].Data)
	}
	seenAt, err := time.Parse(time.RFC3339Nano, got[0].Time)
	r.must(err)
	if seenAt.Before(before) || seenAt.After(got[0].At) {
		t.Errorf("event time %s is not when the file was seen (between %s and %s)", got[0].Time, before, got[0].At)
	}
	if idx := r.indexed(); len(idx) != 1 || idx[0] != "file a.txt 5" {
		t.Errorf("index %q", idx)
	}
}
