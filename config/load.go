package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Load reads and validates the config file at path, expanding ${VAR} from
// the environment. Relative key file and storage paths are taken from the
// file's folder.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(path, data, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

// Parse decodes and validates a config. name labels error messages;
// lookupEnv supplies the values of ${VAR} references.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty: it needs at least store and projects", name)
		}
		return nil, syntaxError(name, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: the file holds more than one YAML document: keep one", name)
	}
	root := doc.Content[0]
	w := &walker{name: name, lookupEnv: lookupEnv, lines: make(map[string]int),
		expanded: make(map[*yaml.Node]string), empty: make(map[string]bool), shown: make(map[string]string)}
	if err := w.walk(root, reflect.TypeFor[Config](), "", false); err != nil {
		return nil, err
	}
	cfg := &Config{
		Listen:        "127.0.0.1:4122",
		SyncTimeout:   Duration(10 * time.Second),
		BodyLimit:     1 << 20,
		ShutdownGrace: Duration(10 * time.Second),
		Lease:         Duration(10 * time.Second),
		HTTP: HTTP{
			ReadHeaderTimeout: Duration(10 * time.Second),
			ReadTimeout:       Duration(30 * time.Second),
			IdleTimeout:       Duration(time.Minute),
			MaxHeaderBytes:    64 << 10,
		},
		Store:     Store{Schema: "triggerd", MaxConns: 16},
		Retention: DefaultRetention(),
	}
	if err := root.Decode(cfg); err != nil {
		// The walker has checked every value: what is left for yaml.v3 to
		// refuse is aliasing it finds excessive. Its messages can quote
		// values.
		if strings.Contains(err.Error(), "excessive aliasing") {
			return nil, fmt.Errorf("%s: the aliases expand to nearly all of the file's values: use fewer or smaller aliases", name)
		}
		return nil, fmt.Errorf("%s: the file does not decode (yaml.v3's message is not shown: it can quote a secret)", name)
	}
	// Defaults that follow other keys.
	if !w.given("http.read_header_timeout") {
		cfg.HTTP.ReadHeaderTimeout = min(cfg.HTTP.ReadHeaderTimeout, cfg.HTTP.ReadTimeout)
	}
	if !w.given("http.write_timeout") {
		// Room for a synchronous request's wait, and for reading the
		// request and writing the answer.
		cfg.HTTP.WriteTimeout = max(Duration(30*time.Second), cfg.SyncTimeout+Duration(20*time.Second))
	}
	for i := range cfg.Projects {
		w.inheritRetention(fmt.Sprintf("projects[%d].retention", i), &cfg.Projects[i].Retention, cfg.Retention)
	}
	if cfg.NodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("%s: node_id is not set and the hostname is unknown (%v): set node_id", name, err)
		}
		cfg.NodeID = host
	}
	if err := w.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// inheritRetention sets the keys of a project's retention r (at path)
// that the file does not give to the top level's.
func (w *walker) inheritRetention(path string, r *Retention, top Retention) {
	for _, k := range []struct {
		key       string
		own, from *Duration
	}{{"processed", &r.Processed, &top.Processed}, {"failed", &r.Failed, &top.Failed}, {"cancelled", &r.Cancelled, &top.Cancelled}} {
		if !w.given(path + "." + k.key) {
			*k.own = *k.from
		}
	}
}

// syntaxHint is what to check when the YAML does not parse.
const syntaxHint = `check the indentation of this line and the lines above it (spaces, not tabs; list items start with "- " at one indent), ` +
	"close every quote, [ and {, and quote values that contain \": \" or start with *, &, !, {, [, %, @ or `"

// yamlLine splits a yaml.v3 error into its line and its message.
var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// syntaxError explains err, the error of parsing data, with the line that
// breaks the YAML and what to check. yaml.v3 reports an error in a block
// at the line where the block starts, or at no line at all for an unknown
// anchor; the line that breaks it is the first one whose part of the file
// up to there fails the same way.
func syntaxError(name string, data []byte, err error) error {
	line, msg, ok := syntaxLine(data, err)
	if !ok {
		return fmt.Errorf("%s: %w", name, err)
	}
	return fmt.Errorf("%s: line %d: YAML syntax: %s", name, line, msg)
}

// syntaxLine finds the line that breaks the YAML in data, as syntaxError
// says, and what is wrong there with what to check; false when err does
// not say.
func syntaxLine(data []byte, err error) (int, string, bool) {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, "", false
	}
	lines := bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	from, _ := strconv.Atoi(m[1])
	from = max(from, 1)
	// The whole file, all its lines, fails the same way.
	broken := from + sort.Search(len(lines)-from, func(i int) bool {
		var n yaml.Node
		perr := yaml.NewDecoder(bytes.NewReader(bytes.Join(lines[:from+i], nil))).Decode(&n)
		return perr != nil && perr.Error() == err.Error()
	})
	msg, hint := m[2], syntaxHint
	if strings.HasPrefix(msg, "unknown anchor") {
		hint = "an alias (*name) needs an anchor (&name) on a value above it; quote a value that starts with *"
	}
	if m[1] != "" && broken != from {
		msg += fmt.Sprintf(" (in the block from line %d)", from)
	}
	return broken, msg + ": " + hint, true
}

// resolvePaths makes relative key file and storage paths relative to dir.
func (c *Config) resolvePaths(dir string) {
	resolve := func(f *string) {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
	for i := range c.Projects {
		p := &c.Projects[i]
		for j := range p.Secrets {
			resolve(&p.Secrets[j].PrivateKeyFile)
			resolve(&p.Secrets[j].PublicKeyFile)
		}
		for alias, s := range p.Storage {
			resolve(&s.Path)
			p.Storage[alias] = s
		}
	}
}

// UnmarshalYAML fills a trigger's defaults before decoding it, so that an
// explicit zero (retries: 0) stays zero.
func (t *Trigger) UnmarshalYAML(n *yaml.Node) error {
	type plain Trigger
	p := plain{
		Retries:        3,
		AttemptTimeout: Millis(5 * time.Second),
		Concurrency:    16,
		Format:         FormatStructured,
		RetryBackoff:   Backoff{Initial: Duration(time.Second), Max: Duration(10 * time.Minute)},
	}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*t = Trigger(p)
	return nil
}

// DefaultAdminTokenTTL is how long an admin token lasts when the admin
// section does not say.
const DefaultAdminTokenTTL = 15 * time.Minute

// DefaultSessionTTL is how long a Mission Control login lasts at most
// when the admin section sets no session_ttl.
const DefaultSessionTTL = 12 * time.Hour

// UnmarshalYAML fills the admin section's defaults before decoding it.
func (a *Admin) UnmarshalYAML(n *yaml.Node) error {
	type plain Admin
	p := plain{TokenTTL: Duration(DefaultAdminTokenTTL), SessionTTL: Duration(DefaultSessionTTL)}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*a = Admin(p)
	return nil
}

// UnmarshalYAML fills a database's defaults before decoding it.
func (d *Database) UnmarshalYAML(n *yaml.Node) error {
	type plain Database
	p := plain{Heartbeat: Duration(10 * time.Second)}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*d = Database(p)
	return nil
}

// UnmarshalYAML fills a storage directory's defaults before decoding it, so
// that an explicit hash_limit: 0 stays zero.
func (s *Storage) UnmarshalYAML(n *yaml.Node) error {
	type plain Storage
	p := plain{Settle: Duration(250 * time.Millisecond), HashLimit: 8 << 20}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = Storage(p)
	return nil
}

// valueError says what is wrong with a value without repeating it; the
// walker puts the value, or what stands for it, in front.
type valueError string

func (e valueError) Error() string { return string(e) }

// UnmarshalYAML reads a Go duration string such as "1s" or "10m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML reads a Go duration string such as "5s", or a whole
// number of milliseconds.
func (m *Millis) UnmarshalYAML(n *yaml.Node) error {
	ms, err := strconv.ParseInt(n.Value, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) || ms > maxMillis || ms < -maxMillis:
		return valueError("is out of range: write a duration like 5s or 1500ms")
	case err == nil:
		*m = Millis(time.Duration(ms) * time.Millisecond)
		return nil
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return valueError(err.Error() + ", or a whole number of milliseconds")
	}
	*m = Millis(v)
	return nil
}

// maxMillis is the most milliseconds a time.Duration holds.
const maxMillis = math.MaxInt64 / int64(time.Millisecond)

// parseDuration reads a duration, insisting on a unit.
func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, numErr := time.ParseDuration(s + "s"); numErr == nil {
			return 0, valueError("has no unit: write it like 10s or 500ms")
		}
		if _, dayErr := strconv.ParseFloat(strings.TrimSuffix(s, "d"), 64); strings.HasSuffix(s, "d") && dayErr == nil {
			return 0, valueError("has days (d), which are no unit here: write hours, like 168h for 7 days")
		}
		return 0, valueError("is not a duration: write one like 10s, 500ms or 2m")
	}
	return v, nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// walker checks a YAML tree against the Go types before decoding: it
// expands ${VAR} in values (unless lookupEnv is nil: values as written), rejects unknown and duplicate keys and values
// of the wrong kind, and remembers the line of every key path.
type walker struct {
	name      string
	lookupEnv func(string) (string, bool)
	lines     map[string]int
	// aliasDepth counts the aliases being followed, aliasLine is the line
	// of the outermost one, and aliased counts the values reached through
	// aliases: an alias of an alias of a list multiplies, so a small file
	// can stand for a huge tree.
	aliasDepth, aliasLine, aliased int
	// expanded holds the text as written of the values whose ${VAR}s are
	// replaced: aliases reach a node more than once, and it must be
	// expanded only the first time.
	expanded map[*yaml.Node]string
	// empty holds the key paths whose value is empty or null.
	empty map[string]bool
	// shown is what error messages show instead of the value at a key
	// path that came from the environment: the text as written.
	shown map[string]string
}

// notShown stands for a value that can hold a secret in error messages.
const notShown = "a value that is not shown (it can hold a secret)"

// maxAliased bounds the values reached through aliases. A thousand
// triggers sharing a URL, twenty headers, a backoff and options through
// anchors reach about 29,000.
const maxAliased = 100_000

// FieldError is what is wrong with a config, or with a trigger given on
// its own (see ParseTrigger): where, and what to do about it.
type FieldError struct {
	// Name labels the text checked: the config file, or what held the trigger.
	Name string
	// Line is the line of the key in that text.
	Line int
	// Field is the key's path, such as projects[0].triggers[1].url, or url
	// for a trigger on its own; empty at the top level.
	Field string
	// Message says what is wrong and how to fix it, showing no secret.
	Message string
}

// Error returns the name, the line, the field and the message.
func (e *FieldError) Error() string {
	where := e.Field
	if where == "" {
		where = "top level"
	}
	return fmt.Sprintf("%s: line %d: %s: %s", e.Name, e.Line, where, e.Message)
}

// errAt formats an error for a key path.
func (w *walker) errAt(line int, path, format string, args ...any) error {
	return &FieldError{Name: w.name, Line: line, Field: path, Message: fmt.Sprintf(format, args...)}
}

// walk checks node n, which is to decode into a value of type t at path;
// hide is set under a field tagged config:"secret", whose values error
// messages never show.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, hide bool) error {
	if t.Kind() == reflect.Pointer { // an optional section: absent or null stays nil
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		if w.aliasDepth == 0 {
			w.aliasLine = n.Line
		}
		w.aliasDepth++
		defer func() { w.aliasDepth-- }()
		n = n.Alias
	}
	if w.aliasDepth > 0 {
		if w.aliased++; w.aliased > maxAliased {
			return w.errAt(w.aliasLine, path, "the aliases up to here expand to more than %d values (an alias repeats its anchor's whole value): use fewer or smaller aliases", maxAliased)
		}
	}
	w.lines[path] = n.Line
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		w.empty[path] = true
		return nil // an empty value leaves the default
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) && t.Kind() != reflect.Struct {
		return w.scalar(n, t, path, hide)
	}
	switch t.Kind() {
	case reflect.Struct:
		return w.mapping(n, path, func(key string, v *yaml.Node, kpath string) error {
			f, ok := fieldByTag(t, key)
			if !ok {
				return w.errAt(v.Line, path, "unknown key %q (known keys: %s)", key, strings.Join(tags(t), ", "))
			}
			return w.walk(v, f.Type, kpath, hide || f.Tag.Get("config") == "secret")
		})
	case reflect.Map:
		return w.mapping(n, path, func(_ string, v *yaml.Node, kpath string) error {
			return w.walk(v, t.Elem(), kpath, hide)
		})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return w.errAt(n.Line, path, "want a list")
		}
		for i, item := range n.Content {
			if err := w.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), hide); err != nil {
				return err
			}
		}
		return nil
	}
	return w.scalar(n, t, path, hide)
}

// mapping checks a mapping node's keys and hands each value to each.
func (w *walker) mapping(n *yaml.Node, path string, each func(key string, v *yaml.Node, kpath string) error) error {
	if n.Kind != yaml.MappingNode {
		return w.errAt(n.Line, path, "want keys and values (a mapping)")
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		// Keys are names written out: yaml.v3 would merge <<, drop null
		// keys and decode the others differently from what the walker sees.
		switch {
		case k.Kind == yaml.AliasNode:
			return w.errAt(k.Line, path, "a key cannot be an alias (*%s): write it out", k.Value)
		case k.Kind != yaml.ScalarNode:
			return w.errAt(k.Line, path, "a key must be a single value, not a list or mapping")
		case k.ShortTag() == "!!null":
			return w.errAt(k.Line, path, "a key is empty (~ or null): write a name")
		case k.ShortTag() == "!!merge":
			return w.errAt(k.Line, path, "merge keys (<<) are not supported: alias a whole value (key: *name) or write the keys out")
		}
		if v.Tag == "!!null" && v.Value == "" && strings.ContainsAny(k.Value, " \t:") {
			// {Authorization Bearer xyz}: the key may hold a value.
			return w.errAt(k.Line, path, `a key with a space or : in it has no value: put ": " between a key and its value (the key is not shown: it may hold a secret)`)
		}
		if first, dup := seen[k.Value]; dup {
			return w.errAt(k.Line, path, "key %q appears twice (first on line %d)", k.Value, first)
		}
		seen[k.Value] = k.Line
		kpath := k.Value
		if path != "" {
			kpath = path + "." + k.Value
		}
		if err := each(k.Value, v, kpath); err != nil {
			return err
		}
	}
	return nil
}

// scalar expands a value's ${VAR}s and checks that it decodes into t.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string, hide bool) error {
	if n.Kind != yaml.ScalarNode {
		return w.errAt(n.Line, path, "want a single value, not a list or mapping")
	}
	written, done := w.expanded[n]
	if !done && w.lookupEnv != nil && strings.Contains(n.Value, "$") {
		v, err := expand(n.Value, w.lookupEnv)
		if err != nil {
			return w.errAt(n.Line, path, "%v", err)
		}
		written, done = n.Value, true
		w.expanded[n] = written
		n.Value = v
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			n.Tag = "" // resolve the expanded text afresh: retries: ${N} is a number
		}
	}
	if done && !hide {
		w.shown[path] = fmt.Sprintf("the value of %q", written)
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		shown := w.quote(path, n.Value)
		if hide {
			shown = notShown
		}
		var verr valueError
		if errors.As(err, &verr) {
			return w.errAt(n.Line, path, "%s %v", shown, verr)
		}
		want := map[reflect.Kind]string{
			reflect.Int: "a whole number", reflect.Int32: "a whole number", reflect.Int64: "a whole number",
			reflect.Bool: "true or false", reflect.String: "a string",
		}[t.Kind()]
		return w.errAt(n.Line, path, "want %s, got %s", want, shown)
	}
	return nil
}

// given reports whether the file gives a value at a key path.
func (w *walker) given(path string) bool {
	_, ok := w.lines[path]
	return ok && !w.empty[path]
}

// quote shows the value at a key path in an error message: quoted, or
// as the file writes it when it came from the environment. Values that
// can hold a secret are never quoted.
func (w *walker) quote(path, value string) string {
	if s, ok := w.shown[path]; ok {
		return s
	}
	return strconv.Quote(value)
}

// fieldByTag finds the struct field with yaml tag key.
func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// tags lists a struct's yaml keys in field order.
func tags(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

// expand replaces ${VAR} and ${VAR:-default} with values from lookupEnv;
// $$ is a literal $.
func expand(s string, lookupEnv func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		// The value may be a secret: errors say where, not what.
		at := func() int { return utf8.RuneCountInString(s[:i]) + 1 }
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("the ${ at character %d is not closed: write ${VAR} or ${VAR:-default}, or $$ for a literal $", at())
		}
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("the ${...} at character %d does not name a variable: write ${VAR} or ${VAR:-default} (letters, digits and _, not starting with a digit), or $$ for a literal $", at())
		}
		v, ok := lookupEnv(name)
		switch {
		case hasDef && v == "":
			v = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set (set it, or write ${%s:-default})", name, name)
		}
		b.WriteString(v)
		i += end
	}
	return b.String(), nil
}

// validEnvName reports whether s is a shell-style variable name.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}
