package dispatch_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/triggerd/triggerd/dispatch"
	"github.com/triggerd/triggerd/store"
)

// newWebhookSecret returns a Standard Webhooks secret of 32 random bytes.
func newWebhookSecret(t *testing.T) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// signedRequest is a delivery as a receiver got it.
type signedRequest struct {
	header http.Header
	body   []byte
}

// TestStandardWebhooksSignatures checks deliveries in each format against
// the Standard Webhooks reference verifier: a delivery verifies with each
// of the project's two live secrets (a rotation), a trigger's own secret
// replaces the project's, a changed body or an old timestamp is refused,
// and a retry keeps webhook-id, the CloudEvent id, and signs anew.
func TestStandardWebhooksSignatures(t *testing.T) {
	t.Parallel()
	newSecret, oldSecret, ownSecret := newWebhookSecret(t), newWebhookSecret(t), newWebhookSecret(t)
	var mu sync.Mutex
	got := make(map[string][]signedRequest) // by URL path
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], signedRequest{r.Header.Clone(), body})
		n := len(got[r.URL.Path])
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // retried
		}
	}))
	t.Cleanup(h.Close)

	e := newEnv(t)
	text := `
node_id: node-a
store: {url: %q, schema: %s}
shutdown_grace: 2s
projects:
  - id: p
    secrets: [{kid: k1, alg: HS256, secret: ` + secret + `}]
    webhook_secrets: ["` + newSecret + `", "` + oldSecret + `"]
    triggers:
      - {name: structured, type: x, url: "` + h.URL + `/structured", retry_backoff: {initial: 1300ms}}
      - {name: binary, type: x, url: "` + h.URL + `/binary", format: binary, retry_backoff: {initial: 1300ms}}
      - {name: envelope, type: x, url: "` + h.URL + `/envelope", format: envelope, retry_backoff: {initial: 1300ms}}
      - {name: own, type: x, url: "` + h.URL + `/own", webhook_secrets: ["` + ownSecret + `"], retry_backoff: {initial: 1300ms}}
`
	n := e.startText(fmt.Sprintf(text, e.url, e.schema), dispatch.Options{})
	id, _, err := n.d.Enqueue(context.Background(), dispatch.Event{Project: "p", Type: "x", Data: []byte(`{"amount":"12.50"}`), FireAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	rows := n.waitStatus(t, id, store.StatusProcessed, 10*time.Second)
	rowID := make(map[string]string)
	for _, r := range rows {
		rowID["/"+r.Trigger] = r.ID.String()
	}

	verifier := func(secret string) *standardwebhooks.Webhook {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		return wh
	}
	project, own := []string{newSecret, oldSecret}, []string{ownSecret}
	mu.Lock()
	defer mu.Unlock()
	for path, secrets := range map[string][]string{"/structured": project, "/binary": project, "/envelope": project, "/own": own} {
		reqs := got[path]
		if len(reqs) != 2 {
			t.Fatalf("%s: %d deliveries, want 2 (a 503, then a 200)", path, len(reqs))
		}
		for i, req := range reqs {
			for _, s := range secrets {
				if err := verifier(s).Verify(req.body, req.header); err != nil {
					t.Errorf("%s, attempt %d: the reference verifier refuses it: %v\n%v", path, i+1, err, req.header)
				}
			}
			if id := req.header.Get("webhook-id"); id != rowID[path] {
				t.Errorf("%s, attempt %d: webhook-id %q, want the CloudEvent id %s", path, i+1, id, rowID[path])
			}
			if req.header.Get("X-SC-Token") == "" {
				t.Errorf("%s: no X-SC-Token beside the signature", path)
			}
		}
		first, _ := strconv.ParseInt(reqs[0].header.Get("webhook-timestamp"), 10, 64)
		second, _ := strconv.ParseInt(reqs[1].header.Get("webhook-timestamp"), 10, 64)
		if second <= first || reqs[0].header.Get("webhook-signature") == reqs[1].header.Get("webhook-signature") {
			t.Errorf("%s: the retry is not signed anew: timestamps %d and %d, signatures %q and %q", path, first, second,
				reqs[0].header.Get("webhook-signature"), reqs[1].header.Get("webhook-signature"))
		}

		req := reqs[1]
		changed := append([]byte(nil), req.body...)
		changed[len(changed)-2] ^= 1
		if err := verifier(secrets[0]).Verify(changed, req.header); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("%s: a changed body: %v, want %v", path, err, standardwebhooks.ErrNoMatchingSignature)
		}
		old := req.header.Clone()
		old.Set("webhook-timestamp", strconv.FormatInt(time.Now().Add(-6*time.Minute).Unix(), 10))
		if err := verifier(secrets[0]).Verify(req.body, old); !errors.Is(err, standardwebhooks.ErrMessageTooOld) {
			t.Errorf("%s: a timestamp 6 minutes old: %v, want %v", path, err, standardwebhooks.ErrMessageTooOld)
		}
	}
	// A trigger's own secret replaces the project's.
	if err := verifier(newSecret).Verify(got["/own"][1].body, got["/own"][1].header); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("the trigger with its own secret is signed with the project's too: %v", err)
	}
}
