package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestDeliveryTokensDoNotOpenTheAPI replays the X-SC-Token a webhook
// received as a bearer token: the API refuses it, though a receiver
// verifies it with the project's secret as before, and the client token
// signed with that secret is still taken.
func TestDeliveryTokensDoNotOpenTheAPI(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Get("X-SC-Token"):
		default:
		}
	}))
	t.Cleanup(hook.Close)
	f := demoNode(t, "{default: authenticated, open: allow}", fmt.Sprintf(`
		- {name: open, type: open, url: %q}
		- {name: authed, type: authed, url: %q}`, hook.URL, hook.URL))

	if status, out := f.post(t, queue, `{"type":"open"}`, ""); status != 200 {
		t.Fatalf("queue: %d %v", status, out)
	}
	var token string
	select {
	case token = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
	}
	// A receiver checks it as the README says: signature, alg, expiry.
	if _, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()); err != nil {
		t.Fatalf("a receiver cannot verify X-SC-Token with the project's secret: %v", err)
	}

	before := f.count(t)
	status, out := f.post(t, queue, `{"type":"authed"}`, "Bearer "+token)
	msg, _ := out["error"].(string)
	if status != 401 || !strings.Contains(msg, "X-SC-Token") {
		t.Fatalf("the delivery token as a bearer token: %d %v, want 401 naming X-SC-Token", status, out)
	}
	if n := f.count(t); n != before {
		t.Fatalf("a refused token stored %d rows", n-before)
	}
	if status, out := f.post(t, queue, `{"type":"authed"}`, bearer(t, secret, "k1", time.Now().Add(time.Minute))); status != 200 {
		t.Fatalf("a client token: %d %v", status, out)
	}
}
