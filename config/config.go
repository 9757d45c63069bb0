// Package config loads and validates triggerd's YAML configuration.
//
// Error messages show no value that can hold a secret: nothing of the
// values of fields tagged config:"secret", and for other values that came
// from ${VAR}s, the text as the file writes it.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the whole configuration of a triggerd node.
type Config struct {
	// Listen is the HTTP address of the API, host:port.
	Listen string `yaml:"listen"`
	// NodeID identifies this node in CloudEvents' source and in X-SC-Token.
	NodeID string `yaml:"node_id"`
	// SyncTimeout bounds how long a synchronous queue request waits.
	SyncTimeout Duration `yaml:"sync_timeout"`
	// BodyLimit is the largest queue request body accepted, in bytes.
	BodyLimit int64 `yaml:"body_limit"`
	// ShutdownGrace is how long attempts in flight may run after SIGTERM.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// Lease is how long a node's claim on a row lasts unless it renews it;
	// a dead node's rows come back to the others within about this long.
	Lease Duration `yaml:"lease"`
	// HTTP bounds the API server's connections.
	HTTP HTTP `yaml:"http"`
	// Store is the eventing database.
	Store Store `yaml:"store"`
	// Projects are the event namespaces this node serves.
	Projects []Project `yaml:"projects"`
	// Admin enables the admin API (/v1/admin/...); nil when the config has
	// no admin section, and the admin API answers 404.
	Admin *Admin `yaml:"admin"`
	// Retention is how long delivered, failed and cancelled rows are kept
	// (default DefaultRetention()); a project's own retention overrides it.
	Retention Retention `yaml:"retention"`
	// MetricsListen, when set, is the address GET /metrics is served on,
	// host:port, instead of Listen.
	MetricsListen string `yaml:"metrics_listen"`
}

// Retention is how long the rows of each outcome, and their attempts, are
// kept after the row reached it. 0 keeps them forever. Staged rows are
// never deleted.
type Retention struct {
	Processed Duration `yaml:"processed"`
	Failed    Duration `yaml:"failed"`
	Cancelled Duration `yaml:"cancelled"`
}

// DefaultRetention is the retention of a config that sets none: a week
// for delivered and cancelled rows, 30 days for failed ones, which are
// the ones looked at and redelivered later. (A function, so that no
// caller can change the default of every other.)
func DefaultRetention() Retention {
	return Retention{
		Processed: Duration(7 * 24 * time.Hour),
		Failed:    Duration(30 * 24 * time.Hour),
		Cancelled: Duration(7 * 24 * time.Hour),
	}
}

// Admin is who may use the admin API, and the secret its tokens are
// signed with. Exactly one of Password and PasswordHash is set.
type Admin struct {
	// User is the name to log in with.
	User string `yaml:"user"`
	// Password is the password to log in with, as text.
	Password string `yaml:"password" config:"secret"`
	// PasswordHash is the bcrypt hash of the password ($2a$, $2b$ or $2y$).
	PasswordHash string `yaml:"password_hash" config:"secret"`
	// Secret signs and verifies admin tokens (HS256); it is not the secret
	// of any project, so that no project token can pass for an admin one.
	Secret string `yaml:"secret" config:"secret"`
	// TokenTTL is how long an admin token lasts (default 15m, at most 24h).
	TokenTTL Duration `yaml:"token_ttl"`
	// SessionTTL is how long a Mission Control login lasts at most
	// (default 12h, at most 7 days); a session unused for an hour, or for
	// SessionTTL if that is shorter, ends sooner.
	SessionTTL Duration `yaml:"session_ttl"`
}

// HTTP bounds the connections of the API server, so that slow or idle
// clients cannot hold them forever.
type HTTP struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its answer; it is more than SyncTimeout, which a synchronous
	// request may wait before it is answered.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout is how long a kept-alive connection waits for its next
	// request before it is closed.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps the size of a request's headers (Go's server
	// allows 4 KiB more); larger ones are answered 431.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Store locates the Postgres database that holds event_logs and invocation_logs.
type Store struct {
	// URL is a Postgres connection string (URL or key=value form).
	URL string `yaml:"url" config:"secret"`
	// Schema holds triggerd's tables.
	Schema string `yaml:"schema"`
	// MaxConns caps the connection pool.
	MaxConns int32 `yaml:"max_conns"`
}

// Project groups secrets, rules and triggers under one id.
type Project struct {
	// ID names the project in API paths and event_logs.
	ID string `yaml:"id"`
	// Secrets verify bearer tokens; the first one also signs X-SC-Token.
	Secrets []Secret `yaml:"secrets"`
	// WebhookSecrets sign every delivery of the project's triggers the
	// Standard Webhooks way, each secret a signature (see WebhookKey);
	// none means deliveries carry X-SC-Token alone.
	WebhookSecrets []string `yaml:"webhook_secrets" config:"secret"`
	// Rules maps a custom event type, or "default", to who may queue it.
	Rules map[string]Rule `yaml:"rules"`
	// Triggers are the webhooks events are delivered to.
	Triggers []Trigger `yaml:"triggers"`
	// Databases are the Postgres databases whose row changes become DB_INSERT,
	// DB_UPDATE and DB_DELETE events, by alias.
	Databases map[string]Database `yaml:"databases"`
	// Storage are the directories whose files become FILE_CREATE and
	// FILE_DELETE events, by alias.
	Storage map[string]Storage `yaml:"storage"`
	// Retention is how long the project's rows are kept; Load fills each
	// key the project does not set from the top level's.
	Retention Retention `yaml:"retention"`
}

// Database is a Postgres database whose row changes triggerd captures
// through logical replication.
type Database struct {
	// URL is a connection string; the server needs wal_level=logical and the
	// role needs REPLICATION.
	URL string `yaml:"url" config:"secret"`
	// Slot is the replication slot triggerd creates and streams from
	// (default triggerd_<project>_<alias>).
	Slot string `yaml:"slot"`
	// Publication is the publication triggerd creates and keeps equal to the
	// tables its triggers name (default: the slot's name).
	Publication string `yaml:"publication"`
	// Heartbeat is how often triggerd writes a logical message to the
	// database, so that its slot advances even when no captured table changes.
	Heartbeat Duration `yaml:"heartbeat"`
}

// Storage is a directory whose files triggerd watches: a file that appears
// in it, at any depth, becomes a FILE_CREATE event, and one that is removed
// a FILE_DELETE event.
type Storage struct {
	// Path is the directory; a relative path is taken from the config
	// file's folder. Whether it exists is checked when the file source
	// starts, not here.
	Path string `yaml:"path"`
	// Ignore are globs on a file's slash-separated path relative to Path
	// (doublestar syntax, ** for any depth); a pattern without '/' matches a
	// name at any depth. Ignored files send no events.
	Ignore []string `yaml:"ignore"`
	// Settle is how long a new file's writes must be quiet before its
	// FILE_CREATE is sent (default 250ms).
	Settle Duration `yaml:"settle"`
	// HashLimit is the largest file, in bytes, whose sha256 the event
	// carries (default 8 MiB); 0 means no file is hashed, not even an empty
	// one.
	HashLimit int64 `yaml:"hash_limit"`
}

// Secret is one signing or verifying key of a project.
type Secret struct {
	// KID is the key id carried in JWT headers.
	KID string `yaml:"kid"`
	// Alg is HS256 or RS256.
	Alg string `yaml:"alg"`
	// Secret is the shared key of an HS256 secret.
	Secret string `yaml:"secret" config:"secret"`
	// PrivateKeyFile is the PEM private key of an RS256 secret (needed to sign).
	PrivateKeyFile string `yaml:"private_key_file"`
	// PublicKeyFile is the PEM public key of an RS256 secret (enough to verify).
	PublicKeyFile string `yaml:"public_key_file"`
}

// Rule says who may queue an event type through the API.
type Rule string

// The rules a type can have.
const (
	RuleAllow         Rule = "allow"
	RuleDeny          Rule = "deny"
	RuleAuthenticated Rule = "authenticated"
)

// Trigger delivers the events of one type to one webhook.
type Trigger struct {
	// Name is unique within its project.
	Name string `yaml:"name" json:"name"`
	// Type is the event type the trigger handles.
	Type string `yaml:"type" json:"type"`
	// URL is the webhook, http or https.
	URL string `yaml:"url" json:"url" config:"secret"`
	// Retries is how many times a failed attempt is retried; attempts = Retries + 1.
	Retries int `yaml:"retries" json:"retries"`
	// AttemptTimeout bounds one attempt.
	AttemptTimeout Millis `yaml:"timeout" json:"timeout"`
	// RetryBackoff shapes the waits between attempts.
	RetryBackoff Backoff `yaml:"retry_backoff" json:"retry_backoff"`
	// Headers are extra request headers sent with every attempt.
	Headers map[string]string `yaml:"headers" json:"headers,omitempty" config:"secret"`
	// Concurrency caps this trigger's attempts in flight on one node.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// Format is how each delivery is sent (default FormatStructured).
	Format Format `yaml:"format" json:"format"`
	// WebhookSecrets, when given, sign this trigger's deliveries instead
	// of the project's WebhookSecrets.
	WebhookSecrets []string `yaml:"webhook_secrets" json:"webhook_secrets,omitempty" config:"secret"`
	// Options select the row changes a DB_* trigger takes, or the files a
	// FILE_* trigger takes.
	Options TriggerOptions `yaml:"options" json:"options,omitzero"`
}

// TriggerOptions select the row changes a DB_INSERT, DB_UPDATE or DB_DELETE
// trigger takes (DB, Col, Columns), or the files a FILE_CREATE or
// FILE_DELETE trigger takes (Store, Path).
type TriggerOptions struct {
	// DB is the alias of one of the project's databases (default: the only one).
	DB string `yaml:"db" json:"db,omitempty"`
	// Col names the tables: "table", "schema.table", or a comma list of
	// them; empty means every table of the database.
	Col string `yaml:"col" json:"col,omitempty"`
	// Columns, on DB_UPDATE, fires the trigger only when one of these
	// comma-separated columns changed.
	Columns string `yaml:"columns" json:"columns,omitempty"`
	// Store is the alias of one of the project's storage directories
	// (FILE_* triggers; default: the only one).
	Store string `yaml:"store" json:"store,omitempty"`
	// Path is a glob on the file's slash-separated path relative to the
	// storage directory, with ** for any depth (FILE_* triggers; default:
	// every path).
	Path string `yaml:"path" json:"path,omitempty"`
}

// Tables returns the trigger's table names, as written; none means every table.
func (o TriggerOptions) Tables() []string { return splitList(o.Col) }

// ColumnList returns the columns an update must change to fire the trigger;
// none means any update fires it.
func (o TriggerOptions) ColumnList() []string { return splitList(o.Columns) }

// splitList splits a comma list, trimming spaces and dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// The database source's event types.
const (
	TypeInsert = "DB_INSERT"
	TypeUpdate = "DB_UPDATE"
	TypeDelete = "DB_DELETE"
)

// The file source's event types.
const (
	TypeFileCreate = "FILE_CREATE"
	TypeFileDelete = "FILE_DELETE"
)

// Format is how a trigger's deliveries are sent: which CloudEvents HTTP
// content mode, or the envelope of the earlier product.
type Format string

// The delivery formats.
const (
	// FormatStructured sends the CloudEvent in its JSON format, as
	// application/cloudevents+json (the CloudEvents structured content mode).
	FormatStructured Format = "structured"
	// FormatBinary sends the event's data as the body, as
	// application/json, and its other attributes as ce- headers (the
	// binary content mode).
	FormatBinary Format = "binary"
	// FormatEnvelope sends the structured body as application/json, as the
	// earlier product and earlier triggerd did.
	FormatEnvelope Format = "envelope"
)

// Backoff is an exponential retry schedule: the nth retry waits
// Initial × 2^(n-1), capped at Max.
type Backoff struct {
	Initial Duration `yaml:"initial" json:"initial"`
	Max     Duration `yaml:"max" json:"max"`
}

// Duration is a time.Duration written in YAML as a Go duration string ("1s", "10m").
type Duration time.Duration

// Millis is a time.Duration written in YAML as a Go duration string
// ("5s"), or as a bare number of milliseconds (5000).
type Millis time.Duration

// Timeout returns the trigger's per-attempt timeout.
func (t *Trigger) Timeout() time.Duration {
	return time.Duration(t.AttemptTimeout)
}

// webhookSecretPrefix begins every Standard Webhooks secret.
const webhookSecretPrefix = "whsec_"

// The sizes of a Standard Webhooks secret's key, in bytes.
const (
	minWebhookKey = 24
	maxWebhookKey = 64
)

// WebhookKey returns the HMAC key of a Standard Webhooks secret: whsec_
// followed by the standard, padded base64 of 24 to 64 random bytes. Its
// errors say what is wrong without showing the secret.
func WebhookKey(secret string) ([]byte, error) {
	encoded, ok := strings.CutPrefix(secret, webhookSecretPrefix)
	if !ok {
		return nil, errors.New("it does not start with " + webhookSecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	switch {
	case err != nil:
		return nil, errors.New("what follows " + webhookSecretPrefix + " is not standard base64 (A-Z, a-z, 0-9, + and /, padded with =)")
	case len(key) < minWebhookKey:
		return nil, fmt.Errorf("its key is shorter than %d bytes", minWebhookKey)
	case len(key) > maxWebhookKey:
		return nil, fmt.Errorf("its key is longer than %d bytes", maxWebhookKey)
	}
	return key, nil
}

// SigningSecrets returns the Standard Webhooks secrets that sign the
// deliveries of trigger t of project p: its own, else the project's.
func (p *Project) SigningSecrets(t *Trigger) []string {
	if len(t.WebhookSecrets) > 0 {
		return t.WebhookSecrets
	}
	return p.WebhookSecrets
}

// Project returns the project with the id, or nil.
func (c *Config) Project(id string) *Project {
	for i := range c.Projects {
		if c.Projects[i].ID == id {
			return &c.Projects[i]
		}
	}
	return nil
}

// Rule returns who may queue events of a type: the type's rule, else the
// "default" rule, else authenticated.
func (p *Project) Rule(eventType string) Rule {
	if r, ok := p.Rules[eventType]; ok {
		return r
	}
	if r, ok := p.Rules["default"]; ok {
		return r
	}
	return RuleAuthenticated
}

// IsChangeType reports whether t is one of the database source's event types.
func IsChangeType(t string) bool {
	return t == TypeInsert || t == TypeUpdate || t == TypeDelete
}

// IsFileType reports whether t is one of the file source's event types.
func IsFileType(t string) bool {
	return t == TypeFileCreate || t == TypeFileDelete
}

// IsReservedType reports whether an event type belongs to the database or
// file sources (DB_*, FILE_*), which the API does not accept.
func IsReservedType(t string) bool {
	return strings.HasPrefix(t, "DB_") || strings.HasPrefix(t, "FILE_")
}
