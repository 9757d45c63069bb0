package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/triggerd/triggerd/config"
)

// adminBase is a valid config whose admin section is appended by each case.
const adminBase = "store: {url: postgres://x}\nprojects:\n  - id: p\n    secrets: [{kid: k, alg: HS256, secret: " + longSecret + "}]\n"

// adminSecret is an admin secret long enough to be accepted.
const adminSecret = "admin-test-secret-0123456789abcdef"

// adminHash is the bcrypt hash (cost 4) of "correct horse battery".
const adminHash = "$2a$04$ao2anfUZ4DDgZFcPU8D0hO/isdEDhz5FJDxJDmmJOh4rNf3lEWTcO"

// TestAdminSection reads the admin section: absent, it leaves the admin
// API off; given, it takes a password or its hash, ${VAR}s, and a token
// lifetime of 15 minutes unless it says otherwise.
func TestAdminSection(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(adminBase), env(nil))
	if err != nil || cfg.Admin != nil {
		t.Fatalf("without an admin section: %+v, %v; want no admin", cfg.Admin, err)
	}
	cfg, err = config.Parse("t.yaml", []byte(adminBase+"admin:\n"), env(nil))
	if err != nil || cfg.Admin != nil {
		t.Fatalf("with an empty admin section: %+v, %v; want no admin", cfg.Admin, err)
	}
	cfg, err = config.Parse("t.yaml", []byte(adminBase+"admin: {user: ops, password: '${PW}', secret: '${S}'}\n"),
		env(map[string]string{"PW": "correct horse battery", "S": adminSecret}))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a == nil || a.User != "ops" || a.Password != "correct horse battery" || a.Secret != adminSecret ||
		a.TokenTTL.Std() != 15*time.Minute || a.PasswordHash != "" {
		t.Fatalf("admin read as %+v", a)
	}
	cfg, err = config.Parse("t.yaml", []byte(adminBase+"admin: {user: ops, password_hash: '"+adminHash+"', secret: "+adminSecret+", token_ttl: 2m}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a.PasswordHash != adminHash || a.TokenTTL.Std() != 2*time.Minute {
		t.Fatalf("admin read as %+v", a)
	}
}

// TestAdminErrors checks that each bad admin section is refused naming
// the key and what to do, and that no error shows a password, a hash or
// the secret.
func TestAdminErrors(t *testing.T) {
	t.Parallel()
	const hidden = "hunter2-hunter2-hunter2"
	admin := func(keys string) string { return adminBase + "admin: {" + keys + "}\n" }
	cases := []struct{ name, text, want string }{
		{"no user", admin("password: " + hidden + ", secret: " + adminSecret), `admin.user: "" is not a valid user name`},
		{"bad user", admin("user: 'a b', password: " + hidden + ", secret: " + adminSecret), `admin.user: "a b" is not a valid user name`},
		{"no password", admin("user: ops, secret: " + adminSecret), "admin.password: is required, or password_hash"},
		{"both", admin("user: ops, password: " + hidden + ", password_hash: '" + adminHash + "', secret: " + adminSecret), "admin.password_hash: give password or password_hash, not both"},
		{"short password", admin("user: ops, password: hunter2, secret: " + adminSecret), "admin.password: is too short: use at least 12 characters"},
		{"long password", admin("user: ops, password: " + strings.Repeat(hidden, 4) + ", secret: " + adminSecret), "admin.password: is longer than 72 bytes"},
		{"bad hash", admin("user: ops, password_hash: '$2a$" + hidden + "', secret: " + adminSecret), "admin.password_hash: is not a bcrypt hash"},
		{"no secret", admin("user: ops, password: " + hidden), "admin.secret: is required: it signs admin tokens"},
		{"short secret", admin("user: ops, password: " + hidden + ", secret: " + hidden), "admin.secret: is too short: it needs at least 32 random bytes"},
		{"project's secret", admin("user: ops, password: " + hidden + ", secret: " + longSecret), "admin.secret: is also the secret of projects[0].secrets[0] (kid k): give the admin API a secret of its own"},
		{"zero ttl", admin("user: ops, password: " + hidden + ", secret: " + adminSecret + ", token_ttl: 0s"), "admin.token_ttl: must be more than 0"},
		{"long ttl", admin("user: ops, password: " + hidden + ", secret: " + adminSecret + ", token_ttl: 25h"), "admin.token_ttl: must be at most 24h0m0s"},
		{"unknown key", admin("user: ops, pasword: " + hidden), `admin: unknown key "pasword" (known keys: user, password, password_hash, secret, token_ttl, session_ttl)`},
		{"zero session ttl", admin("user: ops, password: " + hidden + ", secret: " + adminSecret + ", session_ttl: 0s"), "admin.session_ttl: must be more than 0"},
		{"long session ttl", admin("user: ops, password: " + hidden + ", secret: " + adminSecret + ", session_ttl: 169h"), "admin.session_ttl: must be at most 168h0m0s"},
		{"password of the wrong kind", admin("user: ops, password: [" + hidden + "], secret: " + adminSecret), "admin.password: want a single value"},
		{"password from a missing variable", admin("user: ops, password: '${NOPE}', secret: " + adminSecret), "admin.password: environment variable NOPE is not set"},
		{"not a mapping", adminBase + "admin: " + hidden + "\n", "admin: want keys and values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse("t.yaml", []byte(c.text), env(nil))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "t.yaml: line ") {
				t.Fatalf("want an error naming the file and line and containing %q, got %v\n%s", c.want, err, c.text)
			}
			if strings.Contains(err.Error(), hidden) || strings.Contains(err.Error(), adminSecret) || strings.Contains(err.Error(), "$2a$04$") {
				t.Fatalf("the error shows a secret: %v", err)
			}
		})
	}
}
