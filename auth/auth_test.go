package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

// rsaFiles writes a fresh RSA key pair as PEM files and returns their paths
// and the key.
func rsaFiles(t *testing.T) (privPath, pubPath string, key *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privPath, pubPath = filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub")
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	pkix, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o600); err != nil {
		t.Fatal(err)
	}
	return privPath, pubPath, key
}

func keyring(t *testing.T, secrets ...config.Secret) *auth.Keyring {
	t.Helper()
	k, err := auth.NewKeyring(secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signed signs claims with method and key, with kid when not empty.
func signed(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tk := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tk.Header["kid"] = kid
	}
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var hs = config.Secret{KID: "h1", Alg: "HS256", Secret: "first-secret-0123456789abcdefghij"}

func TestHS256RoundTripAndRotation(t *testing.T) {
	t.Parallel()
	old := config.Secret{KID: "h0", Alg: "HS256", Secret: "retired-secret-0123456789abcdefgh"}
	k := keyring(t, hs, old)
	tok, err := k.Sign(jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if claims, err := k.VerifyClient(tok); err != nil || claims["sub"] != "a" {
		t.Fatalf("own token: %v %v", claims, err)
	}
	// A token signed with the second (rotated-out) secret still verifies, by kid or without one.
	for _, kid := range []string{"h0", ""} {
		if _, err := k.VerifyClient(signed(t, jwt.SigningMethodHS256, []byte(old.Secret), kid, jwt.MapClaims{"sub": "b"})); err != nil {
			t.Errorf("second secret, kid %q: %v", kid, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	_, pub, key := rsaFiles(t)
	rs := config.Secret{KID: "r1", Alg: "RS256", PublicKeyFile: pub}
	k := keyring(t, hs, rs)
	pubPEM, _ := os.ReadFile(pub)
	cases := []struct {
		name  string
		token string
		want  error
		says  string
	}{
		{"garbage", "abc.def", auth.ErrInvalidToken, ""},
		{"bad signature", signed(t, jwt.SigningMethodHS256, []byte("wrong-secret-0123456789abcdefghij"), "h1", jwt.MapClaims{}), auth.ErrInvalidToken, "signature"},
		{"unknown kid", signed(t, jwt.SigningMethodHS256, []byte(hs.Secret), "nope", jwt.MapClaims{}), auth.ErrUnknownKey, `"nope"`},
		{"expired", signed(t, jwt.SigningMethodHS256, []byte(hs.Secret), "h1", jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()}), auth.ErrTokenExpired, "expired at"},
		{"not yet valid", signed(t, jwt.SigningMethodHS256, []byte(hs.Secret), "h1", jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()}), auth.ErrInvalidToken, ""},
		// Alg confusion: an HS256 token keyed with the RSA public key's PEM, naming the RSA secret.
		{"alg confusion", signed(t, jwt.SigningMethodHS256, pubPEM, "r1", jwt.MapClaims{}), auth.ErrInvalidToken, "alg"},
		{"none", signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "h1", jwt.MapClaims{}), auth.ErrInvalidToken, ""},
		{"RS256 with wrong key", signed(t, jwt.SigningMethodRS256, mustKey(t), "r1", jwt.MapClaims{}), auth.ErrInvalidToken, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := k.VerifyClient(c.token)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want %v saying %q", err, c.want, c.says)
			}
		})
	}
	// The RSA secret verifies a token signed with its private key.
	if _, err := k.VerifyClient(signed(t, jwt.SigningMethodRS256, key, "r1", jwt.MapClaims{})); err != nil {
		t.Fatalf("RS256 token: %v", err)
	}
}

func mustKey(t *testing.T) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRS256SignsWithPrivateKeyOnly(t *testing.T) {
	t.Parallel()
	priv, _, key := rsaFiles(t)
	k := keyring(t, config.Secret{KID: "r1", Alg: "RS256", PrivateKeyFile: priv})
	tok, err := k.NodeToken("node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return &key.PublicKey, nil }, jwt.WithValidMethods([]string{"RS256"}))
	if err != nil || parsed.Header["kid"] != "r1" {
		t.Fatalf("a receiver with the public key: %v %v", parsed, err)
	}
	if _, err := k.VerifyDelivery(tok); err != nil {
		t.Fatalf("the private key's public half verifies: %v", err)
	}
}

func TestBadKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "ec.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		secret config.Secret
		says   string
	}{
		{config.Secret{KID: "a", Alg: "RS256", PrivateKeyFile: filepath.Join(dir, "missing.pem")}, "secrets[0] (kid a): private_key_file"},
		{config.Secret{KID: "b", Alg: "RS256", PublicKeyFile: notPEM}, "no PEM block"},
		{config.Secret{KID: "c", Alg: "RS256", PublicKeyFile: cert}, "not a PKIX or PKCS#1 public key"},
		{config.Secret{KID: "d", Alg: "RS256", PrivateKeyFile: cert}, "not a PKCS#1 or PKCS#8 private key"},
	}
	for _, c := range cases {
		_, err := auth.NewKeyring([]config.Secret{c.secret}, nil)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: got %v, want %q", c.secret.KID, err, c.says)
		}
	}
}

func TestNodeTokenIsReusedForAMinute(t *testing.T) {
	t.Parallel()
	k := keyring(t, hs)
	now := time.Now()
	first, err := k.NodeToken("node-1", now)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := k.VerifyDelivery(first)
	if err != nil || claims["id"] != "node-1" {
		t.Fatalf("claims %v %v", claims, err)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if exp.Sub(iat.Time) != 2*time.Minute {
		t.Errorf("token lives %s, want 2m", exp.Sub(iat.Time))
	}
	if same, _ := k.NodeToken("node-1", now.Add(59*time.Second)); same != first {
		t.Error("token not reused within a minute")
	}
	if fresh, _ := k.NodeToken("node-1", now.Add(61*time.Second)); fresh == first {
		t.Error("token reused after a minute")
	}
	if other, _ := k.NodeToken("node-2", now.Add(61*time.Second)); other == first {
		t.Error("another node id got the same token")
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := k.NodeToken("node-1", now.Add(time.Duration(i)*time.Second)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestTokensOfOneKindDoNotPassForTheOther: the X-SC-Token of a delivery
// and a client's bearer token are signed with the same secret, and each
// verifier takes only its own kind.
func TestTokensOfOneKindDoNotPassForTheOther(t *testing.T) {
	t.Parallel()
	k := keyring(t, hs)
	delivery, err := k.NodeToken("node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client, err := k.Sign(jwt.MapClaims{"sub": "app", "exp": time.Now().Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.VerifyClient(delivery); !errors.Is(err, auth.ErrWrongUse) || !strings.Contains(err.Error(), "X-SC-Token") {
		t.Errorf("a delivery token as a client token: %v", err)
	}
	if _, err := k.VerifyDelivery(client); !errors.Is(err, auth.ErrWrongUse) {
		t.Errorf("a client token as a delivery token: %v", err)
	}
	if _, err := k.VerifyClient(client); err != nil {
		t.Errorf("a client token: %v", err)
	}
	if claims, err := k.VerifyDelivery(delivery); err != nil || claims[auth.UseClaim] != auth.DeliveryUse {
		t.Errorf("a delivery token: %v %v", claims, err)
	}
	// A receiver that knows nothing of the mark verifies it as before.
	if _, err := jwt.Parse(delivery, func(*jwt.Token) (any, error) { return []byte(hs.Secret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()); err != nil {
		t.Errorf("a plain receiver: %v", err)
	}
}

// TestWarnsOfAPrivateKeyEveryoneCanRead: a private key file that every user
// may read is used, with a warning that says how to fix it; one only its
// owner reads brings no warning.
func TestWarnsOfAPrivateKeyEveryoneCanRead(t *testing.T) {
	t.Parallel()
	priv, _, _ := rsaFiles(t)
	for mode, warned := range map[os.FileMode]bool{0o600: false, 0o640: false, 0o644: true} {
		if err := os.Chmod(priv, mode); err != nil {
			t.Fatal(err)
		}
		var logs strings.Builder
		_, err := auth.NewKeyring([]config.Secret{{KID: "r1", Alg: "RS256", PrivateKeyFile: priv}},
			slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		said := strings.Contains(logs.String(), "readable by every user") && strings.Contains(logs.String(), "chmod 600")
		if said != warned {
			t.Errorf("mode %04o: log %q, want a warning: %v", mode, logs.String(), warned)
		}
	}
}
