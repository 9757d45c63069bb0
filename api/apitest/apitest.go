// Package apitest checks the admin API's answers against its OpenAPI
// document, for the tests of every package that gets such answers from a
// real server (api's own, node's with real nodes). It is a test helper:
// only _test.go files import it (see depguard in .golangci.yaml).
package apitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/triggerd/triggerd/api"
)

// The answers are checked with a JSON Schema 2020-12 validator (the
// dialect of OpenAPI 3.1's schemas).

// specURL names the document for the validator's $refs.
const specURL = "https://triggerd.invalid/openapi.json"

// Operation is one operation the document lists.
type Operation struct {
	// Method is upper case; Path is the document's template, such as
	// /v1/admin/events/{id}.
	Method, Path string
	// Statuses are the answers the document lists for it.
	Statuses []string
	match    *regexp.Regexp
}

// document is the OpenAPI document, parsed once, and the compiler of its
// schemas.
type document struct {
	version  string
	ops      []Operation
	compiler *jsonschema.Compiler

	mu      sync.Mutex
	schemas map[string]*jsonschema.Schema
}

// load parses the document api serves.
var load = sync.OnceValues(func() (*document, error) {
	raw := api.OpenAPI()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("openapi.json is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(specURL, doc); err != nil {
		return nil, err
	}
	var parsed struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return nil, err
	}
	d := &document{version: parsed.OpenAPI, compiler: c, schemas: make(map[string]*jsonschema.Schema)}
	param := regexp.MustCompile(`\\\{[^/]+\\\}`)
	for path, ops := range parsed.Paths {
		re := regexp.MustCompile("^" + param.ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
		for method, op := range ops {
			var o struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(op, &o); err != nil {
				return nil, fmt.Errorf("%s %s: %w", method, path, err)
			}
			d.ops = append(d.ops, Operation{Method: strings.ToUpper(method), Path: path, Statuses: slices.Sorted(maps.Keys(o.Responses)), match: re})
		}
	}
	slices.SortFunc(d.ops, func(a, b Operation) int { return strings.Compare(a.Path+" "+a.Method, b.Path+" "+b.Method) })
	return d, nil
})

// parsed returns the document, failing the test when it does not parse.
func parsed(t testing.TB) *document {
	t.Helper()
	d, err := load()
	if err != nil {
		t.Fatalf("the OpenAPI document: %v", err)
	}
	return d
}

// Version is the document's openapi field.
func Version(t testing.TB) string {
	t.Helper()
	return parsed(t).version
}

// Operations lists the document's operations, by path and method.
func Operations(t testing.TB) []Operation {
	t.Helper()
	return slices.Clone(parsed(t).ops)
}

// schema compiles the schema at a JSON pointer of the document.
func (d *document) schema(pointer string) (*jsonschema.Schema, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sch, ok := d.schemas[pointer]; ok {
		return sch, nil
	}
	sch, err := d.compiler.Compile(specURL + "#" + pointer)
	if err != nil {
		return nil, err
	}
	d.schemas[pointer] = sch
	return sch, nil
}

// escape escapes a JSON pointer token.
func escape(token string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(token)
}

// CheckAdminAnswer fails the test unless the document describes an answer
// of the admin API: the path (its query is ignored) and method are an
// operation that lists the status, and the body is valid against that
// answer's schema. A 404 or 405 of a path or method the document does not
// list must be an Error.
func CheckAdminAnswer(t testing.TB, method, path string, status int, body []byte) {
	t.Helper()
	d := parsed(t)
	path, _, _ = strings.Cut(path, "?")
	pointer := ""
	pathKnown := false
	for _, op := range d.ops {
		if !op.match.MatchString(path) {
			continue
		}
		pathKnown = true
		if op.Method == method && slices.Contains(op.Statuses, fmt.Sprint(status)) {
			pointer = "/paths/" + escape(op.Path) + "/" + strings.ToLower(method) + "/responses/" + fmt.Sprint(status) + "/content/application~1json/schema"
			break
		}
	}
	switch {
	case pointer != "":
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		pointer = "/components/schemas/Error"
	default:
		t.Errorf("%s %s answered %d, which the OpenAPI document does not list (path documented: %v)", method, path, status, pathKnown)
		return
	}
	sch, err := d.schema(pointer)
	if err != nil {
		t.Fatalf("the OpenAPI document's schema at %s: %v", pointer, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Errorf("%s %s answered %d with a body that is not JSON: %v", method, path, status, err)
		return
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("%s %s answered %d with a body the OpenAPI document does not allow: %v\n%s", method, path, status, err, body)
	}
}
