package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/bmatcuk/doublestar/v4"
	"golang.org/x/crypto/bcrypt"
)

var (
	schemaName  = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	projectID   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	triggerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	aliasName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	slotName    = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	headerName  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	nodeID      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// validate checks a decoded config; errors carry the line of the key.
func (w *walker) validate(c *Config) error {
	if !nodeID.MatchString(c.NodeID) {
		return w.fail("node_id", "%s is not a valid node id: use at most 128 letters, digits, ., _ and - (it names this node in the store, in CloudEvents' source and in X-SC-Token; when node_id is not set it is the hostname)", w.quote("node_id", c.NodeID))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return w.fail("listen", "%s is not host:port (for example 127.0.0.1:4122)", w.quote("listen", c.Listen))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return w.fail("metrics_listen", "%s is not host:port (for example 127.0.0.1:9122); leave it out to serve /metrics on listen's address", w.quote("metrics_listen", c.MetricsListen))
		}
		if c.MetricsListen == c.Listen {
			return w.fail("metrics_listen", "%s is listen's address too; give it another port, or leave it out to serve /metrics on listen's address", w.quote("metrics_listen", c.MetricsListen))
		}
	}
	if err := w.positive(keyDuration{"sync_timeout", c.SyncTimeout}, keyDuration{"shutdown_grace", c.ShutdownGrace}, keyDuration{"lease", c.Lease}); err != nil {
		return err
	}
	if c.BodyLimit <= 0 {
		return w.fail("body_limit", "must be more than 0 bytes")
	}
	if err := w.validateHTTP(c); err != nil {
		return err
	}
	if strings.TrimSpace(c.Store.URL) == "" {
		return w.fail("store.url", "is required: the Postgres database for event_logs, e.g. url: ${TRIGGERD_STORE_URL}")
	}
	if !schemaName.MatchString(c.Store.Schema) || len(c.Store.Schema) > 63 {
		return w.fail("store.schema", "%s is not a valid schema name: use lowercase letters, digits and _ (at most 63)", w.quote("store.schema", c.Store.Schema))
	}
	if c.Store.MaxConns < 2 {
		return w.fail("store.max_conns", "must be 2 or more")
	}
	if err := w.validateRetention("retention", c.Retention); err != nil {
		return err
	}
	if len(c.Projects) == 0 {
		return w.fail("projects", "at least one project is required")
	}
	ids := make(map[string]bool)
	for i := range c.Projects {
		p := &c.Projects[i]
		path := fmt.Sprintf("projects[%d]", i)
		if !projectID.MatchString(p.ID) {
			return w.fail(path+".id", "%s is not a valid project id: use letters, digits, _ and - (it appears in URLs)", w.quote(path+".id", p.ID))
		}
		if ids[p.ID] {
			return w.fail(path+".id", "project %s is defined twice", w.quote(path+".id", p.ID))
		}
		ids[p.ID] = true
		if err := w.validateSecrets(p, path); err != nil {
			return err
		}
		if err := w.validateWebhookSecrets(path+".webhook_secrets", p.WebhookSecrets); err != nil {
			return err
		}
		for _, typ := range slices.Sorted(maps.Keys(p.Rules)) {
			if r := p.Rules[typ]; r != RuleAllow && r != RuleDeny && r != RuleAuthenticated {
				return w.fail(path+".rules."+typ, "%s is not a rule: use allow, deny or authenticated", w.quote(path+".rules."+typ, string(r)))
			}
		}
		if err := w.validateDatabases(p, path); err != nil {
			return err
		}
		if err := w.validateStorage(p, path); err != nil {
			return err
		}
		if err := w.validateTriggers(p, path); err != nil {
			return err
		}
		if err := w.validateRetention(path+".retention", p.Retention); err != nil {
			return err
		}
	}
	if c.Admin != nil {
		return w.validateAdmin(c)
	}
	return nil
}

// The limits of the admin section.
const (
	minAdminPassword = 12
	// maxAdminPassword is as much of a password as bcrypt reads.
	maxAdminPassword = 72
	maxAdminTokenTTL = 24 * time.Hour
	maxSessionTTL    = 7 * 24 * time.Hour
)

var adminUser = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// validateAdmin checks the admin section, without showing its secrets.
func (w *walker) validateAdmin(c *Config) error {
	a := c.Admin
	switch {
	case !adminUser.MatchString(a.User):
		return w.fail("admin.user", "%s is not a valid user name: use at most 64 letters, digits, _, ., @ and -", w.quote("admin.user", a.User))
	case a.Password == "" && a.PasswordHash == "":
		return w.fail("admin.password", "is required, or password_hash: the password to log in with, as in password: ${TRIGGERD_ADMIN_PASSWORD}, or its bcrypt hash")
	case a.Password != "" && a.PasswordHash != "":
		return w.fail("admin.password_hash", "give password or password_hash, not both")
	case a.Password != "" && len(a.Password) < minAdminPassword:
		return w.fail("admin.password", "is too short: use at least %d characters (generate one with openssl rand -base64 18)", minAdminPassword)
	case len(a.Password) > maxAdminPassword:
		return w.fail("admin.password", "is longer than %d bytes, the most bcrypt reads: use a shorter one", maxAdminPassword)
	}
	if a.PasswordHash != "" {
		if _, err := bcrypt.Cost([]byte(a.PasswordHash)); err != nil {
			return w.fail("admin.password_hash", "is not a bcrypt hash ($2a$, $2b$ or $2y$, the cost, and 53 more characters): make one with htpasswd -nbBC 12 admin 'PASSWORD' | cut -d: -f2")
		}
	}
	switch {
	case a.Secret == "":
		return w.fail("admin.secret", "is required: it signs admin tokens (at least %d random bytes: openssl rand -hex 32)", minHS256Secret)
	case len(a.Secret) < minHS256Secret:
		return w.fail("admin.secret", "is too short: it needs at least %d random bytes (generate one with openssl rand -hex 32)", minHS256Secret)
	}
	for i, p := range c.Projects {
		for j, s := range p.Secrets {
			if s.Alg == "HS256" && s.Secret == a.Secret {
				return w.fail("admin.secret", "is also the secret of projects[%d].secrets[%d] (kid %s): give the admin API a secret of its own, or that project's tokens could be made to pass for admin tokens", i, j, s.KID)
			}
		}
	}
	switch {
	case a.TokenTTL <= 0:
		return w.fail("admin.token_ttl", "must be more than 0")
	case a.TokenTTL.Std() > maxAdminTokenTTL:
		return w.fail("admin.token_ttl", "must be at most %s: admin tokens are short-lived; log in again for a new one", maxAdminTokenTTL)
	case a.SessionTTL <= 0:
		return w.fail("admin.session_ttl", "must be more than 0")
	case a.SessionTTL.Std() > maxSessionTTL:
		return w.fail("admin.session_ttl", "must be at most %s: log in to Mission Control again for a new session", maxSessionTTL)
	}
	return nil
}

// minHS256Secret is the shortest HS256 secret accepted, in bytes: a key
// as long as the hash (RFC 7518, 3.2). A shorter one can be guessed
// offline from a single signed token.
const minHS256Secret = 32

// keyDuration is a duration and its key path.
type keyDuration struct {
	key string
	d   Duration
}

// positive checks, in order, that durations are more than 0.
func (w *walker) positive(ds ...keyDuration) error {
	for _, d := range ds {
		if d.d <= 0 {
			return w.fail(d.key, "must be more than 0")
		}
	}
	return nil
}

// validateRetention checks the retention at path.
func (w *walker) validateRetention(path string, r Retention) error {
	for _, d := range []keyDuration{{path + ".processed", r.Processed}, {path + ".failed", r.Failed}, {path + ".cancelled", r.Cancelled}} {
		if d.d < 0 {
			return w.fail(d.key, "must be 0 (keep forever) or more, like 168h for 7 days")
		}
	}
	return nil
}

// validateHTTP checks the API server's limits.
func (w *walker) validateHTTP(c *Config) error {
	h := c.HTTP
	if err := w.positive(keyDuration{"http.read_timeout", h.ReadTimeout}, keyDuration{"http.read_header_timeout", h.ReadHeaderTimeout},
		keyDuration{"http.write_timeout", h.WriteTimeout}, keyDuration{"http.idle_timeout", h.IdleTimeout}); err != nil {
		return err
	}
	switch {
	case h.ReadHeaderTimeout > h.ReadTimeout:
		return w.fail("http.read_header_timeout", "must be at most read_timeout (%s), which bounds the whole request", h.ReadTimeout.Std())
	case h.WriteTimeout <= c.SyncTimeout:
		return w.fail("http.write_timeout", "must be more than sync_timeout (%s): a synchronous request waits up to sync_timeout before it is answered "+
			"(leave write_timeout out for the larger of 30s and sync_timeout + 20s)", c.SyncTimeout.Std())
	case h.MaxHeaderBytes <= 0:
		return w.fail("http.max_header_bytes", "must be more than 0 bytes")
	}
	return nil
}

func (w *walker) validateSecrets(p *Project, path string) error {
	if len(p.Secrets) == 0 {
		return w.fail(path+".secrets", "at least one secret is required: the first signs the X-SC-Token of every delivery")
	}
	kids := make(map[string]bool)
	for j, s := range p.Secrets {
		sp := fmt.Sprintf("%s.secrets[%d]", path, j)
		switch {
		case s.KID == "":
			return w.fail(sp+".kid", "is required: it names the key in token headers")
		case kids[s.KID]:
			return w.fail(sp+".kid", "%s is used twice in this project", w.quote(sp+".kid", s.KID))
		}
		kids[s.KID] = true
		switch s.Alg {
		case "HS256":
			if s.Secret == "" {
				return w.fail(sp+".secret", "is required for HS256 (a long random string)")
			}
			if len(s.Secret) < minHS256Secret {
				return w.fail(sp+".secret", "is too short: an HS256 secret needs at least %d random bytes (generate one with openssl rand -hex 32)", minHS256Secret)
			}
			if s.PrivateKeyFile != "" || s.PublicKeyFile != "" {
				return w.fail(sp, "an HS256 secret takes secret, not key files")
			}
		case "RS256":
			if s.Secret != "" {
				return w.fail(sp+".secret", "an RS256 secret takes private_key_file and/or public_key_file, not secret")
			}
			if s.PrivateKeyFile == "" && s.PublicKeyFile == "" {
				return w.fail(sp, "an RS256 secret needs private_key_file (to sign) or public_key_file (to verify)")
			}
			if j == 0 && s.PrivateKeyFile == "" {
				return w.fail(sp+".private_key_file", "is required on the first secret, which signs X-SC-Token")
			}
		default:
			return w.fail(sp+".alg", "%s is not supported: use HS256 or RS256", w.quote(sp+".alg", s.Alg))
		}
	}
	return nil
}

// validateWebhookSecrets checks a list of Standard Webhooks secrets at
// path, without showing them.
func (w *walker) validateWebhookSecrets(path string, secrets []string) error {
	for i, s := range secrets {
		sp := fmt.Sprintf("%s[%d]", path, i)
		if _, err := WebhookKey(s); err != nil {
			return w.fail(sp, "is not a Standard Webhooks secret (%v): write %s and the base64 of %d to %d random bytes; make one with: echo %s$(openssl rand -base64 32)",
				err, webhookSecretPrefix, minWebhookKey, maxWebhookKey, webhookSecretPrefix)
		}
		if j := slices.Index(secrets[:i], s); j >= 0 {
			return w.fail(sp, "is the same secret as %s[%d]: list each secret once (a rotation lists the new secret and the old one)", path, j)
		}
	}
	return nil
}

func (w *walker) validateTriggers(p *Project, path string) error {
	names := make(map[string]bool)
	for j := range p.Triggers {
		t := &p.Triggers[j]
		tp := fmt.Sprintf("%s.triggers[%d]", path, j)
		if triggerName.MatchString(t.Name) && names[t.Name] {
			return w.fail(tp+".name", "trigger %s is defined twice in this project", w.quote(tp+".name", t.Name))
		}
		names[t.Name] = true
		if err := w.validateTrigger(p, t, tp); err != nil {
			return err
		}
	}
	return nil
}

// validateTrigger checks one trigger of project p, whose keys are under
// tp (empty for a trigger on its own, as the admin API takes it), and
// fills in the database or storage directory its options leave out when
// the project has only one.
func (w *walker) validateTrigger(p *Project, t *Trigger, tp string) error {
	key := func(k string) string {
		if tp == "" {
			return k
		}
		return tp + "." + k
	}
	switch {
	case !triggerName.MatchString(t.Name):
		return w.fail(key("name"), "%s is not a valid trigger name: use letters, digits, _, . and -", w.quote(key("name"), t.Name))
	case strings.TrimSpace(t.Type) == "":
		return w.fail(key("type"), "is required: the event type this trigger handles")
	case strings.IndexFunc(t.Type, unicode.IsControl) >= 0:
		return w.fail(key("type"), "%s has a control character: an event type is printable text", w.quote(key("type"), t.Type))
	}
	if err := w.validateOptions(p, t, key); err != nil {
		return err
	}
	// The URL is not shown: its user info, path or query can hold a secret.
	u, err := url.Parse(t.URL)
	switch {
	case err != nil:
		return w.fail(key("url"), "does not parse as a URL: look for spaces, a %% not followed by two hex digits, or a port that is not a number")
	case u.Scheme != "http" && u.Scheme != "https":
		return w.fail(key("url"), "is not an http or https URL: write http://host/path or https://host/path")
	case u.Hostname() == "":
		return w.fail(key("url"), "has no host: write http://host/path or https://host/path")
	}
	switch {
	case t.Retries < 0 || t.Retries > 100:
		return w.fail(key("retries"), "must be 0 to 100, got %d", t.Retries)
	case t.AttemptTimeout <= 0:
		return w.fail(key("timeout"), "must be more than 0")
	case t.RetryBackoff.Initial <= 0:
		return w.fail(key("retry_backoff.initial"), "must be more than 0")
	case t.RetryBackoff.Max < t.RetryBackoff.Initial:
		return w.fail(key("retry_backoff.max"), "must be at least initial (%s)", t.RetryBackoff.Initial.Std())
	case t.Concurrency < 1:
		return w.fail(key("concurrency"), "must be 1 or more")
	case t.Format != FormatStructured && t.Format != FormatBinary && t.Format != FormatEnvelope:
		return w.fail(key("format"), "%s is not a delivery format: use structured (the default: a CloudEvent as application/cloudevents+json), "+
			"binary (the data as the body, the other attributes in ce- headers) or envelope (the CloudEvent as application/json, as sent before)", w.quote(key("format"), string(t.Format)))
	}
	if err := w.validateWebhookSecrets(key("webhook_secrets"), t.WebhookSecrets); err != nil {
		return err
	}
	for _, h := range slices.Sorted(maps.Keys(t.Headers)) {
		switch {
		case !headerName.MatchString(h):
			return w.fail(key("headers."+h), "%q is not a valid header name", h)
		case slices.ContainsFunc(reservedHeaders, func(r string) bool { return strings.EqualFold(h, r) }):
			return w.fail(key("headers."+h), "triggerd sets %s itself", h)
		}
	}
	return nil
}

// reservedHeaders are the request headers triggerd sets on deliveries:
// a trigger's headers cannot name them, even where triggerd leaves one
// out (the webhook- headers of an unsigned delivery). The ce- headers
// carry a binary delivery's attributes (ce-datacontenttype is never sent:
// Content-Type stands for it).
var reservedHeaders = []string{"Content-Type", "X-SC-Token",
	"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
	"Ce-Specversion", "Ce-Id", "Ce-Source", "Ce-Type", "Ce-Time", "Ce-Datacontenttype"}

// validateDatabases checks a project's CDC sources and fills in the names
// of their slots and publications.
func (w *walker) validateDatabases(p *Project, path string) error {
	slots := make(map[string]string)
	for _, alias := range slices.Sorted(maps.Keys(p.Databases)) {
		d := p.Databases[alias]
		dp := path + ".databases." + alias
		if !aliasName.MatchString(alias) {
			return w.fail(dp, "%q is not a valid database alias: use letters, digits, _ and -", alias)
		}
		if strings.TrimSpace(d.URL) == "" {
			return w.fail(dp+".url", "is required: the Postgres database whose changes to capture")
		}
		if d.Heartbeat <= 0 {
			return w.fail(dp+".heartbeat", "must be more than 0")
		}
		if d.Slot == "" {
			d.Slot = strings.ToLower(strings.NewReplacer("-", "_").Replace("triggerd_" + p.ID + "_" + alias))
		}
		if d.Publication == "" {
			d.Publication = d.Slot
		}
		for _, f := range []struct{ key, name string }{{"slot", d.Slot}, {"publication", d.Publication}} {
			if !slotName.MatchString(f.name) {
				return w.fail(dp+"."+f.key, "%s is not a valid %s name: use at most 63 lowercase letters, digits and _ (set %s to fix it)", w.quote(dp+"."+f.key, f.name), f.key, f.key)
			}
		}
		if other, dup := slots[d.Slot]; dup {
			return w.fail(dp+".slot", "slot %s is also the slot of database %s: give each database its own", w.quote(dp+".slot", d.Slot), other)
		}
		slots[d.Slot] = alias
		p.Databases[alias] = d
	}
	return nil
}

// validateStorage checks a project's watched directories.
func (w *walker) validateStorage(p *Project, path string) error {
	for _, alias := range slices.Sorted(maps.Keys(p.Storage)) {
		s := p.Storage[alias]
		sp := path + ".storage." + alias
		if !aliasName.MatchString(alias) {
			return w.fail(sp, "%q is not a valid storage alias: use letters, digits, _ and -", alias)
		}
		if strings.TrimSpace(s.Path) == "" {
			return w.fail(sp+".path", "is required: the directory to watch (a relative path is taken from this file's folder)")
		}
		if s.Settle <= 0 {
			return w.fail(sp+".settle", "must be more than 0")
		}
		if s.HashLimit < 0 {
			return w.fail(sp+".hash_limit", "must be 0 or more bytes (0 sends no sha256)")
		}
		for k, pat := range s.Ignore {
			if err := w.checkGlob(fmt.Sprintf("%s.ignore[%d]", sp, k), pat); err != nil {
				return err
			}
		}
	}
	return nil
}

// The trigger options of each source, for error messages.
const (
	dbOptions   = "DB_* triggers take db, col and columns"
	fileOptions = "FILE_* triggers take store and path"
)

// validateOptions checks a trigger's options against its type and fills in
// the database of a DB_* trigger, or the storage directory of a FILE_*
// trigger, when the project has only one.
func (w *walker) validateOptions(p *Project, t *Trigger, key func(string) string) error {
	o := &t.Options
	switch {
	case strings.HasPrefix(t.Type, "DB_"):
		return w.validateDBOptions(p, t, key)
	case strings.HasPrefix(t.Type, "FILE_"):
		return w.validateFileOptions(p, t, key)
	}
	if *o != (TriggerOptions{}) {
		return w.fail(key("options"), "options belong to DB_* and FILE_* triggers (%s; %s), not to %s", dbOptions, fileOptions, w.quote(key("type"), t.Type))
	}
	return nil
}

// validateFileOptions checks the options of a FILE_* trigger.
func (w *walker) validateFileOptions(p *Project, t *Trigger, key func(string) string) error {
	o := &t.Options
	if !IsFileType(t.Type) {
		return w.fail(key("type"), "%s is not a file event type: use FILE_CREATE or FILE_DELETE", w.quote(key("type"), t.Type))
	}
	for _, f := range []struct{ key, value string }{{"db", o.DB}, {"col", o.Col}, {"columns", o.Columns}} {
		if f.value != "" {
			return w.fail(key("options."+f.key), "is an option of DB_* triggers: %s", fileOptions)
		}
	}
	if err := pickAlias(w, key("options.store"), &o.Store, p.Storage, "storage directories", "storage: {alias: {path: ...}}"); err != nil {
		return err
	}
	if o.Path != "" {
		return w.checkGlob(key("options.path"), o.Path)
	}
	return nil
}

// validateDBOptions checks the options of a DB_* trigger.
func (w *walker) validateDBOptions(p *Project, t *Trigger, key func(string) string) error {
	o := &t.Options
	if !IsChangeType(t.Type) {
		return w.fail(key("type"), "%s is not a database event type: use DB_INSERT, DB_UPDATE or DB_DELETE", w.quote(key("type"), t.Type))
	}
	for _, f := range []struct{ key, value string }{{"store", o.Store}, {"path", o.Path}} {
		if f.value != "" {
			return w.fail(key("options."+f.key), "is an option of FILE_* triggers: %s", dbOptions)
		}
	}
	if err := pickAlias(w, key("options.db"), &o.DB, p.Databases, "databases", "databases: {alias: {url: ...}}"); err != nil {
		return err
	}
	if o.Col != "" && len(o.Tables()) == 0 {
		return w.fail(key("options.col"), "names no table: write a table, schema.table, or a comma list")
	}
	for _, tab := range o.Tables() {
		if strings.Count(tab, ".") > 1 {
			return w.fail(key("options.col"), "%s is not a table name: write table or schema.table", w.quote(key("options.col"), tab))
		}
	}
	if o.Columns != "" && t.Type != TypeUpdate {
		return w.fail(key("options.columns"), "only DB_UPDATE triggers take columns: an insert or delete changes every column")
	}
	return nil
}

// checkGlob checks a doublestar pattern on a slash-separated relative path.
func (w *walker) checkGlob(path, pattern string) error {
	if !doublestar.ValidatePattern(pattern) {
		return w.fail(path, `%s is not a valid glob: look for an unclosed [ or {, an empty [], or a trailing \`, w.quote(path, pattern))
	}
	if strings.HasPrefix(pattern, "/") {
		return w.fail(path, "%s starts with /, so it matches nothing: paths are relative to the storage directory (leave out the leading /)", w.quote(path, pattern))
	}
	return nil
}

// pickAlias checks the key at path, which names one of the project's
// databases or storage directories (m, called kind in messages): an empty
// alias becomes the only one there is, else it is required.
func pickAlias[V any](w *walker, path string, alias *string, m map[string]V, kind, declare string) error {
	if *alias == "" {
		if len(m) != 1 {
			return w.fail(path, "is required: name one of the project's %s (%s)", kind, aliases(m, declare))
		}
		for a := range m {
			*alias = a
		}
	}
	if _, ok := m[*alias]; !ok {
		return w.fail(path, "%s is not one of the project's %s (%s)", w.quote(path, *alias), kind, aliases(m, declare))
	}
	return nil
}

// aliases lists a project's database or storage aliases for error
// messages; declare is the YAML that would add one.
func aliases[V any](m map[string]V, declare string) string {
	if len(m) == 0 {
		return "the project has none: add " + declare
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// fail formats an error for a key path, at the key's line.
func (w *walker) fail(path, format string, args ...any) error {
	return w.errAt(w.line(path), path, format, args...)
}

// line is the line of a key path, or of its nearest parent that has one.
func (w *walker) line(path string) int {
	for {
		if l, ok := w.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return w.lines[""]
		}
		path = path[:i]
	}
}
