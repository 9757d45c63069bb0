package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/triggerd/triggerd/config"
)

// triggerProject is a project with one database and one storage directory,
// for triggers on their own to be checked against.
const triggerProject = "store: {url: postgres://x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
	"    databases: {a: {url: 'postgres://a'}}\n    storage: {s: {path: ./files}}\n    triggers:\n"

// TestParseTriggerChecksAsTheConfigDoes checks each bad trigger twice: in
// a config file, and on its own as the admin API takes it. Both refuse it
// with the same message, for the same field.
func TestParseTriggerChecksAsTheConfigDoes(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(triggerProject+"      - {name: ok, type: x, url: 'http://h/'}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := &cfg.Projects[0]
	cases := []struct{ name, trigger, field string }{
		{"no name", `{type: x, url: 'http://h/'}`, "name"},
		{"bad name", `{name: 'a b', type: x, url: 'http://h/'}`, "name"},
		{"no type", `{name: t, url: 'http://h/'}`, "type"},
		{"control in type", `{name: t, type: "a\0b", url: 'http://h/'}`, "type"},
		{"no url", `{name: t, type: x}`, "url"},
		{"ftp url", `{name: t, type: x, url: 'ftp://h/'}`, "url"},
		{"url without host", `{name: t, type: x, url: 'http:///x'}`, "url"},
		{"retries", `{name: t, type: x, url: 'http://h/', retries: 101}`, "retries"},
		{"retries not a number", `{name: t, type: x, url: 'http://h/', retries: many}`, "retries"},
		{"timeout", `{name: t, type: x, url: 'http://h/', timeout: 0}`, "timeout"},
		{"timeout without unit", `{name: t, type: x, url: 'http://h/', timeout: 5x}`, "timeout"},
		{"backoff", `{name: t, type: x, url: 'http://h/', retry_backoff: {initial: 5s, max: 1s}}`, "retry_backoff.max"},
		{"concurrency", `{name: t, type: x, url: 'http://h/', concurrency: 0}`, "concurrency"},
		{"format", `{name: t, type: x, url: 'http://h/', format: json}`, "format"},
		{"reserved header", `{name: t, type: x, url: 'http://h/', headers: {X-SC-Token: x}}`, "headers.X-SC-Token"},
		{"webhook secret", `{name: t, type: x, url: 'http://h/', webhook_secrets: [whsec_]}`, "webhook_secrets[0]"},
		{"unknown key", `{name: t, type: x, url: 'http://h/', retrys: 3}`, ""},
		{"options on custom", `{name: t, type: x, url: 'http://h/', options: {col: a}}`, "options"},
		{"db type", `{name: t, type: DB_UPSERT, url: 'http://h/'}`, "type"},
		{"unknown db", `{name: t, type: DB_INSERT, url: 'http://h/', options: {db: b}}`, "options.db"},
		{"bad col", `{name: t, type: DB_INSERT, url: 'http://h/', options: {col: a.b.c}}`, "options.col"},
		{"columns on insert", `{name: t, type: DB_INSERT, url: 'http://h/', options: {columns: a}}`, "options.columns"},
		{"unknown store", `{name: t, type: FILE_CREATE, url: 'http://h/', options: {store: b}}`, "options.store"},
		{"bad glob", `{name: t, type: FILE_CREATE, url: 'http://h/', options: {path: '/x'}}`, "options.path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, inConfig := config.Parse("t.yaml", []byte(triggerProject+"      - "+c.trigger+"\n"), env(nil))
			_, alone := config.ParseTrigger("trigger", []byte(c.trigger), p)
			var want, got *config.FieldError
			if !errors.As(inConfig, &want) || !errors.As(alone, &got) {
				t.Fatalf("want two field errors, got %v and %v", inConfig, alone)
			}
			const at = "projects[0].triggers[0]"
			if got.Field != c.field || want.Field != strings.TrimSuffix(at+"."+c.field, ".") {
				t.Errorf("fields: config %q, alone %q; want %q", want.Field, got.Field, c.field)
			}
			if got.Message != want.Message {
				t.Errorf("messages differ:\nconfig: %s\nalone:  %s", want.Message, got.Message)
			}
			if got.Name != "trigger" || got.Line != 1 {
				t.Errorf("alone: %v, want it named trigger, at line 1", got)
			}
		})
	}
}

// TestParseTriggerDefaults checks that a trigger on its own takes the
// config's defaults, the project's only database, and values as written,
// and that its Document reads back to an equal trigger.
func TestParseTriggerDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(triggerProject+"      - {name: ok, type: DB_INSERT, url: 'http://h/'}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := &cfg.Projects[0]
	alone, err := config.ParseTrigger("trigger", []byte(`{"name": "ok", "type": "DB_INSERT", "url": "http://h/"}`), p)
	if err != nil {
		t.Fatal(err)
	}
	if !alone.Equal(&p.Triggers[0]) {
		t.Errorf("alone:     %s\nin config: %s", alone.Document(), p.Triggers[0].Document())
	}
	back, err := config.ParseTrigger("doc", alone.Document(), p)
	if err != nil || !back.Equal(alone) {
		t.Fatalf("the document %s reads back as %v (%v)", alone.Document(), back, err)
	}
	literal, err := config.ParseTrigger("trigger", []byte("name: t\ntype: x\nurl: http://h/${TOKEN}\nheaders: {X-Key: '$${K}'}\n"), p)
	if err != nil {
		t.Fatal(err)
	}
	if literal.URL != "http://h/${TOKEN}" || literal.Headers["X-Key"] != "$${K}" {
		t.Errorf("values were not taken as written: url %q, header %q", literal.URL, literal.Headers["X-Key"])
	}
	for _, bad := range []string{"", "~", "[]", "{name: [", "a: 1\n---\nb: 2\n"} {
		var fe *config.FieldError
		if _, err := config.ParseTrigger("trigger", []byte(bad), p); !errors.As(err, &fe) {
			t.Errorf("%q: want a *config.FieldError, got %v", bad, err)
		}
	}
}
