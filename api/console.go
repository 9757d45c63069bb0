package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/triggerd/triggerd/api/console"
	"github.com/triggerd/triggerd/store"
)

// Mission Control, the web console, is served under consolePrefix. It
// logs in with the admin's user and password, and keeps a session in the
// store (store.ConsoleSession) that the browser holds as a cookie; the
// cookie then works for the admin API too, where every change must also
// carry the session's CSRF token in csrfHeader.
const (
	consolePrefix = "/mission-control"
	sessionCookie = "triggerd_session"
	csrfHeader    = "X-CSRF-Token"
	// maxSessionIdle ends a session unused for this long (or for the
	// config's session_ttl, if that is shorter).
	maxSessionIdle = time.Hour
)

// consoleSecurity is the console's Content-Security-Policy: everything
// from this origin only, no inline scripts or styles, not framed.
const consoleSecurity = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// consoleRoutes serves the console: its page and assets, and its login,
// session and logout. Without an admin section, every path under
// consolePrefix answers 404 saying how to enable it.
func (s *Server) consoleRoutes() {
	if s.cfg.Admin == nil {
		s.router.PathPrefix(consolePrefix).HandlerFunc(consoleDisabled)
		return
	}
	files := console.Files()
	page := func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		http.ServeFileFS(w, r, files, "index.html")
	}
	asset := func(w http.ResponseWriter, r *http.Request) {
		name := mux.Vars(r)["file"]
		if name == "index.html" || strings.Contains(name, "..") {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such file in Mission Control: %s", quote(name)))
			return
		}
		consoleHeaders(w)
		http.ServeFileFS(w, r, files, name)
	}
	s.router.Handle(consolePrefix, http.RedirectHandler(consolePrefix+"/", http.StatusPermanentRedirect)).Methods(http.MethodGet, http.MethodHead)
	s.router.HandleFunc(consolePrefix+"/", page).Methods(http.MethodGet, http.MethodHead)
	s.router.HandleFunc(consolePrefix+"/assets/{file:[A-Za-z0-9._-]+}", asset).Methods(http.MethodGet, http.MethodHead)
	s.router.HandleFunc(consolePrefix+"/session", s.consoleSession).Methods(http.MethodGet)
	s.router.HandleFunc(consolePrefix+"/login", s.consoleLogin).Methods(http.MethodPost)
	s.router.HandleFunc(consolePrefix+"/logout", s.consoleLogout).Methods(http.MethodPost)
}

// consoleDisabled answers the console's paths on a node without an admin
// section.
func consoleDisabled(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "Mission Control is not enabled on this node: it needs the admin API; add an admin section to the config "+
		"(admin: {user: ..., password: ${TRIGGERD_ADMIN_PASSWORD}, secret: ${TRIGGERD_ADMIN_SECRET}}) and restart it")
}

// consoleHeaders sets the headers of the console's files: its CSP, no
// sniffing, no framing, no referrer, and revalidation, so that a new
// version of triggerd serves its own console at once.
func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", consoleSecurity)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// consoleLogin checks the admin's user and password as POST
// /v1/admin/login does (same limits), then starts a session: its cookie,
// and an answer like consoleSession's.
func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "this login comes from another site's page: log in from Mission Control itself")
		return
	}
	user, now, ok := s.checkLogin(w, r)
	if !ok {
		return
	}
	id, err1 := randomToken()
	csrf, err2 := randomToken()
	if err := errors.Join(err1, err2); err != nil {
		s.log.Error("making a console session failed", "err", err)
		writeError(w, http.StatusInternalServerError, "the session could not be made; the node's log says why")
		return
	}
	sess := store.ConsoleSession{User: user, CSRF: csrf, CreatedAt: now,
		ExpiresAt: now.Add(s.cfg.Admin.SessionTTL.Std()), SeenAt: now}
	if err := s.store.CreateSession(r.Context(), sessionHash(id), sess, s.sessionIdle()); err != nil {
		s.storeFailed(w, r, "starting a console session", err)
		return
	}
	s.log.Info("admin logged in to Mission Control", "user", user, "addr", clientAddr(r))
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", Expires: sess.ExpiresAt,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
	s.writeSession(w, sess)
}

// consoleSession answers the session the cookie names: its user, its CSRF
// token, when it ends and the projects; 401 when there is none.
func (s *Server) consoleSession(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.readSession(w, r)
	if ok {
		s.writeSession(w, sess)
	}
}

// consoleLogout ends the session the cookie names, on every node, and
// clears the cookie. It needs the session's CSRF token, so that another
// site cannot log the admin out.
func (s *Server) consoleLogout(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.readSession(w, r)
	if !ok || !s.checkCSRF(w, r, sess) {
		return
	}
	c, _ := r.Cookie(sessionCookie)
	if err := s.store.DeleteSession(r.Context(), sessionHash(c.Value)); err != nil {
		s.storeFailed(w, r, "ending a console session", err)
		return
	}
	clearSessionCookie(w, r)
	s.log.Info("admin logged out of Mission Control", "user", sess.User, "addr", clientAddr(r))
	w.WriteHeader(http.StatusNoContent)
}

// writeSession answers with what the console needs to know of a session.
func (s *Server) writeSession(w http.ResponseWriter, sess store.ConsoleSession) {
	projects := make([]string, 0, len(s.cfg.Projects))
	for _, p := range s.cfg.Projects {
		projects = append(projects, p.ID)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"user":       sess.User,
		"csrf":       sess.CSRF,
		"expires_at": sess.ExpiresAt.UTC().Format(time.RFC3339),
		"projects":   projects,
	})
}

// requireSession lets a request of the admin API through with a live
// session's cookie, and, for a change, the session's CSRF token.
func (s *Server) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.readSession(w, r)
		if !ok || (!safeMethod(r.Method) && !s.checkCSRF(w, r, sess)) {
			return
		}
		next.ServeHTTP(w, r.WithContext(withAdminUser(r.Context(), sess.User)))
	})
}

// readSession reads the live session the request's cookie names. It
// answers the request and reports false when there is none (401, and the
// cookie is cleared), when the session is another user's (403), or when
// the store fails (503).
func (s *Server) readSession(w http.ResponseWriter, r *http.Request) (store.ConsoleSession, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		writeError(w, http.StatusUnauthorized, "not logged in: log in to Mission Control with the admin's user and password")
		return store.ConsoleSession{}, false
	}
	sess, err := s.store.Session(r.Context(), sessionHash(c.Value), time.Now(), s.sessionIdle())
	switch {
	case errors.Is(err, store.ErrNoSession):
		clearSessionCookie(w, r)
		writeError(w, http.StatusUnauthorized, "your Mission Control session has ended (logged out, expired or unused for too long): log in again")
		return store.ConsoleSession{}, false
	case err != nil:
		s.storeFailed(w, r, "reading a console session", err)
		return store.ConsoleSession{}, false
	case sess.User != s.admin.user:
		clearSessionCookie(w, r)
		writeError(w, http.StatusForbidden, fmt.Sprintf("the session is user %s's, who is no longer the admin user: log in again", quote(sess.User)))
		return store.ConsoleSession{}, false
	}
	return sess, true
}

// checkCSRF reports whether a change carries its session's CSRF token;
// it answers 403 when not.
func (s *Server) checkCSRF(w http.ResponseWriter, r *http.Request, sess store.ConsoleSession) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) != 1 {
		writeError(w, http.StatusForbidden, "a change made with Mission Control's session needs the header "+csrfHeader+
			": the csrf of GET "+consolePrefix+"/session (or send an admin token in Authorization instead of the cookie)")
		return false
	}
	return true
}

// sessionIdle is how long a session may go unused.
func (s *Server) sessionIdle() time.Duration {
	return min(maxSessionIdle, s.cfg.Admin.SessionTTL.Std())
}

// hasSessionCookie reports whether the request carries a session cookie.
func hasSessionCookie(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	return err == nil && c.Value != ""
}

// clearSessionCookie tells the browser to forget its session cookie.
func clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
}

// sessionHash is what the store keys a session by: the SHA-256 of its id.
func sessionHash(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return sum[:]
}

// randomToken is 32 random bytes, in base64url.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// overTLS reports whether the browser reached the node over TLS, itself
// or through a proxy that says so: the cookie is then Secure.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// sameOrigin reports whether a request's Origin, when it has one, is the
// host it was sent to.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// safeMethod reports whether a method only reads.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}
