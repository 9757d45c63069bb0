package config_test

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/triggerd/triggerd/config"
)

// The secrets of FuzzParse carry markers: an error showing a marker shows
// a secret. envMarker is in every value of fuzzEnv; fileMarker is in the
// secrets, URL passwords and header values of the seeds.
const (
	envMarker  = "EnvZq8x"
	fileMarker = "FileZq8x"
)

// fuzzEnv is FuzzParse's environment: the reference config's variables,
// and any variable whose name starts with V.
func fuzzEnv(name string) (string, bool) {
	switch {
	case name == "TRIGGERD_STORE_URL":
		return "postgres://triggerd:" + envMarker + "@localhost:5432/events?sslpassword=" + envMarker, true
	case name == "APP_DATABASE_URL":
		return "postgres://app:" + envMarker + "@localhost:5432/app", true
	case name == "DEMO_SECRET", strings.HasPrefix(name, "TRIGGERD_ADMIN_"):
		return envMarker + "-0123456789abcdef0123456789abcdef", true
	case strings.HasSuffix(name, "WEBHOOK_SECRET"):
		return "whsec_" + envMarker + strings.Repeat("A", 25), true // 24 bytes
	case strings.HasPrefix(name, "V"):
		return envMarker + name, true
	}
	return "", false
}

// fuzzSeeds are configs that reach each of Parse's checks.
func fuzzSeeds(t testing.TB) []string {
	ref, err := os.ReadFile(filepath.Join("..", "testdata", "triggerd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const secret = fileMarker + "-0123456789abcdef0123456789abcdef"
	head := "store: {url: 'postgres://u:" + fileMarker + "@db/events'}\nprojects:\n  - id: p\n" +
		"    secrets: [{kid: k, alg: HS256, secret: '" + secret + "'}]\n"
	trig := head + "    triggers:\n      - name: t\n        type: x\n        url: http://h/\n"
	var bomb strings.Builder
	bomb.WriteString("store: {url: x}\nprojects:\n  - &p\n    id: p\n    secrets: [{kid: k, alg: HS256, secret: " + secret + "}]\n")
	bomb.WriteString("    triggers:\n      - &t {name: t, type: x, url: 'http://h/', headers: {A: a, B: b, C: c, D: d}}\n")
	small := bomb.String() + strings.Repeat("      - *t\n", 120) + strings.Repeat("  - *p\n", 120)
	bomb.WriteString(strings.Repeat("      - *t\n", 399) + strings.Repeat("  - *p\n", 399))
	return []string{
		string(ref),
		bomb.String(),
		small,
		// Merge keys, which the walker refuses.
		head + "    databases: {<<: {url: 'postgres://u:" + fileMarker + "@db/app'}}\n",
		trig + "        <<: {headers: {X-Key: " + fileMarker + "}}\n",
		// Keys that are not names.
		head + "    rules: {x: &k deny, *k : allow, ~: allow}\n",
		head + "    rules: {? [a]: allow}\n",
		// Nested anchors, and $$ behind one.
		head + "    triggers:\n      - &t {name: a, type: x, url: &u 'http://h/', headers: &h {X-A: &v \"$${HOME}\", X-B: *v}}\n" +
			"      - {name: b, type: x, url: *u, headers: *h, retry_backoff: &b {initial: 1s, max: 1m}}\n      - {name: c, type: x, url: *u, retry_backoff: *b}\n",
		// ${ errors and values from the environment.
		head + "    triggers: [{name: t, type: x, url: 'http://h/', headers: {X-Key: '" + fileMarker + "${oops'}}]\n",
		head + "    triggers: [{name: t, type: x, url: 'http://h/', headers: {X-Key: '${" + fileMarker + "}'}}]\n",
		"store: {url: '${TRIGGERD_STORE_URL}'}\nlisten: ${V1}\nprojects: [{id: '${V2}', secrets: [{kid: '${V3}', alg: HS256, secret: '${DEMO_SECRET}'}]}]\n",
		trig + "        retries: ${V4}\n        timeout: ${V5:-5s}\n",
		"store: {url: '${MISSING}'}\n",
		// Syntax errors.
		trig + "       retries: 3\n",
		trig + "      - name: u\n     type: x\n",
		trig + "\tretries: 3\n",
		trig + "        headers: {X-Key: *nothing}\n",
		trig + "        headers: {X-Key: '" + fileMarker + "\n",
		"store: [\n",
		"",
		"a: 1\n---\nb: 2\n",
		// Trigger timeouts.
		trig + "        timeout: 5s\n",
		trig + "        timeout: 2500\n",
		trig + "        timeout: 0\n",
		trig + "        timeout: -1s\n",
		trig + "        timeout: soon\n",
		trig + "        timeout: 99999999999999999999\n",
		// Secrets.
		"store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: " + fileMarker + "}]}]\n",
		"store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: RS256, private_key_file: k.pem}, {kid: h, alg: HS256, secret: '" + secret + "'}]}]\n",
		"store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: !!int " + fileMarker + "}]}]\n",
		head + "    webhook_secrets: [whsec_" + fileMarker + "]\n",
		head + "    webhook_secrets: ['whsec_" + fileMarker + strings.Repeat("A", 25) + "', 'whsec_" + fileMarker + strings.Repeat("A", 25) + "']\n",
		trig + "        webhook_secrets: [" + fileMarker + ", 1]\n        format: binary\n",
		trig + "        format: " + fileMarker + "\n",
		// URLs and headers.
		head + "    triggers: [{name: t, type: x, url: 'ftp://u:" + fileMarker + "@h/?token=" + fileMarker + "'}]\n",
		head + "    triggers: [{name: t, type: x, url: 'http://u:" + fileMarker + "@h:port/'}]\n",
		head + "    triggers: [{name: t, type: x, url: 'http://h/', headers: {Authorization Bearer " + fileMarker + "}}]\n",
		head + "    databases: {app: {url: 'postgres://u:" + fileMarker + "@db/app'}}\n    triggers: [{name: t, type: DB_INSERT, url: 'http://h/', options: {col: users}}]\n",
		// The http keys.
		head + "sync_timeout: 20s\nhttp: {read_header_timeout: 5s, read_timeout: 10s, write_timeout: 45s, idle_timeout: 1m, max_header_bytes: 8192}\n",
		head + "sync_timeout: 20s\nhttp: {write_timeout: 20s}\n",
		head + "http: {read_timeout: 0s, max_header_bytes: 0}\n",
		head + "http: {read_header_timeout: 1m}\n",
		// The admin section's secrets.
		head + "admin: {user: ops, password: '" + fileMarker + "', secret: '" + secret + "'}\n",
		head + "admin: {user: ops, password: '" + secret + "', secret: '" + secret + "'}\n",
		head + "admin: {user: ops, password_hash: '$2a$" + fileMarker + "', secret: '" + fileMarker + "'}\n",
		head + "admin: {user: ops, password: [" + fileMarker + "], token_ttl: 1m}\n",
		// Several bad values in maps: the error must not depend on map order.
		head + "    rules: {a: maybe, b: perhaps, c: never}\n",
		trig + "        headers: {'a b': x, 'c d': y, Content-Type: z}\n",
		"store: {url: x}\nprojects: [{id: p, secrets: [{kid: k, alg: HS256, secret: " + secret + "}]}]\nsync_timeout: 0s\nlease: 0s\nshutdown_grace: 0s\n",
	}
}

// FuzzParse checks that Parse does not panic, returns in bounded time,
// returns configs that keep the promises of validation, gives the same
// answer twice, and never shows a secret in an error.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		cfg, err := config.Parse("fuzz.yaml", data, fuzzEnv)
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("Parse took %s on %d bytes", took, len(data))
		}
		if _, again := config.Parse("fuzz.yaml", data, fuzzEnv); (err == nil) != (again == nil) || err != nil && err.Error() != again.Error() {
			t.Fatalf("Parse answered %v, then %v", err, again)
		}
		if err != nil {
			checkNoSecret(t, data, err)
			return
		}
		checkPromises(t, cfg)
	})
}

// checkNoSecret fails if err shows a marked value of the environment, or
// a marked secret of the file (a secret, url or header value) that the
// file writes nowhere else.
func checkNoSecret(t *testing.T, data []byte, err error) {
	msg := err.Error()
	if strings.Contains(msg, envMarker) && !bytes.Contains(data, []byte(envMarker)) {
		t.Fatalf("the error shows a value of the environment: %s", msg)
	}
	if !strings.Contains(msg, fileMarker) {
		return
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		// yaml.v3's syntax errors quote nothing but anchor names.
		if !strings.Contains(msg, "anchor") {
			t.Fatalf("a syntax error shows a secret: %s", msg)
		}
		return
	}
	if !markedOnlyInSecrets(&doc, false, make(map[*yaml.Node]int)) {
		return // the file writes the marker where it may be shown
	}
	t.Fatalf("the error shows a secret: %s", msg)
}

// markedName matches a ${VAR} whose name holds fileMarker: errors name
// variables, which are not secrets.
var markedName = regexp.MustCompile(`\$\{[A-Za-z0-9_]*` + fileMarker)

// markedOnlyInSecrets reports whether fileMarker appears in n only in
// values that can hold a secret, outside variable names: those of secret,
// url, webhook_secrets, password and password_hash keys, and of the keys
// of a headers mapping.
// inSecret says that n is such a value. Each node is walked at most once
// each way, however many aliases reach it.
func markedOnlyInSecrets(n *yaml.Node, inSecret bool, seen map[*yaml.Node]int) bool {
	way := 1
	if inSecret {
		way = 2
	}
	if seen[n]&way != 0 {
		return true
	}
	seen[n] |= way
	if strings.Contains(n.Anchor+n.Tag, fileMarker) || n.Kind == yaml.ScalarNode &&
		(!inSecret && strings.Contains(n.Value, fileMarker) || markedName.MatchString(n.Value)) {
		return false
	}
	switch n.Kind {
	case yaml.AliasNode:
		return n.Alias == nil || markedOnlyInSecrets(n.Alias, inSecret, seen)
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			secret := inSecret || k.Value == "secret" || k.Value == "url" || k.Value == "headers" || k.Value == "webhook_secrets" ||
				k.Value == "password" || k.Value == "password_hash"
			if !markedOnlyInSecrets(k, false, seen) || !markedOnlyInSecrets(v, secret, seen) {
				return false
			}
		}
	default:
		for _, c := range n.Content {
			if !markedOnlyInSecrets(c, inSecret, seen) {
				return false
			}
		}
	}
	return true
}

// checkPromises fails if a config that loaded breaks a rule validation
// enforces.
func checkPromises(t *testing.T, c *config.Config) {
	h := c.HTTP
	switch {
	case c.SyncTimeout <= 0 || c.ShutdownGrace <= 0 || c.Lease <= 0 || c.BodyLimit <= 0:
		t.Fatalf("a limit is not positive: %+v", c)
	case h.ReadHeaderTimeout <= 0 || h.ReadTimeout <= 0 || h.IdleTimeout <= 0 || h.MaxHeaderBytes <= 0 || h.ReadHeaderTimeout > h.ReadTimeout:
		t.Fatalf("http limits %+v", h)
	case h.WriteTimeout <= c.SyncTimeout:
		t.Fatalf("write_timeout %s is not above sync_timeout %s", h.WriteTimeout.Std(), c.SyncTimeout.Std())
	case strings.TrimSpace(c.Store.URL) == "" || len(c.Projects) == 0:
		t.Fatalf("no store or no project: %+v", c)
	}
	for _, p := range c.Projects {
		if len(p.Secrets) == 0 || p.Secrets[0].Alg == "RS256" && p.Secrets[0].PrivateKeyFile == "" {
			t.Fatalf("project %s cannot sign: %+v", p.ID, p.Secrets)
		}
		for _, s := range p.Secrets {
			if s.Alg != "HS256" && s.Alg != "RS256" || s.Alg == "HS256" && len(s.Secret) < 32 {
				t.Fatalf("project %s: secret %s is %s of %d bytes", p.ID, s.KID, s.Alg, len(s.Secret))
			}
		}
		checkWebhookSecrets(t, p.ID, p.WebhookSecrets)
		for _, tr := range p.Triggers {
			checkWebhookSecrets(t, p.ID+"/"+tr.Name, tr.WebhookSecrets)
			u, err := url.Parse(tr.URL)
			switch {
			case tr.Format != config.FormatStructured && tr.Format != config.FormatBinary && tr.Format != config.FormatEnvelope:
				t.Fatalf("trigger %s: format %q", tr.Name, tr.Format)
			case err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "":
				t.Fatalf("trigger %s: the URL is not http(s) with a host", tr.Name)
			case tr.Timeout() <= 0 || tr.Retries < 0 || tr.Retries > 100 || tr.Concurrency < 1:
				t.Fatalf("trigger %s: timeout %s, retries %d, concurrency %d", tr.Name, tr.Timeout(), tr.Retries, tr.Concurrency)
			case tr.RetryBackoff.Initial <= 0 || tr.RetryBackoff.Max < tr.RetryBackoff.Initial:
				t.Fatalf("trigger %s: backoff %+v", tr.Name, tr.RetryBackoff)
			}
		}
	}
}

// checkWebhookSecrets fails unless every secret of a list yields a key.
func checkWebhookSecrets(t *testing.T, owner string, secrets []string) {
	for i, s := range secrets {
		if _, err := config.WebhookKey(s); err != nil {
			t.Fatalf("%s: webhook secret %d loaded, but %v", owner, i, err)
		}
	}
}
