// Package auth turns a project's secrets into JWT verification, for the
// bearer tokens of API callers, and signing, for the X-SC-Token header of
// deliveries; and webhook secrets into the Standard Webhooks signatures
// of deliveries.
package auth

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/config"
)

// Errors Verify wraps, for callers that tell them apart.
var (
	// ErrInvalidToken: the token is malformed or its signature is wrong.
	ErrInvalidToken = errors.New("invalid token")
	// ErrTokenExpired: the token's exp has passed.
	ErrTokenExpired = errors.New("token expired")
	// ErrUnknownKey: the token's kid names no secret of the project.
	ErrUnknownKey = errors.New("unknown key id")
	// ErrWrongUse: the token is of the other kind (see UseClaim).
	ErrWrongUse = errors.New("wrong kind of token")
)

// UseClaim is the claim that marks the X-SC-Token of a delivery, with the
// value DeliveryUse. Both kinds of token are signed with the project's
// secrets; the mark keeps a token that a webhook receiver was sent from
// being replayed to the API, and a client's token from passing for a
// delivery. Verifiers that do not know the claim ignore it.
const (
	UseClaim    = "token_use"
	DeliveryUse = "delivery"
)

const (
	// leeway absorbs clock skew when checking exp, nbf and iat.
	leeway = 5 * time.Second
	// nodeTokenTTL is the lifetime of an X-SC-Token.
	nodeTokenTTL = 2 * time.Minute
	// nodeTokenReuse is how long one X-SC-Token is reused before a new one is signed.
	nodeTokenReuse = time.Minute
)

// key is one secret, ready to use.
type key struct {
	kid    string
	method jwt.SigningMethod
	sign   any // []byte or *rsa.PrivateKey; nil when the secret only verifies
	verify any // []byte or *rsa.PublicKey
}

// Keyring holds a project's keys. It is safe for concurrent use.
type Keyring struct {
	keys []key

	mu        sync.Mutex
	node      string
	token     string
	tokenTime time.Time
}

// NewKeyring loads a project's secrets, reading RS256 key files; log
// (slog.Default() when nil) is warned of a private key file that every
// user of the machine may read.
func NewKeyring(secrets []config.Secret, log *slog.Logger) (*Keyring, error) {
	if log == nil {
		log = slog.Default()
	}
	k := &Keyring{}
	for i, s := range secrets {
		kk, err := loadKey(s, log)
		if err != nil {
			return nil, fmt.Errorf("secrets[%d] (kid %s): %w", i, s.KID, err)
		}
		k.keys = append(k.keys, kk)
	}
	if len(k.keys) == 0 {
		return nil, errors.New("no secrets: at least one is needed to sign X-SC-Token")
	}
	return k, nil
}

// Keyrings builds the keyring of every project of cfg, by project id (see
// NewKeyring for log).
func Keyrings(cfg *config.Config, log *slog.Logger) (map[string]*Keyring, error) {
	if log == nil {
		log = slog.Default()
	}
	keys := make(map[string]*Keyring, len(cfg.Projects))
	for _, p := range cfg.Projects {
		k, err := NewKeyring(p.Secrets, log.With("project", p.ID))
		if err != nil {
			return nil, fmt.Errorf("project %s: %w", p.ID, err)
		}
		keys[p.ID] = k
	}
	return keys, nil
}

func loadKey(s config.Secret, log *slog.Logger) (key, error) {
	switch s.Alg {
	case "HS256":
		return key{kid: s.KID, method: jwt.SigningMethodHS256, sign: []byte(s.Secret), verify: []byte(s.Secret)}, nil
	case "RS256":
		k := key{kid: s.KID, method: jwt.SigningMethodRS256}
		if s.PrivateKeyFile != "" {
			priv, err := readPEM(s.PrivateKeyFile, parsePrivate)
			if err != nil {
				return key{}, fmt.Errorf("private_key_file %s: %w", s.PrivateKeyFile, err)
			}
			warnIfReadable(s, log)
			k.sign, k.verify = priv, &priv.PublicKey
		}
		if s.PublicKeyFile != "" {
			pub, err := readPEM(s.PublicKeyFile, parsePublic)
			if err != nil {
				return key{}, fmt.Errorf("public_key_file %s: %w", s.PublicKeyFile, err)
			}
			k.verify = pub
		}
		return k, nil
	}
	return key{}, fmt.Errorf("alg %q is not supported: use HS256 or RS256", s.Alg)
}

// warnIfReadable warns when every user of the machine may read a
// secret's private key file.
func warnIfReadable(s config.Secret, log *slog.Logger) {
	fi, err := os.Stat(s.PrivateKeyFile)
	if err != nil || fi.Mode().Perm()&0o004 == 0 {
		return
	}
	log.Warn("a private key file is readable by every user of this machine: anyone who reads it can sign X-SC-Token and client tokens; run chmod 600 on it",
		"kid", s.KID, "file", s.PrivateKeyFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
}

// readPEM reads a file's first PEM block and parses it.
func readPEM[T any](path string, parse func(*pem.Block) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return zero, errors.New("no PEM block found: the file must hold a PEM-encoded RSA key")
	}
	return parse(block)
}

func parsePrivate(b *pem.Block) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#1 or PKCS#8 private key (%s block)", b.Type)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an RSA private key", k)
	}
	return rk, nil
}

func parsePublic(b *pem.Block) (*rsa.PublicKey, error) {
	if b.Type == "CERTIFICATE" {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad certificate: %w", err)
		}
		if k, ok := c.PublicKey.(*rsa.PublicKey); ok {
			return k, nil
		}
		return nil, fmt.Errorf("the certificate holds a %T, not an RSA public key", c.PublicKey)
	}
	if k, err := x509.ParsePKCS1PublicKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX or PKCS#1 public key (%s block)", b.Type)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an RSA public key", k)
	}
	return rk, nil
}

// VerifyClient checks a bearer token of an API client (see verify); the
// X-SC-Token of a delivery and admin tokens are refused.
func (k *Keyring) VerifyClient(token string) (jwt.MapClaims, error) {
	claims, err := k.verify(token)
	if (err != nil && isAdminToken(token)) || (err == nil && IsAdminToken(claims)) {
		// Checked only once the token fails, or passes: the queue's hot
		// path parses a token once.
		return nil, fmt.Errorf("%w: this is an admin token (%s: %s), which only the admin API takes: sign a client token with the project's secret",
			ErrWrongUse, UseClaim, AdminUse)
	}
	if err != nil {
		return nil, err
	}
	if claims[UseClaim] == DeliveryUse {
		return nil, fmt.Errorf("%w: this is the X-SC-Token of a delivery (%s: %s), which triggerd signs for webhooks and the API does not take: sign a client token with the project's secret",
			ErrWrongUse, UseClaim, DeliveryUse)
	}
	return claims, nil
}

// VerifyDelivery checks the X-SC-Token of a delivery, as a webhook
// receiver written in Go would (see verify): a client's token is refused.
func (k *Keyring) VerifyDelivery(token string) (jwt.MapClaims, error) {
	claims, err := k.verify(token)
	if err != nil {
		return nil, err
	}
	if claims[UseClaim] != DeliveryUse {
		return nil, fmt.Errorf("%w: not the X-SC-Token of a delivery (it lacks %s: %s)", ErrWrongUse, UseClaim, DeliveryUse)
	}
	return claims, nil
}

// verify checks a token against the project's secrets and returns its
// claims. The token's kid picks the secret; without a kid, every secret of
// the token's alg is tried. The alg must be the secret's own, so an HS256
// token is never checked against an RSA public key, and "none" never
// passes. exp, nbf and iat are checked when present (a token without exp
// does not expire), with a few seconds of leeway for clock skew.
func (k *Keyring) verify(token string) (jwt.MapClaims, error) {
	parser := jwt.NewParser(jwt.WithLeeway(leeway), jwt.WithIssuedAt())
	unverified, _, err := parser.ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	kid, hasKid := unverified.Header["kid"].(string)
	var candidates []key
	for _, kk := range k.keys {
		if (!hasKid || kk.kid == kid) && kk.method.Alg() == unverified.Method.Alg() && kk.verify != nil {
			candidates = append(candidates, kk)
		}
	}
	if len(candidates) == 0 {
		if !hasKid {
			return nil, fmt.Errorf("%w: no secret of this project uses alg %v", ErrInvalidToken, unverified.Header["alg"])
		}
		if alg := k.algOf(kid); alg != "" {
			return nil, fmt.Errorf("%w: key %q is %s, but the token uses alg %v", ErrInvalidToken, kid, alg, unverified.Header["alg"])
		}
		return nil, fmt.Errorf("%w %q: the token was not signed with a secret of this project", ErrUnknownKey, kid)
	}
	var lastErr error
	for _, kk := range candidates {
		claims := jwt.MapClaims{}
		p := jwt.NewParser(jwt.WithLeeway(leeway), jwt.WithIssuedAt(), jwt.WithValidMethods([]string{kk.method.Alg()}))
		_, err := p.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return kk.verify, nil })
		if err == nil {
			return claims, nil
		}
		lastErr = err
		if errors.Is(err, jwt.ErrTokenExpired) {
			exp, _ := claims.GetExpirationTime()
			if exp != nil {
				return nil, fmt.Errorf("%w at %s: get a new one", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
			}
			return nil, fmt.Errorf("%w: get a new one", ErrTokenExpired)
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrInvalidToken, lastErr)
}

// algOf is the alg of the secret with the kid, or "" when none has it.
func (k *Keyring) algOf(kid string) string {
	for _, kk := range k.keys {
		if kk.kid == kid {
			return kk.method.Alg()
		}
	}
	return ""
}

// Sign signs claims with the project's first secret, naming it in the kid header.
func (k *Keyring) Sign(claims jwt.Claims) (string, error) {
	first := k.keys[0]
	if first.sign == nil {
		return "", fmt.Errorf("secret %s cannot sign: it has no private key", first.kid)
	}
	t := jwt.NewWithClaims(first.method, claims)
	t.Header["kid"] = first.kid
	s, err := t.SignedString(first.sign)
	if err != nil {
		return "", fmt.Errorf("sign with secret %s: %w", first.kid, err)
	}
	return s, nil
}

// NodeToken returns the X-SC-Token for deliveries from node: claims id (the
// node), token_use "delivery" (see UseClaim), iat, and exp two minutes
// later. A token is reused for a minute, so deliveries do not sign one each.
func (k *Keyring) NodeToken(node string, now time.Time) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.token != "" && k.node == node && now.Sub(k.tokenTime) < nodeTokenReuse && !now.Before(k.tokenTime) {
		return k.token, nil
	}
	tok, err := k.Sign(jwt.MapClaims{
		"id":     node,
		UseClaim: DeliveryUse,
		"iat":    now.Unix(),
		"exp":    now.Add(nodeTokenTTL).Unix(),
	})
	if err != nil {
		return "", err
	}
	k.node, k.token, k.tokenTime = node, tok, now
	return tok, nil
}
