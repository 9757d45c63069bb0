package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/triggerd/triggerd/config"
)

// TestOpenAPIListsEveryAdminRoute walks the router's admin routes, with
// those package node adds through UseTriggers and UseSources: the OpenAPI document lists
// each, with each of its methods.
func TestOpenAPIListsEveryAdminRoute(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(`store: {url: postgres://x}
projects: [{id: p, secrets: [{kid: k, alg: HS256, secret: openapi-test-secret-0123456789abcdef}]}]
admin: {user: ops, password: openapi-test-password, secret: openapi-admin-secret-0123456789abcdef}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	routes := 0
	s := New(cfg, nil, nil, nil, nil)
	s.UseTriggers(nil) // the routes matter here, not what serves them
	s.UseSources(nil)
	err = s.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		// A route without a path template is no admin route.
		path, err := route.GetPathTemplate()
		if err != nil || !strings.HasPrefix(path, adminPrefix) {
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			t.Errorf("admin route %s has no methods", path)
		}
		for _, m := range methods {
			routes++
			if doc.Paths[path][strings.ToLower(m)] == nil {
				t.Errorf("the OpenAPI document does not list %s %s", m, path)
			}
		}
		return nil
	})
	if err != nil || routes < 10 {
		t.Fatalf("walked %d admin routes (%v), want them all", routes, err)
	}
}
