package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

// adminAuth checks the admin's logins and tokens. Set by New; read-only
// after, but for the limiter, which has its own lock.
type adminAuth struct {
	user string
	// hash is the bcrypt hash of the password, when the config gives one;
	// otherwise sum is the SHA-256 of the password it gives.
	hash    []byte
	sum     [sha256.Size]byte
	keys    *auth.AdminKeys
	limiter *loginLimiter
}

func newAdminAuth(a *config.Admin) *adminAuth {
	aa := &adminAuth{user: a.User, keys: auth.NewAdminKeys(a.Secret, a.TokenTTL.Std()),
		limiter: newLoginLimiter(loginFailures, loginWindow)}
	if a.PasswordHash != "" {
		aa.hash = []byte(a.PasswordHash)
	} else {
		aa.sum = sha256.Sum256([]byte(a.Password))
	}
	return aa
}

// check reports whether user and password are the admin's. It takes as
// long for a wrong user as for a wrong password.
func (a *adminAuth) check(user, password string) bool {
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(a.user)) == 1
	var passwordOK bool
	if a.hash != nil {
		passwordOK = bcrypt.CompareHashAndPassword(a.hash, []byte(password)) == nil
	} else {
		sum := sha256.Sum256([]byte(password))
		passwordOK = subtle.ConstantTimeCompare(sum[:], a.sum[:]) == 1
	}
	return userOK && passwordOK
}

// The login rate limit: after loginFailures failed logins from one client
// address within loginWindow, its logins are refused (429) until the
// window that began with its first failure ends.
const (
	loginFailures = 5
	loginWindow   = time.Minute
	// maxLimited bounds the addresses the limiter remembers; past it, an
	// address it does not know is refused until windows end, rather than
	// let a flood of addresses grow the map without bound.
	maxLimited = 100_000
)

// loginLimiter counts failed logins per client address.
type loginLimiter struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	fails map[string]*loginFails
}

// loginFails is one address's failures since start.
type loginFails struct {
	start time.Time
	count int
}

func newLoginLimiter(maxFails int, window time.Duration) *loginLimiter {
	return &loginLimiter{max: maxFails, window: window, fails: make(map[string]*loginFails)}
}

// wait is how long addr must wait before its next login is checked; zero
// when it may try now.
func (l *loginLimiter) wait(addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[addr]
	switch {
	case f == nil && len(l.fails) >= maxLimited:
		l.prune(now)
		if len(l.fails) >= maxLimited {
			return l.window
		}
	case f == nil || now.Sub(f.start) >= l.window:
		return 0
	case f.count >= l.max:
		return f.start.Add(l.window).Sub(now)
	}
	return 0
}

// fail counts a failed login from addr.
func (l *loginLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[addr]
	if f == nil || now.Sub(f.start) >= l.window {
		if len(l.fails) >= maxLimited {
			l.prune(now)
		}
		f = &loginFails{start: now}
		l.fails[addr] = f
	}
	f.count++
}

// succeed forgets addr's failures.
func (l *loginLimiter) succeed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, addr)
}

// prune drops the windows that have ended; the caller holds l.mu.
func (l *loginLimiter) prune(now time.Time) {
	for addr, f := range l.fails {
		if now.Sub(f.start) >= l.window {
			delete(l.fails, addr)
		}
	}
}

// clientAddr is the address a request came from, without its port: the
// peer of the connection (a proxy in front of triggerd is one address).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// loginRequest is the body of POST /v1/admin/login.
type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// login answers a user and password with an admin token. Failures are
// logged without the password, and limited per client address.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	user, now, ok := s.checkLogin(w, r)
	if !ok {
		return
	}
	token, exp, err := s.admin.keys.Sign(user, now)
	if err != nil {
		s.log.Error("signing an admin token failed", "err", err)
		writeError(w, http.StatusInternalServerError, "the token could not be signed; the node's log says why")
		return
	}
	s.log.Info("admin logged in", "user", user, "addr", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]any{
		"token":      token,
		"token_type": "Bearer",
		"expires_at": exp.UTC().Format(time.RFC3339),
		"expires_in": int(exp.Sub(now).Seconds()),
	})
}

// checkLogin reads a login's user and password from the body and checks
// them, limiting failures per client address. It answers the request
// and reports false unless they are the admin's.
func (s *Server) checkLogin(w http.ResponseWriter, r *http.Request) (user string, now time.Time, ok bool) {
	addr, now := clientAddr(r), time.Now()
	if wait := s.admin.limiter.wait(addr, now); wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		s.log.Warn("admin login refused: too many failed logins from this address", "addr", addr)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed logins from this address (%d within %s): try again in %d s", loginFailures, loginWindow, secs))
		return "", now, false
	}
	var req loginRequest
	if !s.readJSON(w, r, &req) {
		return "", now, false
	}
	switch {
	case req.User == "":
		writeError(w, http.StatusBadRequest, `user is missing: send {"user": "...", "password": "..."}`)
		return "", now, false
	case req.Password == "":
		writeError(w, http.StatusBadRequest, `password is missing: send {"user": "...", "password": "..."}`)
		return "", now, false
	}
	if !s.admin.check(req.User, req.Password) {
		s.admin.limiter.fail(addr, now)
		s.log.Warn("admin login failed: wrong user or password", "user", clip(req.User), "addr", addr)
		writeError(w, http.StatusUnauthorized, "wrong user or password")
		return "", now, false
	}
	s.admin.limiter.succeed(addr)
	return req.User, now, true
}

// adminUserKey keys the admin's user name in a request's context.
type adminUserKey struct{}

// adminUser is the user whose admin token the request carried (for
// audit records); requireAdmin put it there.
func adminUser(r *http.Request) string {
	u, _ := r.Context().Value(adminUserKey{}).(string)
	return u
}

// withAdminUser puts the admin's user name in a request's context.
func withAdminUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, adminUserKey{}, user)
}

// requireAdmin lets a request through only with a valid admin token in
// Authorization: Bearer, or, without that header, Mission Control's
// session cookie (requireSession); it puts the user in the request's
// context.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(status int, msg string) {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="triggerd-admin"`)
			}
			writeError(w, status, msg)
		}
		token, err := bearerToken(r)
		switch {
		case errors.Is(err, errNoToken) && hasSessionCookie(r):
			s.requireSession(next).ServeHTTP(w, r)
			return
		case errors.Is(err, errNoToken):
			refuse(http.StatusUnauthorized, "the admin API needs a token: log in with POST /v1/admin/login, then send Authorization: Bearer <token>")
			return
		case err != nil:
			refuse(http.StatusUnauthorized, err.Error())
			return
		}
		user, err := s.admin.keys.Verify(token)
		if err != nil {
			refuse(http.StatusUnauthorized, fmt.Sprintf("bad token: %v", err))
			return
		}
		if user != s.admin.user {
			refuse(http.StatusForbidden, fmt.Sprintf("the token is user %s's, who is no longer the admin user: log in again", quote(user)))
			return
		}
		next.ServeHTTP(w, r.WithContext(withAdminUser(r.Context(), user)))
	})
}

// Why bearerToken found no token.
var (
	errNoToken   = errors.New("no token")
	errNotBearer = errors.New("the Authorization header must be Bearer <JWT>")
)

// bearerToken reads the token of an Authorization: Bearer header. A
// missing header, or "Bearer" alone (Space Cloud's Go client sends it
// until it has a token), is errNoToken; another scheme errNotBearer.
func bearerToken(r *http.Request) (string, error) {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	scheme, token, _ := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	switch {
	case h == "" || (strings.EqualFold(scheme, "Bearer") && token == ""):
		return "", errNoToken
	case !strings.EqualFold(scheme, "Bearer"):
		return "", errNotBearer
	}
	return token, nil
}
