package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
)

// env is a fixed environment for ${VAR} expansion.
func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

const full = `listen: 127.0.0.1:5000
node_id: node-1
store:
  url: ${TRIGGERD_STORE_URL}
  schema: events
projects:
  - id: demo
    secrets:
      - {kid: k1, alg: HS256, secret: "${DEMO_SECRET}"}
    rules:
      default: authenticated
      sent-email: allow
    triggers:
      - name: email-sender
        type: sent-email
        url: http://127.0.0.1:9000/email
        retries: ${RETRIES}
        timeout: 2500
        retry_backoff: {initial: 2s, max: 1m}
        headers: {X-Api-Key: "${KEY:-none}"}
        format: binary
      - name: minimal
        type: other
        url: https://hooks.example.com/x
        retries: 0
      - {name: envelope, type: other, url: "https://hooks.example.com/y", format: envelope}
      - {name: empty-format, type: other, url: "https://hooks.example.com/z", format: ~}
`

func TestParseFullConfig(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(full), env(map[string]string{
		"TRIGGERD_STORE_URL": "postgres://u:p@db/events",
		"DEMO_SECRET":        "a: b # not a comment, 0123456789abcdef",
		"RETRIES":            "5",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:5000" || cfg.NodeID != "node-1" || cfg.Store.URL != "postgres://u:p@db/events" || cfg.Store.Schema != "events" {
		t.Errorf("top level: %+v", cfg)
	}
	// Defaults.
	if cfg.SyncTimeout.Std() != 10*time.Second || cfg.BodyLimit != 1<<20 || cfg.ShutdownGrace.Std() != 10*time.Second ||
		cfg.Lease.Std() != 10*time.Second || cfg.Store.MaxConns != 16 {
		t.Errorf("defaults: %+v", cfg)
	}
	p := cfg.Project("demo")
	if p == nil || cfg.Project("nope") != nil {
		t.Fatal("Project lookup")
	}
	if p.Secrets[0].Secret != "a: b # not a comment, 0123456789abcdef" {
		t.Errorf("an expanded secret must stay one string, got %q", p.Secrets[0].Secret)
	}
	if p.Rule("sent-email") != config.RuleAllow || p.Rule("anything") != config.RuleAuthenticated {
		t.Errorf("rules: %v", p.Rules)
	}
	tr := p.Triggers[0]
	if tr.Retries != 5 || tr.Timeout() != 2500*time.Millisecond || tr.RetryBackoff.Initial.Std() != 2*time.Second ||
		tr.RetryBackoff.Max.Std() != time.Minute || tr.Headers["X-Api-Key"] != "none" || tr.Concurrency != 16 ||
		tr.Format != config.FormatBinary {
		t.Errorf("trigger: %+v", tr)
	}
	m := p.Triggers[1]
	if m.Retries != 0 || m.Timeout() != 5*time.Second || m.RetryBackoff.Initial.Std() != time.Second || m.RetryBackoff.Max.Std() != 10*time.Minute ||
		m.Format != config.FormatStructured {
		t.Errorf("explicit retries: 0 and defaults: %+v", m)
	}
	if e, n := p.Triggers[2], p.Triggers[3]; e.Format != config.FormatEnvelope || n.Format != config.FormatStructured {
		t.Errorf("formats %q and, when empty, %q", e.Format, n.Format)
	}
}

func TestRulesDefaultToAuthenticated(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(`store: {url: x}
projects: [{id: p, secrets: [{kid: k, alg: HS256, secret: `+longSecret+`}]}]`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if r := cfg.Projects[0].Rule("x"); r != config.RuleAuthenticated || cfg.NodeID != host {
		t.Fatalf("rule %q node %q", r, cfg.NodeID)
	}
}

func TestExpansion(t *testing.T) {
	t.Parallel()
	base := "store:\n  url: %s\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]}]\n"
	cases := []struct {
		url, want, err string
		vars           map[string]string
	}{
		{url: "${U}", vars: map[string]string{"U": "postgres://a"}, want: "postgres://a"},
		{url: "${U:-postgres://default}", want: "postgres://default"},
		{url: "${U:-postgres://default}", vars: map[string]string{"U": ""}, want: "postgres://default"},
		{url: "pre-${U}-post", vars: map[string]string{"U": "mid"}, want: "pre-mid-post"},
		{url: "'a$$b'", want: "a$b"},
		{url: "$HOME", want: "$HOME"},
		{url: "${MISSING}", err: "line 2: store.url: environment variable MISSING is not set"},
		{url: "'${U'", err: "store.url: the ${ at character 1 is not closed: write ${VAR} or ${VAR:-default}, or $$ for a literal $"},
		{url: "'${1X}'", err: "store.url: the ${...} at character 1 does not name a variable"},
	}
	for _, c := range cases {
		cfg, err := config.Parse("t.yaml", []byte(strings.Replace(base, "%s", c.url, 1)), env(c.vars))
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: want error %q, got %v", c.url, c.err, err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.url, err)
		case cfg.Store.URL != c.want:
			t.Errorf("%s: got %q, want %q", c.url, cfg.Store.URL, c.want)
		}
	}
}

// TestErrors checks that each bad config names the file, the line, the key
// and what to do.
func TestErrors(t *testing.T) {
	t.Parallel()
	const head = "store: {url: postgres://x}\n"
	const proj = "projects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n"
	const dbs = proj + "    databases:\n      a: {url: 'postgres://a'}\n"
	const stores = proj + "    storage:\n      a: {path: ./files}\n"
	const trig = proj + "    triggers:\n      - name: t\n        type: x\n        url: http://h/\n"
	cases := []struct{ name, text, want string }{
		{"empty file", "", "the file is empty"},
		{"not yaml", "store: [", "t.yaml: line 1: YAML syntax: did not find expected node content: check the indentation"},
		{"two documents", head + proj + "---\nx: 1\n", "more than one YAML document"},
		{"unknown top key", head + proj + "listn: x\n", `t.yaml: line 5: top level: unknown key "listn" (known keys: listen, node_id`},
		{"unknown trigger key", trig + "        retrys: 3\n", `line 8: projects[0].triggers[0]: unknown key "retrys" (known keys: name, type, url, retries`},
		{"unknown secret key", head + "projects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secrt: s}]\n", `projects[0].secrets[0]: unknown key "secrt"`},
		{"list as key", head + proj + "    rules: {? [a]: allow}\n", "line 5: projects[0].rules: a key must be a single value, not a list or mapping"},
		{"alias as key", head + proj + "    rules: {x: &k deny, *k : allow}\n", "line 5: projects[0].rules: a key cannot be an alias (*k): write it out"},
		{"null key", head + proj + "    storage: {a: {path: x}, ~: {path: y}}\n", "line 5: projects[0].storage: a key is empty (~ or null): write a name"},
		{"duplicate key", head + head + proj, `line 2: top level: key "store" appears twice (first on line 1)`},
		{"wrong kind int", trig + "        retries: many\n", `line 8: projects[0].triggers[0].retries: want a whole number, got "many"`},
		{"wrong kind list", head + "projects: {id: p}\n", "projects: want a list"},
		{"wrong kind mapping", "store: postgres://x\n" + proj, "store: want keys and values"},
		{"duration without unit", head + proj + "sync_timeout: 10\n", `sync_timeout: "10" has no unit: write it like 10s or 500ms`},
		{"bad duration", head + proj + "sync_timeout: soon\n", `sync_timeout: "soon" is not a duration`},
		{"missing store url", proj, "store.url: is required"},
		{"bad listen", head + proj + "listen: 4122\n", "listen: \"4122\" is not host:port"},
		{"bad metrics_listen", head + proj + "metrics_listen: 9122\n", "metrics_listen: \"9122\" is not host:port"},
		{"metrics_listen on listen", head + proj + "listen: 127.0.0.1:4122\nmetrics_listen: 127.0.0.1:4122\n", "metrics_listen: \"127.0.0.1:4122\" is listen's address too"},
		{"node id with a NUL", head + proj + "node_id: \"a\\0b\"\n", `node_id: "a\x00b" is not a valid node id`},
		{"node id with a space", head + proj + "node_id: node 1\n", `node_id: "node 1" is not a valid node id`},
		{"type with a NUL", head + proj + "    triggers:\n      - {name: t, type: \"a\\0b\", url: http://h/}\n", `projects[0].triggers[0].type: "a\x00b" has a control character`},
		{"bad schema", "store: {url: x, schema: Bad-Name}\n" + proj, "store.schema: \"Bad-Name\" is not a valid schema name"},
		{"no projects", head, "projects: at least one project is required"},
		{"bad project id", head + "projects: [{id: 'a b', secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]}]\n", "projects[0].id: \"a b\" is not a valid project id"},
		{"duplicate project", head + proj + "  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n", `line 5: projects[1].id: project "p" is defined twice`},
		{"no secrets", head + "projects: [{id: p}]\n", "projects[0].secrets: at least one secret is required"},
		{"no kid", head + "projects: [{id: p, secrets: [{alg: HS256, secret: " + longSecret + "}]}]\n", "secrets[0].kid: is required"},
		{"duplicate kid", head + "projects: [{id: p, secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}, {kid: k, alg: HS256, secret: " + longSecret + "}]}]\n", `secrets[1].kid: "k" is used twice`},
		{"bad alg", head + "projects: [{id: p, secrets: [{kid: k, alg: ES256, secret: " + longSecret + "}]}]\n", `alg: "ES256" is not supported: use HS256 or RS256`},
		{"hs without secret", head + "projects: [{id: p, secrets: [{kid: k, alg: HS256}]}]\n", "secrets[0].secret: is required for HS256"},
		{"rs without files", head + "projects: [{id: p, secrets: [{kid: k, alg: RS256}]}]\n", "needs private_key_file"},
		{"rs first without private", head + "projects: [{id: p, secrets: [{kid: k, alg: RS256, public_key_file: k.pub}]}]\n", "private_key_file: is required on the first secret"},
		{"bad rule", head + proj + "    rules: {x: maybe}\n", `projects[0].rules.x: "maybe" is not a rule: use allow, deny or authenticated`},
		{"no trigger name", head + proj + "    triggers: [{type: x, url: 'http://h/'}]\n", "triggers[0].name: \"\" is not a valid trigger name"},
		{"duplicate trigger", head + trig + "      - {name: t, type: y, url: 'http://h/'}\n", `trigger "t" is defined twice`},
		{"no type", head + proj + "    triggers: [{name: t, url: 'http://h/'}]\n", "triggers[0].type: is required"},
		{"db trigger without databases", head + proj + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/'}]\n", "options.db: is required: name one of the project's databases (the project has none"},
		{"db trigger naming no database", head + dbs + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {db: b}}]\n", `options.db: "b" is not one of the project's databases (a)`},
		{"db trigger among several", head + dbs + "      c: {url: 'postgres://c'}\n    triggers: [{name: t, type: DB_INSERT, url: 'http://h/'}]\n", "options.db: is required: name one of the project's databases (a, c)"},
		{"unknown db type", head + dbs + "    triggers: [{name: t, type: DB_UPSERT, url: 'http://h/'}]\n", `"DB_UPSERT" is not a database event type`},
		{"columns on insert", head + dbs + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {columns: a}}]\n", "options.columns: only DB_UPDATE triggers take columns"},
		{"options on custom", head + proj + "    triggers: [{name: t, type: x, url: 'http://h/', options: {col: a}}]\n", "line 5: projects[0].triggers[0].options: options belong to DB_* and FILE_* triggers (DB_* triggers take db, col and columns; FILE_* triggers take store and path), not to \"x\""},
		{"file options on custom", head + proj + "    triggers: [{name: t, type: x, url: 'http://h/', options: {path: a}}]\n", "options: options belong to DB_* and FILE_* triggers"},
		{"bad col", head + dbs + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {col: 'a.b.c'}}]\n", `options.col: "a.b.c" is not a table name`},
		{"empty col", head + dbs + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {col: ' , '}}]\n", "options.col: names no table"},
		{"unknown option", head + dbs + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {table: a}}]\n", `unknown key "table" (known keys: db, col, columns, store, path)`},
		{"database without url", head + proj + "    databases: {a: {slot: s}}\n", "databases.a.url: is required"},
		{"bad slot", head + proj + "    databases: {a: {url: x, slot: Bad}}\n", `databases.a.slot: "Bad" is not a valid slot name`},
		{"long derived slot", head + proj + "    databases: {" + strings.Repeat("a", 60) + ": {url: x}}\n", "is not a valid slot name: use at most 63"},
		{"shared slot", head + proj + "    databases: {a: {url: x, slot: s}, b: {url: y, slot: s}}\n", `slot "s" is also the slot of database a`},
		{"zero heartbeat", head + proj + "    databases: {a: {url: x, heartbeat: 0s}}\n", "heartbeat: must be more than 0"},
		{"bad storage alias", head + proj + "    storage: {'a b': {path: x}}\n", `line 5: projects[0].storage.a b: "a b" is not a valid storage alias: use letters, digits, _ and -`},
		{"storage without path", head + proj + "    storage:\n      a:\n        settle: 1s\n", "line 7: projects[0].storage.a.path: is required: the directory to watch"},
		{"storage with blank path", head + proj + "    storage: {a: {path: ' '}}\n", "storage.a.path: is required: the directory to watch"},
		{"storage with no keys", head + proj + "    storage:\n      a:\n", "line 6: projects[0].storage.a.path: is required"},
		{"unknown storage key", head + proj + "    storage: {a: {path: x, hash: 1}}\n", `storage.a: unknown key "hash" (known keys: path, ignore, settle, hash_limit)`},
		{"zero settle", head + proj + "    storage: {a: {path: x, settle: 0s}}\n", "storage.a.settle: must be more than 0"},
		{"negative hash limit", head + proj + "    storage:\n      a:\n        path: x\n        hash_limit: -1\n", "line 8: projects[0].storage.a.hash_limit: must be 0 or more bytes (0 sends no sha256)"},
		{"hash limit not a number", head + proj + "    storage: {a: {path: x, hash_limit: 8MiB}}\n", `storage.a.hash_limit: want a whole number, got "8MiB"`},
		{"ignore not a list", head + proj + "    storage: {a: {path: x, ignore: '*.tmp'}}\n", "storage.a.ignore: want a list"},
		{"bad ignore glob", head + proj + "    storage:\n      a:\n        path: x\n        ignore:\n          - '*.tmp'\n          - '[a'\n", `line 10: projects[0].storage.a.ignore[1]: "[a" is not a valid glob: look for an unclosed [ or {`},
		{"absolute ignore glob", head + proj + "    storage: {a: {path: x, ignore: ['/tmp/*']}}\n", `storage.a.ignore[0]: "/tmp/*" starts with /, so it matches nothing: paths are relative to the storage directory (leave out the leading /)`},
		{"file trigger without storage", head + proj + "    triggers: [{name: t, type: FILE_CREATE, url: 'http://h/'}]\n", "line 5: projects[0].triggers[0].options.store: is required: name one of the project's storage directories (the project has none: add storage: {alias: {path: ...}})"},
		{"file trigger naming no storage", head + stores + "    triggers: [{name: t, type: FILE_DELETE, url: 'http://h/', options: {store: b}}]\n", `line 7: projects[0].triggers[0].options.store: "b" is not one of the project's storage directories (a)`},
		{"file trigger among several", head + stores + "      c: {path: ./other}\n    triggers: [{name: t, type: FILE_CREATE, url: 'http://h/'}]\n", "options.store: is required: name one of the project's storage directories (a, c)"},
		{"unknown file type", head + stores + "    triggers: [{name: t, type: FILE_MODIFY, url: 'http://h/'}]\n", `triggers[0].type: "FILE_MODIFY" is not a file event type: use FILE_CREATE or FILE_DELETE`},
		{"col on file trigger", head + stores + "    triggers:\n      - name: t\n        type: FILE_CREATE\n        url: http://h/\n        options: {col: users}\n", "line 11: projects[0].triggers[0].options.col: is an option of DB_* triggers: FILE_* triggers take store and path"},
		{"db on file trigger", head + stores + "    triggers: [{name: t, type: FILE_CREATE, url: 'http://h/', options: {db: a}}]\n", "options.db: is an option of DB_* triggers: FILE_* triggers take store and path"},
		{"store on db trigger", head + dbs + "    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {store: a}}]\n", "options.store: is an option of FILE_* triggers: DB_* triggers take db, col and columns"},
		{"path on db trigger", head + dbs + "    triggers: [{name: t, type: DB_DELETE, url: 'http://h/', options: {path: 'x/**'}}]\n", "options.path: is an option of FILE_* triggers: DB_* triggers take db, col and columns"},
		{"bad path glob", head + stores + "    triggers:\n      - name: t\n        type: FILE_CREATE\n        url: http://h/\n        options:\n          path: 'images/{a'\n", `line 12: projects[0].triggers[0].options.path: "images/{a" is not a valid glob`},
		{"absolute path glob", head + stores + "    triggers: [{name: t, type: FILE_CREATE, url: 'http://h/', options: {path: '/images/**'}}]\n", `options.path: "/images/**" starts with /, so it matches nothing`},
		{"bad url", head + proj + "    triggers: [{name: t, type: x, url: 'ftp://h/'}]\n", "url: is not an http or https URL: write http://host/path or https://host/path"},
		{"negative retries", head + trig + "        retries: -1\n", "retries: must be 0 to 100, got -1"},
		{"zero timeout", head + trig + "        timeout: 0\n", "timeout: must be more than 0"},
		{"max below initial", head + trig + "        retry_backoff: {initial: 5s, max: 1s}\n", "retry_backoff.max: must be at least initial (5s)"},
		{"zero concurrency", head + trig + "        concurrency: 0\n", "concurrency: must be 1 or more"},
		{"reserved header", head + trig + "        headers: {X-SC-Token: forged}\n", "headers.X-SC-Token: triggerd sets X-SC-Token itself"},
		{"bad header", head + trig + "        headers: {'bad header': x}\n", "is not a valid header name"},
		{"webhook header", head + trig + "        headers: {Webhook-Signature: x}\n", "headers.Webhook-Signature: triggerd sets Webhook-Signature itself"},
		{"webhook secret without prefix", head + proj + "    webhook_secrets: [MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]\n", "line 5: projects[0].webhook_secrets[0]: is not a Standard Webhooks secret (it does not start with whsec_): write whsec_ and the base64 of 24 to 64 random bytes; make one with: echo whsec_$(openssl rand -base64 32)"},
		{"webhook secret not base64", head + proj + "    webhook_secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS]\n", "webhook_secrets[0]: is not a Standard Webhooks secret (what follows whsec_ is not standard base64 (A-Z, a-z, 0-9, + and /, padded with =))"},
		{"webhook secret in base64url", head + proj + "    webhook_secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa_w]\n", "what follows whsec_ is not standard base64"},
		{"webhook secret unpadded", head + proj + "    webhook_secrets: [whsec_C2FpdGlyZSBkZSBsYSB2aWUgcXVvdGlkaWVubmU]\n", "what follows whsec_ is not standard base64"},
		{"short webhook secret", head + proj + "    webhook_secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La]\n", "(its key is shorter than 24 bytes)"},
		{"long webhook secret", head + proj + "    webhook_secrets: [whsec_" + strings.Repeat("MfKQ", 22) + "]\n", "(its key is longer than 64 bytes)"},
		{"repeated webhook secret", head + proj + "    webhook_secrets:\n      - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n      - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "line 7: projects[0].webhook_secrets[1]: is the same secret as projects[0].webhook_secrets[0]: list each secret once"},
		{"webhook secrets not a list", head + proj + "    webhook_secrets: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "projects[0].webhook_secrets: want a list"},
		{"trigger webhook secret", head + trig + "        webhook_secrets: [whsec_]\n", "projects[0].triggers[0].webhook_secrets[0]: is not a Standard Webhooks secret (its key is shorter than 24 bytes)"},
		{"ce header", head + trig + "        headers: {ce-id: x}\n", "headers.ce-id: triggerd sets ce-id itself"},
		{"ce datacontenttype header", head + trig + "        headers: {CE-DATACONTENTTYPE: x}\n", "headers.CE-DATACONTENTTYPE: triggerd sets CE-DATACONTENTTYPE itself"},
		{"unknown format", head + trig + "        format: json\n", `line 9: projects[0].triggers[0].format: "json" is not a delivery format: use structured (the default: a CloudEvent as application/cloudevents+json), binary (the data as the body, the other attributes in ce- headers) or envelope (the CloudEvent as application/json, as sent before)`},
		{"empty format", head + trig + "        format: ''\n", `format: "" is not a delivery format: use structured`},
		{"format in capitals", head + trig + "        format: Binary\n", `format: "Binary" is not a delivery format`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("t.yaml", []byte(c.text), env(nil))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "t.yaml: ") {
				t.Fatalf("want an error starting with the file and containing %q, got %v\n%s", c.want, err, c.text)
			}
		})
	}
}

func TestDatabaseDefaults(t *testing.T) {
	t.Parallel()
	text := "store: {url: x}\nprojects:\n  - id: My-App\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
		"    databases:\n      main-db: {url: 'postgres://a'}\n      other: {url: 'postgres://b', slot: s1, publication: p1, heartbeat: 2s}\n" +
		"    triggers:\n      - {name: t, type: DB_UPDATE, url: 'http://h/', options: {db: main-db, col: 'users, audit.orders', columns: 'status,total'}}\n"
	cfg, err := config.Parse("t.yaml", []byte(text), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Projects[0]
	if d := p.Databases["main-db"]; d.Slot != "triggerd_my_app_main_db" || d.Publication != d.Slot || d.Heartbeat.Std() != 10*time.Second {
		t.Fatalf("defaults: %+v", d)
	}
	if d := p.Databases["other"]; d.Slot != "s1" || d.Publication != "p1" || d.Heartbeat.Std() != 2*time.Second {
		t.Fatalf("explicit: %+v", d)
	}
	o := p.Triggers[0].Options
	if !slices.Equal(o.Tables(), []string{"users", "audit.orders"}) || !slices.Equal(o.ColumnList(), []string{"status", "total"}) {
		t.Fatalf("options: %q %q", o.Tables(), o.ColumnList())
	}
	one := "store: {url: x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
		"    databases: {only: {url: 'postgres://a'}}\n    triggers: [{name: t, type: DB_INSERT, url: 'http://h/'}]\n"
	if cfg, err = config.Parse("t.yaml", []byte(one), env(nil)); err != nil || cfg.Projects[0].Triggers[0].Options.DB != "only" {
		t.Fatalf("the only database is the default: %v", err)
	}
}

func TestStorageDefaults(t *testing.T) {
	t.Parallel()
	text := "store: {url: x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
		"    storage:\n      uploads: {path: ./uploads}\n      block:\n        path: /srv/block\n" +
		"      other:\n        path: /srv/other\n        ignore: ['*.tmp', 'cache/**']\n        settle: 2s\n        hash_limit: 0\n" +
		"    triggers:\n      - {name: t, type: FILE_CREATE, url: 'http://h/', options: {store: other, path: 'images/**'}}\n"
	cfg, err := config.Parse("t.yaml", []byte(text), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Projects[0]
	for _, alias := range []string{"uploads", "block"} {
		if s := p.Storage[alias]; s.Settle.Std() != 250*time.Millisecond || s.HashLimit != 8388608 || s.Ignore != nil {
			t.Fatalf("defaults of %s: %+v", alias, s)
		}
	}
	if s := p.Storage["uploads"]; s.Path != "./uploads" {
		t.Fatalf("Parse must leave a relative path alone: %q", s.Path)
	}
	if s := p.Storage["other"]; s.Path != "/srv/other" || s.Settle.Std() != 2*time.Second || s.HashLimit != 0 ||
		!slices.Equal(s.Ignore, []string{"*.tmp", "cache/**"}) {
		t.Fatalf("explicit: %+v", s)
	}
	if o := p.Triggers[0].Options; o.Store != "other" || o.Path != "images/**" {
		t.Fatalf("options: %+v", o)
	}
	one := "store: {url: x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
		"    storage: {only: {path: x}}\n    triggers:\n      - {name: c, type: FILE_CREATE, url: 'http://h/'}\n" +
		"      - {name: d, type: FILE_DELETE, url: 'http://h/', options: {path: '*.jpg'}}\n"
	cfg, err = config.Parse("t.yaml", []byte(one), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range cfg.Projects[0].Triggers {
		if tr.Options.Store != "only" {
			t.Fatalf("the only storage directory is the default of %s: %+v", tr.Name, tr.Options)
		}
	}
	if o := cfg.Projects[0].Triggers[0].Options; o.Path != "" {
		t.Fatalf("an absent path stays empty (every file): %q", o.Path)
	}
}

func TestLoadResolvesStorageNextToTheConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "triggerd.yaml")
	text := "store: {url: x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
		"    storage: {rel: {path: ./files/up}, abs: {path: /srv/files}, missing: {path: not/there}}\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err) // the directories do not exist: the file source checks that, not config
	}
	st := cfg.Projects[0].Storage
	if st["rel"].Path != filepath.Join(dir, "files", "up") || st["abs"].Path != "/srv/files" || st["missing"].Path != filepath.Join(dir, "not", "there") {
		t.Fatalf("storage paths %+v", st)
	}
	if st["rel"].Settle.Std() != 250*time.Millisecond || st["rel"].HashLimit != 8388608 {
		t.Fatalf("resolving must keep the defaults: %+v", st["rel"])
	}
}

func TestLoadResolvesKeyFilesNextToTheConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "triggerd.yaml")
	text := "store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: RS256, private_key_file: keys/k.pem, public_key_file: /abs/k.pub}]}]\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Projects[0].Secrets[0]
	if s.PrivateKeyFile != filepath.Join(dir, "keys/k.pem") || s.PublicKeyFile != "/abs/k.pub" {
		t.Fatalf("key files %q %q", s.PrivateKeyFile, s.PublicKeyFile)
	}
	if _, err := config.Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestIsFileType(t *testing.T) {
	t.Parallel()
	for typ, want := range map[string]bool{"FILE_CREATE": true, "FILE_DELETE": true, "FILE_MODIFY": false, "DB_DELETE": false, "file_create": false} {
		if config.IsFileType(typ) != want {
			t.Errorf("IsFileType(%q) != %v", typ, want)
		}
	}
}

func TestIsReservedType(t *testing.T) {
	t.Parallel()
	for typ, want := range map[string]bool{"DB_INSERT": true, "FILE_CREATE": true, "DB_anything": true, "sent-email": false, "db_insert": false} {
		if config.IsReservedType(typ) != want {
			t.Errorf("IsReservedType(%q) != %v", typ, want)
		}
	}
}

// TestReferenceConfig loads testdata/triggerd.yaml, the README's reference
// config, so that the documented example stays valid.
func TestReferenceConfig(t *testing.T) {
	t.Setenv("TRIGGERD_STORE_URL", "postgres://triggerd@localhost:5432/events")
	t.Setenv("DEMO_SECRET", "reference-secret-0123456789abcdef")
	t.Setenv("APP_DATABASE_URL", "postgres://app@localhost:5432/app")
	t.Setenv("DEMO_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	t.Setenv("PURGE_WEBHOOK_SECRET", "whsec_C2FpdGlyZSBkZSBsYSB2aWUgcXVvdGlkaWVubmU=")
	t.Setenv("TRIGGERD_ADMIN_PASSWORD", "reference-password")
	t.Setenv("TRIGGERD_ADMIN_SECRET", "reference-admin-secret-0123456789abcdef")
	cfg, err := config.Load(filepath.Join("..", "testdata", "triggerd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a == nil || a.User != "ops" || a.Password != "reference-password" || a.TokenTTL.Std() != 15*time.Minute {
		t.Fatalf("admin read as %+v", a)
	}
	p := cfg.Project("demo")
	if cfg.Store.URL != "postgres://triggerd@localhost:5432/events" || p == nil || p.Secrets[0].Secret != "reference-secret-0123456789abcdef" ||
		p.Rule("internal-audit") != config.RuleDeny || p.Rule("sent-email") != config.RuleAllow {
		t.Fatalf("reference config read as %+v", cfg)
	}
	if tr := p.Triggers[0]; tr.Headers["X-Api-Key"] != "dev-key" || tr.Retries != 3 || tr.Concurrency != 16 || tr.Timeout() != 5*time.Second ||
		tr.Format != config.FormatStructured {
		t.Fatalf("trigger read as %+v", tr)
	}
	if db, tr := p.Databases["app"], p.Triggers[2]; db.URL != "postgres://app@localhost:5432/app" || db.Slot != "triggerd_demo_app" ||
		tr.Options.DB != "app" || !slices.Equal(tr.Options.ColumnList(), []string{"status", "total"}) {
		t.Fatalf("database %+v and trigger %+v", db, tr)
	}
	if h := cfg.HTTP; h.ReadHeaderTimeout.Std() != 10*time.Second || h.ReadTimeout.Std() != 30*time.Second || h.WriteTimeout.Std() != 30*time.Second ||
		h.IdleTimeout.Std() != time.Minute || h.MaxHeaderBytes != 65536 {
		t.Fatalf("http read as %+v", h)
	}
	st := p.Storage["uploads"]
	if want := filepath.Join("..", "testdata", "storage"); st.Path != want || st.Settle.Std() != 250*time.Millisecond || st.HashLimit != 8388608 ||
		!slices.Equal(st.Ignore, []string{"*.tmp", ".*", "cache/**"}) {
		t.Fatalf("storage read as %+v", st)
	}
	if create, del := p.Triggers[3], p.Triggers[4]; create.Name != "thumbnail" || create.Type != config.TypeFileCreate ||
		create.Options.Store != "uploads" || create.Options.Path != "images/**" ||
		del.Type != config.TypeFileDelete || del.Options.Store != "uploads" || del.Options.Path != "" {
		t.Fatalf("file triggers read as %+v and %+v", create, del)
	}
	if project, own := p.SigningSecrets(&p.Triggers[0]), p.SigningSecrets(&p.Triggers[4]); !slices.Equal(project, []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}) ||
		!slices.Equal(own, []string{"whsec_C2FpdGlyZSBkZSBsYSB2aWUgcXVvdGlkaWVubmU="}) {
		t.Fatalf("webhook secrets read as %q and, for the trigger with its own, %q", project, own)
	}
}

// longSecret is an HS256 secret long enough to be accepted.
const longSecret = "config-test-secret-0123456789abcdef"

// TestAliasBomb checks that a small file whose aliases expand to a huge
// tree fails at once, naming the file and line, instead of expanding it.
func TestAliasBomb(t *testing.T) {
	t.Parallel()
	// A smaller one, that yaml.v3 refuses before validation does.
	var small strings.Builder
	small.WriteString("store: {url: postgres://x}\nprojects:\n  - &p\n    id: p\n")
	small.WriteString("    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n")
	small.WriteString("    triggers:\n      - &t {name: t, type: x, url: 'http://h/'}\n")
	small.WriteString(strings.Repeat("      - *t\n", 120) + strings.Repeat("  - *p\n", 120))
	_, err := config.Parse("t.yaml", []byte(small.String()), env(nil))
	if want := "t.yaml: the aliases expand to nearly all of the file's values: use fewer or smaller aliases"; err == nil || err.Error() != want {
		t.Fatalf("want the error %q, got %v", want, err)
	}

	var b strings.Builder
	b.WriteString("store: {url: postgres://x}\nprojects:\n  - &p\n    id: p\n")
	b.WriteString("    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n")
	b.WriteString("    triggers:\n      - &t {name: t, type: x, url: 'http://h/', retry_backoff: {initial: 1s, max: 1m},\n")
	b.WriteString("          headers: {A: a, B: b, C: c, D: d, E: e, F: f, G: g, H: h}}\n")
	b.WriteString(strings.Repeat("      - *t\n", 399))
	b.WriteString(strings.Repeat("  - *p\n", 399))
	if b.Len() > 8000 {
		t.Fatalf("the bomb is %d bytes, want under 8 KB", b.Len())
	}
	start := time.Now()
	_, err = config.Parse("t.yaml", []byte(b.String()), env(nil))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "t.yaml: line ") || !strings.Contains(err.Error(), "fewer or smaller aliases") {
		t.Fatalf("want an error naming the file and line and saying to use fewer or smaller aliases, got %v", err)
	}
	// Expanding it all took 5.7 s without the race detector; refusing it
	// takes about 0.2 s, and a few times that with -race on a busy machine.
	if took > 5*time.Second {
		t.Fatalf("refusing the bomb took %s", took)
	}
}

// TestManyAliasesLoad checks that a large real config reusing anchors
// loads: hundreds of triggers sharing headers, backoff and options.
func TestManyAliasesLoad(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("store: {url: postgres://x}\nprojects:\n  - id: p\n")
	b.WriteString("    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n")
	b.WriteString("    databases: {app: {url: 'postgres://a'}}\n    triggers:\n")
	b.WriteString("      - name: t0\n        type: DB_UPDATE\n        url: &u http://hooks.example.com/x\n")
	b.WriteString("        retry_backoff: &b {initial: 2s, max: 1m}\n        options: &o {db: app, col: 'users, orders', columns: 'a, b'}\n")
	b.WriteString("        headers: &h\n")
	for i := range 20 {
		fmt.Fprintf(&b, "          X-Header-%d: value-%d\n", i, i)
	}
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&b, "      - {name: t%d, type: DB_UPDATE, url: *u, retry_backoff: *b, options: *o, headers: *h}\n", i)
	}
	cfg, err := config.Parse("t.yaml", []byte(b.String()), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	tr := cfg.Projects[0].Triggers
	if len(tr) != 1000 || len(tr[999].Headers) != 20 || tr[999].RetryBackoff.Max.Std() != time.Minute || tr[999].Options.DB != "app" {
		t.Fatalf("read %d triggers, the last %+v", len(tr), tr[len(tr)-1])
	}
}

// TestAliasedValueExpandsOnce checks that a value behind an anchor is
// expanded once, however many aliases reach it: $$ stays a literal $.
func TestAliasedValueExpandsOnce(t *testing.T) {
	t.Parallel()
	text := "store: {url: postgres://x}\nprojects:\n  - id: p\n" +
		"    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n    triggers:\n" +
		"      - {name: a, type: x, url: 'http://h/', headers: {X-A: &v \"$${HOME}\"}}\n" +
		"      - {name: b, type: x, url: 'http://h/', headers: {X-A: *v}}\n" +
		"      - {name: c, type: x, url: 'http://h/', headers: {X-A: *v}}\n"
	cfg, err := config.Parse("t.yaml", []byte(text), env(map[string]string{"HOME": "/root"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range cfg.Projects[0].Triggers {
		if got := tr.Headers["X-A"]; got != "${HOME}" {
			t.Errorf("trigger %s: header %q, want ${HOME}", tr.Name, got)
		}
	}
}

// TestErrorsHideSecrets checks that no error quotes a value that can hold
// a secret: secrets, URLs and header values are never shown, and a value
// that came from the environment is shown as the file writes it.
func TestErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	const hidden = "hunter2"
	const proj = "projects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n"
	const head = "store: {url: postgres://x}\n"
	trig := func(keys string) string {
		return head + proj + "    triggers:\n      - {name: t, type: x, url: 'http://h/', " + keys + "}\n"
	}
	fromEnv := map[string]string{"V": hidden, "PORT": hidden}
	cases := []struct{ name, text, want string }{
		{"unclosed ${ in a secret", head + "projects: [{id: p, secrets: [{kid: k, alg: HS256, secret: '" + hidden + "-${oops'}]}]\n", "secret: the ${ at character 9 is not closed"},
		{"unclosed ${ in a url", "store: {url: 'postgres://u:" + hidden + "@h/${DB'}\n" + proj, "store.url: the ${ at character"},
		{"bad reference in a secret", head + "projects: [{id: p, secrets: [{kid: k, alg: HS256, secret: 'x${" + hidden + "!}'}]}]\n", "secret: the ${...} at character 2 does not name a variable"},
		{"bad reference in a header", trig("headers: {X-Key: '${" + hidden + " x}'}"), "headers.X-Key: the ${...} at character 1 does not name a variable"},
		{"wrong tag on a secret", head + "projects: [{id: p, secrets: [{kid: k, alg: HS256, secret: !!int " + hidden + "}]}]\n", "secret: want a string, got a value that is not shown (it can hold a secret)"},
		{"number from the environment", trig("retries: '${V}'"), `retries: want a whole number, got the value of "${V}"`},
		{"duration from the environment", head + proj + "sync_timeout: ${V}\n", `sync_timeout: the value of "${V}" is not a duration`},
		{"listen from the environment", head + proj + "listen: ${PORT}\n", `listen: the value of "${PORT}" is not host:port`},
		{"project id from the environment", head + "projects: [{id: '${V}x y', secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]}]\n", `projects[0].id: the value of "${V}x y" is not a valid project id`},
		{"type from the environment", head + proj + "    triggers: [{name: t, type: 'FILE_${V}', url: 'http://h/'}]\n", `type: the value of "FILE_${V}" is not a file event type`},
		{"ftp url with user info", head + proj + "    triggers: [{name: t, type: x, url: 'ftp://u:" + hidden + "@h/?token=" + hidden + "'}]\n", "url: is not an http or https URL"},
		{"url without a host", head + proj + "    triggers: [{name: t, type: x, url: 'http://u:" + hidden + "@/x'}]\n", "url: has no host"},
		{"url that does not parse", head + proj + "    triggers: [{name: t, type: x, url: 'http://u:" + hidden + "@h:port/'}]\n", "url: does not parse as a URL"},
		{"url from the environment", head + proj + "    triggers: [{name: t, type: x, url: '${V}'}]\n", "url: is not an http or https URL"},
		{"header with no colon", trig("headers: {Authorization Bearer " + hidden + "}"), "headers: a key with a space or : in it has no value"},
		{"header with no space after the colon", trig("headers: {Authorization:" + hidden + "}"), "headers: a key with a space or : in it has no value"},
		{"merge key in databases", head + proj + "    databases: {<<: {url: '" + hidden + "'}}\n", "line 5: projects[0].databases: merge keys (<<) are not supported"},
		{"merge key in storage", head + proj + "    storage:\n      <<: {path: " + hidden + "}\n", "line 6: projects[0].storage: merge keys (<<) are not supported"},
		{"webhook secret", head + proj + "    webhook_secrets: [whsec_" + hidden + "]\n", "webhook_secrets[0]: is not a Standard Webhooks secret"},
		{"webhook secret from the environment", head + proj + "    webhook_secrets: ['${V}']\n", "webhook_secrets[0]: is not a Standard Webhooks secret (it does not start with whsec_)"},
		{"webhook secret of the wrong kind", trig("webhook_secrets: [{a: " + hidden + "}]"), "webhook_secrets[0]: want a single value"},
		{"merge key in a trigger", trig("<<: {headers: {X-Key: " + hidden + "}}"), "projects[0].triggers[0]: merge keys (<<) are not supported: alias a whole value (key: *name) or write the keys out"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("t.yaml", []byte(c.text), env(fromEnv))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v\n%s", c.want, err, c.text)
			}
			if strings.Contains(err.Error(), hidden) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

// TestSyntaxErrors checks that a YAML syntax error names the file and the
// line and says what to check, instead of yaml.v3's bare message.
func TestSyntaxErrors(t *testing.T) {
	t.Parallel()
	const hint = `check the indentation of this line and the lines above it (spaces, not tabs; list items start with "- " at one indent), ` +
		"close every quote, [ and {, and quote values that contain \": \" or start with *, &, !, {, [, %, @ or `"
	head := "store: {url: postgres://x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n"
	cases := []struct{ name, text, want string }{
		{"key out of line", head + "    triggers:\n    - name: t\n      type: x\n     url: http://h/\n", "t.yaml: line 8: YAML syntax: did not find expected key (in the block from line 2): " + hint},
		{"item out of line", head + "    triggers:\n      - name: a\n        type: x\n       - name: b\n", "t.yaml: line 8: YAML syntax: did not find expected '-' indicator (in the block from line 5): " + hint},
		{"key without colon below", head + "    rules:\n      default\n      x: allow\n", "t.yaml: line 7: YAML syntax: mapping values are not allowed in this context: " + hint},
		{"key without colon", "store:\n  url: postgres://x\n  schema\n  max_conns: 3\n", "t.yaml: line 3: YAML syntax: could not find expected ':': " + hint},
		{"colon in a value", head + "    rules: {a: allow}\nlisten: a: b\n", "t.yaml: line 6: YAML syntax: mapping values are not allowed in this context: " + hint},
		{"value starting with @", head + "node_id: @home\n", "t.yaml: line 5: YAML syntax: found character that cannot start any token: " + hint},
		{"tab indent", head + "\tlisten: x\n", "t.yaml: line 5: YAML syntax: found character that cannot start any token: " + hint},
		{"unclosed flow", "store: [\n", "t.yaml: line 1: YAML syntax: did not find expected node content: " + hint},
		{"unclosed quote", head + "node_id: 'a\n", "t.yaml: line 5: YAML syntax: found unexpected end of stream: " + hint},
		{"value starting with *", head + "node_id: *home\n", `t.yaml: line 5: YAML syntax: unknown anchor 'home' referenced: an alias (*name) needs an anchor (&name) on a value above it; quote a value that starts with *`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("t.yaml", []byte(c.text), env(nil))
			if err == nil || err.Error() != c.want {
				t.Fatalf("want the error\n%s\ngot\n%v\nfor\n%s", c.want, err, c.text)
			}
		})
	}
}

// TestTriggerTimeout checks that a trigger's timeout takes a duration like
// every other duration key, and a bare number as milliseconds.
func TestTriggerTimeout(t *testing.T) {
	t.Parallel()
	text := func(timeout string) string {
		return "store: {url: postgres://x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n" +
			"    triggers:\n      - name: t\n        type: x\n        url: http://h/\n        timeout: " + timeout + "\n"
	}
	for timeout, want := range map[string]time.Duration{
		"5s": 5 * time.Second, "1500ms": 1500 * time.Millisecond, "1m30s": 90 * time.Second,
		"2500": 2500 * time.Millisecond, "'2500'": 2500 * time.Millisecond, "${T}": 3 * time.Second, "~": 5 * time.Second,
	} {
		cfg, err := config.Parse("t.yaml", []byte(text(timeout)), env(map[string]string{"T": "3s"}))
		if err != nil {
			t.Errorf("timeout: %s: %v", timeout, err)
			continue
		}
		if got := cfg.Projects[0].Triggers[0].Timeout(); got != want {
			t.Errorf("timeout: %s read as %s, want %s", timeout, got, want)
		}
	}
	for timeout, want := range map[string]string{
		"0":                    "line 9: projects[0].triggers[0].timeout: must be more than 0",
		"0s":                   "timeout: must be more than 0",
		"-5s":                  "timeout: must be more than 0",
		"-1":                   "timeout: must be more than 0",
		"soon":                 `timeout: "soon" is not a duration: write one like 10s, 500ms or 2m, or a whole number of milliseconds`,
		"2.5":                  `timeout: "2.5" has no unit: write it like 10s or 500ms, or a whole number of milliseconds`,
		"99999999999999999999": `timeout: "99999999999999999999" is out of range: write a duration like 5s or 1500ms`,
		"9999999999999999":     `timeout: "9999999999999999" is out of range`,
		"[5]":                  "timeout: want a single value",
	} {
		_, err := config.Parse("t.yaml", []byte(text(timeout)), env(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("timeout: %s: want an error containing %q, got %v", timeout, want, err)
		}
	}
}

// TestShortHS256Secret checks that an HS256 secret shorter than 32 bytes,
// which can be guessed offline from one signed token, is refused.
func TestShortHS256Secret(t *testing.T) {
	t.Parallel()
	text := func(secret string) string {
		return "store: {url: postgres://x}\nprojects:\n  - id: p\n    secrets:\n      - {kid: k, alg: RS256, private_key_file: k.pem}\n" +
			"      - {kid: h, alg: HS256, secret: '" + secret + "'}\n"
	}
	for _, secret := range []string{"s", strings.Repeat("x", 31), "${SHORT}"} {
		_, err := config.Parse("t.yaml", []byte(text(secret)), env(map[string]string{"SHORT": "hunter2"}))
		want := "line 6: projects[0].secrets[1].secret: is too short: an HS256 secret needs at least 32 random bytes (generate one with openssl rand -hex 32)"
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("secret %q: want an error containing %q, got %v", secret, want, err)
		}
	}
	for _, secret := range []string{strings.Repeat("x", 32), strings.Repeat("é", 16), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"} {
		if _, err := config.Parse("t.yaml", []byte(text(secret)), env(nil)); err != nil {
			t.Errorf("secret of %d bytes: %v", len(secret), err)
		}
	}
}

// TestHTTP checks the API server's limits: their defaults, write_timeout
// following sync_timeout, and the values refused.
func TestHTTP(t *testing.T) {
	t.Parallel()
	base := "store: {url: postgres://x}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]}]\n"
	cfg, err := config.Parse("t.yaml", []byte(base), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.HTTP{ReadHeaderTimeout: config.Duration(10 * time.Second), ReadTimeout: config.Duration(30 * time.Second),
		WriteTimeout: config.Duration(30 * time.Second), IdleTimeout: config.Duration(time.Minute), MaxHeaderBytes: 65536}
	if cfg.HTTP != want {
		t.Fatalf("defaults %+v, want %+v", cfg.HTTP, want)
	}
	for text, write := range map[string]time.Duration{
		"sync_timeout: 5s\n":                               30 * time.Second,
		"sync_timeout: 20s\n":                              40 * time.Second,
		"sync_timeout: 20s\nhttp: {write_timeout: 21s}\n":  21 * time.Second,
		"sync_timeout: 20s\nhttp: {write_timeout: ~}\n":    40 * time.Second,
		"sync_timeout: 1m\nhttp:\n  read_timeout: 5s\n":    80 * time.Second,
		"http: {write_timeout: 11s, idle_timeout: 1s}\n":   11 * time.Second,
		"http: {write_timeout: 2m, max_header_bytes: 1}\n": 2 * time.Minute,
	} {
		cfg, err := config.Parse("t.yaml", []byte(base+text), env(nil))
		if err != nil {
			t.Errorf("%s: %v", text, err)
		} else if cfg.HTTP.WriteTimeout.Std() != write {
			t.Errorf("%s: write_timeout %s, want %s", text, cfg.HTTP.WriteTimeout.Std(), write)
		}
	}
	for text, header := range map[string]time.Duration{
		"http: {read_timeout: 5s}\n":                          5 * time.Second,
		"http: {read_timeout: 5s, read_header_timeout: 2s}\n": 2 * time.Second,
		"http: {read_timeout: 1m}\n":                          10 * time.Second,
	} {
		cfg, err := config.Parse("t.yaml", []byte(base+text), env(nil))
		if err != nil {
			t.Errorf("%s: %v", text, err)
		} else if cfg.HTTP.ReadHeaderTimeout.Std() != header {
			t.Errorf("%s: read_header_timeout %s, want %s", text, cfg.HTTP.ReadHeaderTimeout.Std(), header)
		}
	}
	for text, want := range map[string]string{
		"http: {write_timeout: 10s}\n":                   "line 3: http.write_timeout: must be more than sync_timeout (10s): a synchronous request waits up to sync_timeout before it is answered (leave write_timeout out for the larger of 30s and sync_timeout + 20s)",
		"sync_timeout: 1m\nhttp: {write_timeout: 30s}\n": "http.write_timeout: must be more than sync_timeout (1m0s)",
		"http: {write_timeout: 0s}\n":                    "http.write_timeout: must be more than 0",
		"http: {read_timeout: 0s}\n":                     "http.read_timeout: must be more than 0",
		"http: {read_header_timeout: -1s}\n":             "http.read_header_timeout: must be more than 0",
		"http: {idle_timeout: 0s}\n":                     "http.idle_timeout: must be more than 0",
		"http: {read_header_timeout: 1m}\n":              "http.read_header_timeout: must be at most read_timeout (30s), which bounds the whole request",
		"http: {max_header_bytes: 0}\n":                  "http.max_header_bytes: must be more than 0",
		"http: {max_header_bytes: 64KiB}\n":              `http.max_header_bytes: want a whole number, got "64KiB"`,
		"http: {read_timeout: 30}\n":                     `http.read_timeout: "30" has no unit`,
		"http: {idle: 1s}\n":                             `http: unknown key "idle" (known keys: read_header_timeout, read_timeout, write_timeout, idle_timeout, max_header_bytes)`,
	} {
		_, err := config.Parse("t.yaml", []byte(base+text), env(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error containing %q, got %v", text, want, err)
		}
	}
}

// TestReferenceConfigShowsEveryKey checks that testdata/triggerd.yaml, the
// README's reference config, writes every key the config takes.
func TestReferenceConfigShowsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "triggerd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var keys func(reflect.Type, string)
	keys = func(typ reflect.Type, path string) {
		switch typ.Kind() {
		case reflect.Slice, reflect.Map:
			keys(typ.Elem(), path+"[]")
		case reflect.Pointer: // an optional section
			keys(typ.Elem(), path)
		case reflect.Struct:
			for i := range typ.NumField() {
				tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
				if !regexp.MustCompile(`(^|[\s{,])` + regexp.QuoteMeta(tag) + `:(\s|$)`).Match(data) {
					t.Errorf("the reference config does not show %s.%s", path, tag)
				}
				keys(typ.Field(i).Type, path+"."+tag)
			}
		}
	}
	keys(reflect.TypeFor[config.Config](), "")
}

// TestErrorsInAStableOrder checks that a file with several bad values in
// maps gives the same error every time, whatever the order of the maps.
func TestErrorsInAStableOrder(t *testing.T) {
	t.Parallel()
	const proj = "store: {url: x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n"
	for text, want := range map[string]string{
		proj + "    rules: {c: never, a: maybe, b: perhaps}\n":                                                          `projects[0].rules.a: "maybe" is not a rule`,
		proj + "    triggers: [{name: t, type: x, url: 'http://h/', headers: {'c d': y, Content-Type: z, 'a b': x}}]\n": `headers.Content-Type: triggerd sets Content-Type itself`,
		proj + "lease: 0s\nsync_timeout: 0s\nshutdown_grace: 0s\n":                                                      "sync_timeout: must be more than 0",
	} {
		for range 20 {
			_, err := config.Parse("t.yaml", []byte(text), env(nil))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("want an error containing %q, got %v\n%s", want, err, text)
			}
		}
	}
}

func TestRetention(t *testing.T) {
	t.Parallel()
	const h = time.Hour
	base := "store: {url: postgres://x}\nprojects:\n  - {id: p, secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]}\n" +
		"  - {id: q, secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}], retention: {processed: 0, failed: 1h}}\n"
	r := func(p, f, c time.Duration) config.Retention {
		return config.Retention{Processed: config.Duration(p), Failed: config.Duration(f), Cancelled: config.Duration(c)}
	}
	for text, want := range map[string][3]config.Retention{
		// top level, project p (inherits), project q (its own, the rest inherited)
		"":                                       {r(168*h, 720*h, 168*h), r(168*h, 720*h, 168*h), r(0, h, 168*h)},
		"retention: {cancelled: 2h}\n":           {r(168*h, 720*h, 2*h), r(168*h, 720*h, 2*h), r(0, h, 2*h)},
		"retention: {processed: 0, failed: 0}\n": {r(0, 0, 168*h), r(0, 0, 168*h), r(0, h, 168*h)},
		"retention:\n":                           {r(168*h, 720*h, 168*h), r(168*h, 720*h, 168*h), r(0, h, 168*h)},
	} {
		cfg, err := config.Parse("t.yaml", []byte(base+text), env(nil))
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if got := [3]config.Retention{cfg.Retention, cfg.Projects[0].Retention, cfg.Projects[1].Retention}; got != want {
			t.Errorf("%q: retention %+v, want %+v", text, got, want)
		}
	}
	for text, msg := range map[string]string{
		"retention: {failed: -1h}\n":   `t.yaml: line 5: retention.failed: must be 0 (keep forever) or more, like 168h for 7 days`,
		"retention: {processed: 7d}\n": `retention.processed: "7d" has days (d), which are no unit here: write hours, like 168h for 7 days`,
		"retention: {kept: 1h}\n":      `retention: unknown key "kept" (known keys: processed, failed, cancelled)`,
	} {
		if _, err := config.Parse("t.yaml", []byte(base+text), env(nil)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: error %v, want %s", text, err, msg)
		}
	}
	bad := strings.Replace(base, "failed: 1h", "failed: -1s", 1)
	if _, err := config.Parse("t.yaml", []byte(bad), env(nil)); err == nil || !strings.Contains(err.Error(), "projects[1].retention.failed: must be 0") {
		t.Errorf("a project's negative window: error %v", err)
	}
}
