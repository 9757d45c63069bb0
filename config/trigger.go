package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"reflect"
	"time"

	"go.yaml.in/yaml/v3"
)

// ParseTrigger decodes one trigger of project p, written as a YAML or JSON
// mapping with the keys a trigger has in the config file, and checks it
// exactly as Load checks the config's triggers: the same defaults, the
// same rules and the same messages, naming the field (url,
// retry_backoff.initial, options.db) as a *FieldError. name labels the
// messages; every error is a *FieldError. Values are taken as written: ${VAR} is not expanded, because
// a trigger kept in the store is read by nodes with different
// environments. The database or storage directory that the options leave
// out is filled in when the project has only one. Whether the name is
// free in the project is for the caller to check.
func ParseTrigger(name string, data []byte, p *Project) (*Trigger, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Name: name, Line: 1, Message: "the trigger is empty: it needs at least name, type and url"}
		}
		line, msg, ok := syntaxLine(data, err)
		if !ok {
			line, msg = 1, err.Error()
		}
		return nil, &FieldError{Name: name, Line: line, Message: "YAML syntax: " + msg}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &FieldError{Name: name, Line: 1, Message: "more than one YAML document: give one trigger"}
	}
	root := doc.Content[0]
	if root.Tag == "!!null" {
		return nil, &FieldError{Name: name, Line: root.Line, Message: "the trigger is empty: it needs at least name, type and url"}
	}
	w := &walker{name: name, lines: make(map[string]int),
		expanded: make(map[*yaml.Node]string), empty: make(map[string]bool), shown: make(map[string]string)}
	if err := w.walk(root, reflect.TypeFor[Trigger](), "", false); err != nil {
		return nil, err
	}
	var t Trigger
	if err := root.Decode(&t); err != nil {
		return nil, &FieldError{Name: name, Line: root.Line, Message: "the trigger does not decode (yaml.v3's message is not shown: it can quote a secret)"}
	}
	if err := w.validateTrigger(p, &t, ""); err != nil {
		return nil, err
	}
	return &t, nil
}

// Document is the trigger as JSON, with the keys of the config file: what
// ParseTrigger reads back to an equal trigger. It holds the trigger's
// secrets (url, headers, webhook_secrets).
func (t *Trigger) Document() json.RawMessage {
	// A Trigger holds nothing that JSON cannot encode.
	b, _ := json.Marshal(t)
	return b
}

// Equal reports whether two triggers have the same settings.
func (t *Trigger) Equal(o *Trigger) bool {
	return bytes.Equal(t.Document(), o.Document())
}

// MarshalJSON writes d as a Go duration string ("1m30s"), as the config does.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Std().String())
}

// MarshalJSON writes m as a Go duration string ("5s"), as the config does.
func (m Millis) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(m).String())
}

// ShownTrigger is a trigger as an answer shows it: its header values and
// webhook secrets hidden, and the password of its URL.
type ShownTrigger struct {
	Trigger
	// WebhookSecretsSet is how many webhook secrets the trigger has.
	WebhookSecretsSet int `json:"webhook_secrets_set,omitempty"`
}

// hidden stands for a value an answer does not show.
const hidden = "[hidden]"

// Shown returns the trigger as answers show it.
func (t *Trigger) Shown() ShownTrigger {
	s := ShownTrigger{Trigger: *t, WebhookSecretsSet: len(t.WebhookSecrets)}
	s.WebhookSecrets = nil
	if len(t.Headers) > 0 {
		s.Headers = make(map[string]string, len(t.Headers))
		for k := range t.Headers {
			s.Headers[k] = hidden
		}
	}
	if u, err := url.Parse(t.URL); err == nil {
		s.URL = u.Redacted()
	}
	return s
}
