package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 document of the admin API. A test checks
// the answers of a running server against it, and that it lists every
// admin route.
//
//go:embed openapi.json
var openAPI []byte

// openapi answers the admin API's OpenAPI document.
func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI) // the client went away; nothing to do
}
