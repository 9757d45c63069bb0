package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/triggerd/triggerd/api/apitest"
)

// The admin API's answers are checked against its OpenAPI document (see
// package apitest): every answer any test gets from a /v1/admin path goes
// through apitest.CheckAdminAnswer (see fixture.send).

// servedByNode are the paths of the operations a server serves only once
// package node gives it what answers them (Server.UseTriggers,
// Server.UseSources): node's tests call each of them on real nodes, and
// check the answers against the document.
var servedByNode = []string{
	"/v1/admin/triggers",
	"/v1/admin/projects/{project}/triggers",
	"/v1/admin/projects/{project}/triggers/{name}",
	"/v1/admin/sources",
}

// TestOpenAPIDocument checks that the admin API serves its document, that
// it is OpenAPI 3.1, and that each operation it lists is served with the
// method it names (the answers themselves are checked in every test).
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if v := apitest.Version(t); v != "3.1.0" {
		t.Fatalf("the document says openapi %q, want 3.1.0", v)
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
	if resp.StatusCode != 200 || !bytes.Equal(served.Bytes(), raw) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/admin/openapi.json: %d, %s, %d bytes; want 200, application/json, openapi.json (%d bytes)",
			resp.StatusCode, resp.Header.Get("Content-Type"), served.Len(), len(raw))
	}
	concrete := strings.NewReplacer("{id}", "01a211bf-dcad-7096-8be2-560a397d449c", "{project}", "demo", "{name}", "open")
	// The live feed's 200 never ends; a parameter is refused at once.
	query := map[string]string{"/v1/admin/events/stream": "?served=1"}
	for _, op := range apitest.Operations(t) {
		status, out := f.do(t, op.Method, concrete.Replace(op.Path)+query[op.Path], `{}`, token)
		msg := fmt.Sprint(out["error"])
		notServed := status == 405 || strings.Contains(msg, "no such admin endpoint")
		if slices.Contains(servedByNode, op.Path) != notServed {
			t.Errorf("%s %s: %d %v; want it served unless node serves it (servedByNode)", op.Method, op.Path, status, out)
		}
	}
}
