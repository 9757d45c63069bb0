package api

import (
	"bytes"
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 document of the admin API. Tests check the
// answers of running servers against it (package api/apitest), and that
// it lists every admin route.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the admin API's OpenAPI 3.1 document, as
// GET /v1/admin/openapi.json serves it.
func OpenAPI() []byte { return bytes.Clone(openAPI) }

// openapi answers the admin API's OpenAPI document.
func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI) // the client went away; nothing to do
}
