package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The admin API's answers are checked against its OpenAPI document with
// a JSON Schema 2020-12 validator (the dialect of OpenAPI 3.1's schemas):
// every answer any test gets from a /v1/admin path goes through
// checkAdminAnswer (see fixture.send).

// specURL names the document for the validator's $refs.
const specURL = "https://triggerd.invalid/openapi.json"

// spec is the document, read once, and the compiler of its schemas.
var spec = sync.OnceValues(func() (*openAPISpec, error) {
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		return nil, err
	}
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
	s := &openAPISpec{raw: raw, version: parsed.OpenAPI, compiler: c, schemas: make(map[string]*jsonschema.Schema)}
	for path, ops := range parsed.Paths {
		re := regexp.MustCompile("^" + regexp.MustCompile(`\\\{[^/]+\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
		for method, op := range ops {
			var o struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(op, &o); err != nil {
				return nil, fmt.Errorf("%s %s: %w", method, path, err)
			}
			s.ops = append(s.ops, openAPIOp{path: path, method: strings.ToUpper(method), match: re, statuses: slices.Sorted(maps.Keys(o.Responses))})
		}
	}
	return s, nil
})

type openAPISpec struct {
	raw      []byte
	version  string
	ops      []openAPIOp
	compiler *jsonschema.Compiler

	mu      sync.Mutex
	schemas map[string]*jsonschema.Schema
}

// openAPIOp is one documented operation.
type openAPIOp struct {
	path, method string
	match        *regexp.Regexp
	statuses     []string
}

// schema compiles the schema at a JSON pointer of the document.
func (s *openAPISpec) schema(pointer string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.schemas[pointer]; ok {
		return sch, nil
	}
	sch, err := s.compiler.Compile(specURL + "#" + pointer)
	if err != nil {
		return nil, err
	}
	s.schemas[pointer] = sch
	return sch, nil
}

// escape escapes a JSON pointer token.
func escape(token string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(token)
}

// checkAdminAnswer fails the test unless the document describes an answer
// of the admin API: the path and method are an operation that lists the
// status, and the body is valid against that answer's schema. A 404 or
// 405 of a path or method the document does not list must be an Error.
func checkAdminAnswer(t *testing.T, method, path string, status int, body []byte) {
	t.Helper()
	s, err := spec()
	if err != nil {
		t.Fatalf("the OpenAPI document: %v", err)
	}
	path, _, _ = strings.Cut(path, "?")
	pointer := ""
	pathKnown := false
	for _, op := range s.ops {
		if !op.match.MatchString(path) {
			continue
		}
		pathKnown = true
		if op.method == method && slices.Contains(op.statuses, fmt.Sprint(status)) {
			pointer = "/paths/" + escape(op.path) + "/" + strings.ToLower(method) + "/responses/" + fmt.Sprint(status) + "/content/application~1json/schema"
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
	sch, err := s.schema(pointer)
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

// TestOpenAPIDocument checks that the admin API serves its document, that
// it is OpenAPI 3.1, and that each operation it lists is served with the
// method it names (the answers themselves are checked in every test).
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	s, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	if s.version != "3.1.0" {
		t.Fatalf("the document says openapi %q, want 3.1.0", s.version)
	}
	f := adminNode(t)
	token := f.login(t)
	req, err := http.NewRequest(http.MethodGet, f.url+"/v1/admin/openapi.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var served bytes.Buffer
	if _, err := served.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(served.Bytes(), s.raw) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/admin/openapi.json: %d, %s, %d bytes; want 200, application/json, openapi.json (%d bytes)",
			resp.StatusCode, resp.Header.Get("Content-Type"), served.Len(), len(s.raw))
	}
	concrete := strings.NewReplacer("{id}", "01a211bf-dcad-7096-8be2-560a397d449c", "{project}", "demo")
	for _, op := range s.ops {
		status, out := f.do(t, op.method, concrete.Replace(op.path), `{}`, token)
		if msg := fmt.Sprint(out["error"]); status == 405 || strings.Contains(msg, "no such admin endpoint") {
			t.Errorf("%s %s, documented, is not served: %d %v", op.method, op.path, status, out)
		}
	}
}
