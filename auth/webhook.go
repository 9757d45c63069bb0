package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/triggerd/triggerd/config"
)

// WebhookSigner signs deliveries the Standard Webhooks way: with each of
// its secrets, an HMAC-SHA256 of "id.timestamp.body". It is safe for
// concurrent use.
type WebhookSigner struct {
	// macs holds, for each secret in order, HMACs keyed with it, so that
	// an attempt does not build one.
	macs []sync.Pool
}

// NewWebhookSigner returns a signer for secrets, Standard Webhooks secrets
// (see config.WebhookKey); it needs at least one. Its errors do not show
// the secrets.
func NewWebhookSigner(secrets []string) (*WebhookSigner, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("no webhook secrets: at least one is needed to sign")
	}
	s := &WebhookSigner{macs: make([]sync.Pool, len(secrets))}
	for i, secret := range secrets {
		key, err := config.WebhookKey(secret)
		if err != nil {
			return nil, fmt.Errorf("webhook_secrets[%d] is not a Standard Webhooks secret: %w", i, err)
		}
		s.macs[i].New = func() any { return hmac.New(sha256.New, key) }
	}
	return s, nil
}

// Sign sets the Standard Webhooks headers of a delivery of body, the exact
// bytes sent: webhook-id (id), webhook-timestamp (at, in Unix seconds) and
// webhook-signature, "v1,<base64 of the HMAC>" for each secret, in order
// and separated by spaces.
func (s *WebhookSigner) Sign(h http.Header, id string, at time.Time, body []byte) {
	// b holds "id.timestamp.", the signed text before the body, then the
	// signatures.
	b := make([]byte, 0, len(id)+22+len(s.macs)*(4+base64.StdEncoding.EncodedLen(sha256.Size)))
	b = append(b, id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, at.Unix(), 10)
	ts := b[len(id)+1:]
	b = append(b, '.')
	signed := len(b)
	var sum [sha256.Size]byte
	for i := range s.macs {
		mac := s.macs[i].Get().(hash.Hash)
		mac.Reset()
		mac.Write(b[:signed])
		mac.Write(body)
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, "v1,"...)
		b = base64.StdEncoding.AppendEncode(b, mac.Sum(sum[:0]))
		s.macs[i].Put(mac)
	}
	h.Set("Webhook-Id", id)
	h.Set("Webhook-Timestamp", string(ts))
	h.Set("Webhook-Signature", string(b[signed:]))
}
