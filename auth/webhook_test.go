package auth_test

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/triggerd/triggerd/auth"
)

// whsec returns a Standard Webhooks secret of n random bytes.
func whsec(t *testing.T, n int) string {
	key := make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// TestWebhookSignatures checks signatures against the Standard Webhooks
// reference verifier: each live secret verifies them, an unknown one, a
// changed body, id or timestamp does not, nor one older than the
// verifier's tolerance (5 minutes).
func TestWebhookSignatures(t *testing.T) {
	t.Parallel()
	newer, older, other := whsec(t, 32), whsec(t, 24), whsec(t, 64)
	s, err := auth.NewWebhookSigner([]string{newer, older})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"specversion":"1.0","id":"01a211bf-dcad-709e-af15-84194c36f6b0","data":{"to":"user1@email.com"}}`)
	const id = "01a211bf-dcad-709e-af15-84194c36f6b0"
	verify := func(secret string, body []byte, h http.Header) error {
		t.Helper()
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		return wh.Verify(body, h)
	}
	h := http.Header{}
	s.Sign(h, id, time.Now(), body)
	if sigs := strings.Split(h.Get("webhook-signature"), " "); len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
		t.Fatalf("webhook-signature %q: want two v1 signatures", h.Get("webhook-signature"))
	}
	if h.Get("webhook-id") != id {
		t.Fatalf("webhook-id %q", h.Get("webhook-id"))
	}
	for _, secret := range []string{newer, older} {
		if err := verify(secret, body, h); err != nil {
			t.Errorf("a live secret does not verify the signature: %v", err)
		}
	}
	if err := verify(other, body, h); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("another secret: %v, want %v", err, standardwebhooks.ErrNoMatchingSignature)
	}
	changed := []byte(strings.Replace(string(body), "user1", "user2", 1))
	if err := verify(newer, changed, h); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("a changed body: %v, want %v", err, standardwebhooks.ErrNoMatchingSignature)
	}
	otherID := h.Clone()
	otherID.Set("webhook-id", "01a211bf-dcad-709e-af15-84194c36f6b1")
	if err := verify(newer, body, otherID); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("another id: %v, want %v", err, standardwebhooks.ErrNoMatchingSignature)
	}

	// Signed 6 minutes ago: a replay, refused although its signature holds.
	old := http.Header{}
	s.Sign(old, id, time.Now().Add(-6*time.Minute), body)
	if err := verify(newer, body, old); !errors.Is(err, standardwebhooks.ErrMessageTooOld) {
		t.Errorf("a signature 6 minutes old: %v, want %v", err, standardwebhooks.ErrMessageTooOld)
	}
	wh, _ := standardwebhooks.NewWebhook(newer)
	if err := wh.VerifyIgnoringTimestamp(body, old); err != nil {
		t.Errorf("the old signature itself does not verify: %v", err)
	}
	// Its timestamp moved to now: the signature no longer matches.
	moved := old.Clone()
	moved.Set("webhook-timestamp", h.Get("webhook-timestamp"))
	if err := verify(newer, body, moved); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("a moved timestamp: %v, want %v", err, standardwebhooks.ErrNoMatchingSignature)
	}
}

// TestWebhookSignerConcurrent signs from many goroutines at once: each
// signature verifies (the signer reuses its HMACs).
func TestWebhookSignerConcurrent(t *testing.T) {
	t.Parallel()
	secret := whsec(t, 32)
	s, err := auth.NewWebhookSigner([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	wh, _ := standardwebhooks.NewWebhook(secret)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 200 {
				body := []byte(strings.Repeat("x", g*100+i))
				h := http.Header{}
				s.Sign(h, "id", time.Now(), body)
				if e := wh.Verify(body, h); e != nil && err == nil {
					err = e
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestNewWebhookSignerRefusesBadSecrets checks that a bad secret is an
// error that does not show it.
func TestNewWebhookSignerRefusesBadSecrets(t *testing.T) {
	t.Parallel()
	for _, secrets := range [][]string{nil, {"whsec_hunter2"}, {whsec(t, 32), "hunter2"}, {"whsec_" + base64.StdEncoding.EncodeToString([]byte("hunter2-is-short"))}} {
		_, err := auth.NewWebhookSigner(secrets)
		if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "aHVudGVy") {
			t.Errorf("%d secrets: want an error that does not show them, got %v", len(secrets), err)
		}
	}
}

// BenchmarkWebhookSign signs a CloudEvent-sized body with two secrets, as
// a delivery during a rotation is.
func BenchmarkWebhookSign(b *testing.B) {
	key := make([]byte, 32)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	s, err := auth.NewWebhookSigner([]string{secret, secret})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"specversion":"1.0","id":"01a22c96-e025-7a4a-873f-46930e93e63d","type":"sent-email","source":"node-1","time":"2026-11-30T13:13:35.013Z","datacontenttype":"application/json","data":{"to":"user1@email.com"}}`)
	h := http.Header{}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(h, "01a22c96-e025-7a4a-873f-46930e93e63d", now, body)
	}
}
