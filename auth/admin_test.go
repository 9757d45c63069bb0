package auth_test

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

const adminSecret = "auth-test-admin-secret-0123456789abcdef"

// TestAdminTokens signs an admin token and verifies it, and refuses
// tokens that are expired, signed with another key, or of another kind.
func TestAdminTokens(t *testing.T) {
	t.Parallel()
	keys := auth.NewAdminKeys(adminSecret, time.Minute)
	now := time.Now()
	token, exp, err := keys.Sign("ops", now)
	if err != nil {
		t.Fatal(err)
	}
	if exp.Sub(now) != time.Minute {
		t.Fatalf("the token expires %s after it was signed, want 1m", exp.Sub(now))
	}
	if user, err := keys.Verify(token); err != nil || user != "ops" {
		t.Fatalf("Verify of a fresh token: %q, %v", user, err)
	}
	old, _, err := keys.Sign("ops", now.Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(old); !errors.Is(err, auth.ErrTokenExpired) {
		t.Fatalf("Verify of an expired token: %v, want ErrTokenExpired", err)
	}
	other, _, err := auth.NewAdminKeys("another-admin-secret-0123456789abcdef", time.Minute).Sign("ops", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(other); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("Verify of a token signed with another secret: %v, want ErrInvalidToken", err)
	}
	client := signed(t, jwt.SigningMethodHS256, []byte(adminSecret), "", jwt.MapClaims{"sub": "ops", "exp": now.Add(time.Minute).Unix()})
	if _, err := keys.Verify(client); !errors.Is(err, auth.ErrWrongUse) {
		t.Fatalf("Verify of a client token signed with the admin secret: %v, want ErrWrongUse", err)
	}
	marked := signed(t, jwt.SigningMethodHS256, []byte(adminSecret), "", jwt.MapClaims{"sub": "ops", "aud": auth.AdminAudience,
		"iss": auth.AdminIssuer, "exp": now.Add(time.Minute).Unix()})
	if _, err := keys.Verify(marked); !errors.Is(err, auth.ErrWrongUse) {
		t.Fatalf("Verify of a token without token_use admin: %v, want ErrWrongUse", err)
	}
}

// TestClientTokensAreNotAdminTokens checks that a project's keyring
// refuses an admin token, even one signed with the project's own secret
// (which the config refuses as the admin secret), and still takes client
// tokens.
func TestClientTokensAreNotAdminTokens(t *testing.T) {
	t.Parallel()
	const secret = "auth-test-project-secret-0123456789abcdef"
	k := keyring(t, config.Secret{KID: "k1", Alg: "HS256", Secret: secret})
	for name, key := range map[string]string{"the admin secret": adminSecret, "the project's secret": secret} {
		token, _, err := auth.NewAdminKeys(key, time.Minute).Sign("ops", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.VerifyClient(token); !errors.Is(err, auth.ErrWrongUse) {
			t.Errorf("VerifyClient of an admin token signed with %s: %v, want ErrWrongUse", name, err)
		}
	}
	client := signed(t, jwt.SigningMethodHS256, []byte(secret), "k1", jwt.MapClaims{"sub": "c", "exp": time.Now().Add(time.Minute).Unix()})
	if _, err := k.VerifyClient(client); err != nil {
		t.Fatalf("VerifyClient of a client token: %v", err)
	}
}
