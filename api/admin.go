package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
)

// adminPrefix begins every path of the admin API.
const adminPrefix = "/v1/admin"

// adminRoutes sets up /v1/admin/...: without an admin section in the
// config, every path there answers 404 saying how to enable it. With one,
// POST /v1/admin/login hands out admin tokens, and every route added with
// adminRoute needs one (requireAdmin); New's NotFoundHandler answers the
// other paths under /v1/admin with adminNotFound.
func (s *Server) adminRoutes() {
	if s.cfg.Admin == nil {
		s.router.Path(adminPrefix).HandlerFunc(adminDisabled)
		s.router.PathPrefix(adminPrefix + "/").HandlerFunc(adminDisabled)
		return
	}
	s.admin = newAdminAuth(s.cfg.Admin)
	s.router.HandleFunc(adminPrefix+"/login", s.login).Methods(http.MethodPost)
	s.adminRoute("/session", s.session, http.MethodGet)
	s.adminRoute("/openapi.json", s.openapi, http.MethodGet)
	s.eventRoutes()
}

// adminRoute adds a route of the admin API at adminPrefix+path that needs
// an admin token: h runs only for requests that carry one, and adminUser
// tells it whose it is. (The routes sit on the top router: a mux
// subrouter would answer 404 instead of 405 to a method a path does not
// take.)
func (s *Server) adminRoute(path string, h http.HandlerFunc, methods ...string) {
	s.router.Handle(adminPrefix+path, s.requireAdmin(h)).Methods(methods...)
}

// adminDisabled answers every admin path of a node without an admin section.
func adminDisabled(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "the admin API is not enabled on this node: add an admin section to the config "+
		"(admin: {user: ..., password: ${TRIGGERD_ADMIN_PASSWORD}, secret: ${TRIGGERD_ADMIN_SECRET}}) and restart it; the README's Admin API section says more")
}

// adminNotFound answers an admin path that names no route.
func adminNotFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("no such admin endpoint: %s %s (GET %s/openapi.json lists them)",
		clip(r.Method), quote(r.URL.EscapedPath()), adminPrefix))
}

// session answers who the token is for: a cheap check that a token works.
func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"user": adminUser(r)})
}

// readJSON reads a request body that is one JSON object into dst, a
// pointer to a struct whose json tags name the fields the body may have.
// It answers the request and reports false when the body is too large
// (413), or is not such an object: an unknown or repeated field, a value
// of the wrong type (400, naming the field).
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	body, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if msg := checkJSONBody(body, dst); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// checkJSONBody decodes body into dst as readJSON does, and says what is
// wrong with it; "" when nothing is.
func checkJSONBody(body []byte, dst any) string {
	fields := jsonFields(reflect.TypeOf(dst).Elem())
	described := strings.Join(fields, ", ")
	switch string(trimJSONSpace(body)) {
	case "":
		return "the body is empty: send a JSON object with the fields " + described
	case "null":
		return "the body is null: send a JSON object with the fields " + described
	}
	if i := invalidUTF8(body); i >= 0 {
		return fmt.Sprintf("the body is not valid UTF-8 at byte offset %d (%#x): JSON text must be UTF-8", i, body[i])
	}
	if _, err := decodeFields(body, fields, described); err != nil {
		return err.Error()
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return fmt.Sprintf("%s must be %s, not a JSON %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value)
		}
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return "unknown field " + field
		}
		return "the body is not a JSON object: " + describeJSONError(err)
	}
	return ""
}

// jsonFields lists the json names of a struct's fields.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// jsonKind says what JSON value a Go type takes, for error messages.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Pointer:
		return jsonKind(t.Elem()) + " or null"
	}
	return "an object"
}
