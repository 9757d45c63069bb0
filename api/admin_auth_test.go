package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/auth"
)

// The admin of the nodes these tests start.
const (
	adminPassword = "admin-test-password"
	adminSecret   = "admin-test-secret-0123456789abcdef"
)

// adminSection is the config's admin section for setup's extra.
const adminSection = "admin: {user: ops, password: " + adminPassword + ", secret: " + adminSecret + "}\n"

// adminNode starts setup's node with the admin API enabled.
func adminNode(t *testing.T) *fixture {
	t.Helper()
	return setup(t, adminSection)
}

// login logs in as the admin and returns the Authorization header to send.
func (f *fixture) login(t *testing.T) string {
	t.Helper()
	status, out := f.post(t, "/v1/admin/login", `{"user":"ops","password":"`+adminPassword+`"}`, "")
	token, _ := out["token"].(string)
	if status != 200 || token == "" || out["token_type"] != "Bearer" {
		t.Fatalf("login: %d %v", status, out)
	}
	return "Bearer " + token
}

// adminToken signs an admin-like token with key and claims of the test's
// choosing, on top of a valid admin token's.
func adminToken(t *testing.T, key string, change func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "ops", "aud": auth.AdminAudience, "iss": auth.AdminIssuer, auth.UseClaim: auth.AdminUse,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}
	change(claims)
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + s
}

// TestAdminDisabled checks that without an admin section every admin path
// answers 404, saying how to enable the admin API.
func TestAdminDisabled(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/v1/admin/login"},
		{http.MethodGet, "/v1/admin/events"},
		{http.MethodGet, "/v1/admin"},
		{http.MethodDelete, "/v1/admin/anything/else"},
	} {
		status, out := f.do(t, c.method, c.path, `{"user":"ops","password":"x"}`, "")
		msg, _ := out["error"].(string)
		if status != 404 || !strings.Contains(msg, "the admin API is not enabled on this node: add an admin section") {
			t.Errorf("%s %s: %d %v, want 404 saying how to enable the admin API", c.method, c.path, status, out)
		}
	}
}

// TestAdminAuth checks every outcome of logging in and of presenting a
// token to the admin API, and that admin and project tokens are each
// refused where the other kind belongs.
func TestAdminAuth(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	good := f.login(t)
	if status, out := f.do(t, http.MethodGet, "/v1/admin/session", "", good); status != 200 || out["user"] != "ops" {
		t.Fatalf("a fresh admin token: %d %v", status, out)
	}

	expired := adminToken(t, adminSecret, func(c jwt.MapClaims) {
		c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
	})
	cases := []struct {
		name, authorization string
		status              int
		want                string
	}{
		{"no header", "", 401, "the admin API needs a token: log in with POST /v1/admin/login"},
		{"Bearer alone", "Bearer", 401, "the admin API needs a token"},
		{"basic", "Basic b3BzOnB3", 401, "the Authorization header must be Bearer <JWT>"},
		{"garbage", "Bearer not.a.jwt", 401, "bad token: invalid token"},
		{"expired", expired, 401, "bad token: token expired at"},
		{"project token", bearer(t, secret, "k1", time.Now().Add(time.Minute)), 401, "not an admin token (project tokens and X-SC-Token are not taken here)"},
		{"project token signed with the admin secret", bearer(t, adminSecret, "k1", time.Now().Add(time.Minute)), 401, "not an admin token"},
		{"delivery token", adminToken(t, secret, func(c jwt.MapClaims) {
			delete(c, "aud")
			delete(c, "iss")
			c[auth.UseClaim] = auth.DeliveryUse
		}), 401, "not an admin token"},
		{"admin claims, a project's secret", adminToken(t, secret, func(jwt.MapClaims) {}), 401, "bad token: invalid token: token signature is invalid"},
		{"no audience", adminToken(t, adminSecret, func(c jwt.MapClaims) { delete(c, "aud") }), 401, "bad token: invalid token: token has invalid claims: token is missing required claim: aud claim is required"},
		{"no token_use", adminToken(t, adminSecret, func(c jwt.MapClaims) { delete(c, auth.UseClaim) }), 401, "not an admin token (it lacks token_use: admin)"},
		{"no expiry", adminToken(t, adminSecret, func(c jwt.MapClaims) { delete(c, "exp") }), 401, "bad token: invalid token: token has invalid claims: token is missing required claim: exp claim is required"},
		{"other user", adminToken(t, adminSecret, func(c jwt.MapClaims) { c["sub"] = "eve" }), 403, `the token is user "eve"'s, who is no longer the admin user`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			status, out := f.do(t, http.MethodGet, "/v1/admin/session", "", c.authorization)
			msg, _ := out["error"].(string)
			if status != c.status || !strings.Contains(msg, c.want) {
				t.Fatalf("%d %v, want %d containing %q", status, out, c.status, c.want)
			}
		})
	}

	t.Run("admin token on the queue", func(t *testing.T) {
		t.Parallel()
		before := f.count(t)
		status, out := f.post(t, queue, `{"type":"authed"}`, good)
		msg, _ := out["error"].(string)
		if status != 401 || !strings.Contains(msg, "this is an admin token (token_use: admin), which only the admin API takes") {
			t.Fatalf("an admin token on the queue: %d %v, want 401 naming the admin token", status, out)
		}
		if n := f.count(t); n != before {
			t.Fatalf("a refused token stored %d rows", n-before)
		}
	})
}

// TestAdminLoginRefusals checks the answers to bad logins and bad bodies,
// and that failures are logged without the password.
func TestAdminLoginRefusals(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	cases := []struct {
		name, body string
		status     int
		want       string
	}{
		{"wrong password", `{"user":"ops","password":"wrong-password-1"}`, 401, "wrong user or password"},
		{"wrong user", `{"user":"root","password":"` + adminPassword + `"}`, 401, "wrong user or password"},
		{"no password", `{"user":"ops"}`, 400, "password is missing"},
		{"no user", `{"password":"x"}`, 400, "user is missing"},
		{"empty", ``, 400, "the body is empty: send a JSON object with the fields user, password"},
		{"null", `null`, 400, "the body is null"},
		{"malformed", `{"user":"ops",`, 400, "the body is not a JSON object"},
		{"array", `["ops"]`, 400, "the body is not a JSON object: found a JSON array"},
		{"unknown field", `{"user":"ops","password":"x","otp":1}`, 400, `unknown field "otp": the body takes user, password`},
		{"repeated field", `{"user":"ops","user":"root","password":"x"}`, 400, `field "user" appears twice`},
		{"wrong type", `{"user":"ops","password":12}`, 400, "password must be a string, not a JSON number"},
		{"trailing data", `{"user":"ops","password":"x"} {}`, 400, "the body has data after its JSON object"},
		{"too large", `{"user":"ops","password":"` + strings.Repeat("x", 5000) + `"}`, 413, "body is larger than the 4096-byte limit"},
	}
	for _, c := range cases {
		status, out := f.post(t, "/v1/admin/login", c.body, "")
		msg, _ := out["error"].(string)
		if status != c.status || !strings.Contains(msg, c.want) || out["token"] != nil {
			t.Errorf("%s: %d %v, want %d containing %q", c.name, status, out, c.status, c.want)
		}
	}
	log := f.log.String()
	if !strings.Contains(log, "admin login failed") || !strings.Contains(log, "addr=127.0.0.1") {
		t.Errorf("failed logins are not logged with the client's address:\n%s", log)
	}
	if strings.Contains(log, "wrong-password-1") || strings.Contains(log, adminPassword) {
		t.Errorf("the log shows a password:\n%s", log)
	}
	if status, out := f.do(t, http.MethodGet, "/v1/admin/login", "", ""); status != 405 {
		t.Errorf("GET /v1/admin/login: %d %v, want 405", status, out)
	}
	if status, out := f.do(t, http.MethodDelete, "/v1/admin/session", "", f.login(t)); status != 405 {
		t.Errorf("DELETE /v1/admin/session: %d %v, want 405", status, out)
	}
	if status, out := f.do(t, http.MethodGet, "/v1/admin/nothing-here", "", f.login(t)); status != 404 ||
		!strings.Contains(fmt.Sprint(out["error"]), "no such admin endpoint") {
		t.Errorf("an unknown admin path: %d %v, want 404", status, out)
	}
}

// TestAdminLoginRateLimit checks that after five failed logins from one
// address, its logins are refused for the rest of the minute, even with
// the right password.
func TestAdminLoginRateLimit(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	for i := range 5 {
		if status, out := f.post(t, "/v1/admin/login", `{"user":"ops","password":"wrong-password"}`, ""); status != 401 {
			t.Fatalf("failed login %d: %d %v, want 401", i+1, status, out)
		}
	}
	req, err := http.NewRequest(http.MethodPost, f.url+"/v1/admin/login", strings.NewReader(`{"user":"ops","password":"`+adminPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a login after five failures: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(f.log.String(), "too many failed logins") {
		t.Errorf("the refusal is not logged:\n%s", f.log.String())
	}
}

// TestAdminPasswordHash logs in against a bcrypt hash in the config.
func TestAdminPasswordHash(t *testing.T) {
	t.Parallel()
	// The bcrypt hash (cost 4) of adminPassword.
	const hash = "$2a$04$pFjcRMQ0c5Txv0wPI7JAn.ACW2.fB8LxA7m0yYTdnTuKqH/hwwyPe"
	f := setup(t, "admin: {user: ops, password_hash: '"+hash+"', secret: "+adminSecret+"}\n")
	f.login(t)
	if status, out := f.post(t, "/v1/admin/login", `{"user":"ops","password":"`+adminPassword+`x"}`, ""); status != 401 {
		t.Fatalf("a wrong password against the hash: %d %v", status, out)
	}
}
