package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

// FuzzVerify feeds both verifiers tokens of every shape: each accepts a
// token only when the project's secret really signed it, never a token of
// the other kind, and says what is wrong in a bounded, printable message.
func FuzzVerify(f *testing.F) {
	other := config.Secret{KID: "h2", Alg: "HS256", Secret: "second-secret-0123456789abcdefghij"}
	k, err := auth.NewKeyring([]config.Secret{hs, other}, nil)
	if err != nil {
		f.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
		tk := jwt.NewWithClaims(method, claims)
		for name, v := range header {
			tk.Header[name] = v
		}
		s, err := tk.SignedString(key)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	now := time.Now()
	delivery, err := k.NodeToken("node-1", now)
	if err != nil {
		f.Fatal(err)
	}
	secret := []byte(hs.Secret)
	kid := map[string]any{"kid": "h1"}
	for _, seed := range []string{
		delivery,
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{"sub": "app"}),
		sign(jwt.SigningMethodHS256, secret, nil, jwt.MapClaims{"sub": "no kid"}),
		sign(jwt.SigningMethodHS256, []byte(other.Secret), map[string]any{"kid": "h2"}, jwt.MapClaims{}),
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{auth.UseClaim: auth.DeliveryUse}),
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{auth.UseClaim: "client"}),
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()}),
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}),
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{"iat": now.Add(time.Hour).Unix()}),
		sign(jwt.SigningMethodHS256, secret, kid, jwt.MapClaims{"exp": "tomorrow"}),
		sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": 7}, jwt.MapClaims{}),
		sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": "nope"}, jwt.MapClaims{}),
		sign(jwt.SigningMethodHS384, secret, kid, jwt.MapClaims{}),
		sign(jwt.SigningMethodHS256, []byte("a"), kid, jwt.MapClaims{}),
		sign(jwt.SigningMethodRS256, rsaKey, kid, jwt.MapClaims{}),
		sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, jwt.MapClaims{}),
		sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": "h1\x00\xff"}, jwt.MapClaims{}),
		"", ".", "..", "a.b.c", "abc.def", "eyJhbGciOiJIUzI1NiJ9..", "eyJ9.eyJ9.", strings.Repeat("A", 4096),
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "\x00.\xff.\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		clientClaims, clientErr := k.VerifyClient(token)
		deliveryClaims, deliveryErr := k.VerifyDelivery(token)
		if clientErr == nil && deliveryErr == nil {
			t.Fatalf("both kinds took %q", token)
		}
		if clientErr == nil && (clientClaims[auth.UseClaim] == auth.DeliveryUse || !signedByProject(token)) {
			t.Fatalf("VerifyClient took %q, claims %v", token, clientClaims)
		}
		if deliveryErr == nil && (deliveryClaims[auth.UseClaim] != auth.DeliveryUse || !signedByProject(token)) {
			t.Fatalf("VerifyDelivery took %q, claims %v", token, deliveryClaims)
		}
		for _, err := range []error{clientErr, deliveryErr} {
			if err == nil {
				continue
			}
			msg := err.Error()
			if len(msg) > 600+2*len(token) || !utf8.ValidString(msg) && utf8.ValidString(token) {
				t.Fatalf("message for %q: %q", token, msg)
			}
		}
	})
}

// signedByProject checks a token as a plain verifier would, with each
// HS256 secret of the fuzzed project in turn.
func signedByProject(token string) bool {
	for _, secret := range []string{hs.Secret, "second-secret-0123456789abcdefghij"} {
		_, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return []byte(secret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(10*time.Second), jwt.WithIssuedAt())
		if err == nil {
			return true
		}
	}
	return false
}
