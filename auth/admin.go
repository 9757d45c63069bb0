package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Admin tokens carry AdminUse in UseClaim, and AdminAudience and
// AdminIssuer in aud and iss: three marks that no client token of a
// project has, checked on both sides, so that neither kind passes for the
// other even if they were signed with the same key.
const (
	AdminUse      = "admin"
	AdminAudience = "triggerd-admin"
	AdminIssuer   = "triggerd"
)

// AdminKeys signs and verifies the tokens of the admin API with the admin
// section's secret (HS256). It is safe for concurrent use.
type AdminKeys struct {
	secret []byte
	ttl    time.Duration
}

// NewAdminKeys returns the admin API's keys: tokens signed with secret
// last ttl.
func NewAdminKeys(secret string, ttl time.Duration) *AdminKeys {
	return &AdminKeys{secret: []byte(secret), ttl: ttl}
}

// Sign returns an admin token for user, issued at now, and when it expires.
func (a *AdminKeys) Sign(user string, now time.Time) (string, time.Time, error) {
	exp := now.Add(a.ttl)
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":    user,
		"aud":    AdminAudience,
		"iss":    AdminIssuer,
		UseClaim: AdminUse,
		"iat":    now.Unix(),
		"exp":    exp.Unix(),
	})
	s, err := t.SignedString(a.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign an admin token: %w", err)
	}
	return s, exp, nil
}

// Verify checks an admin token and returns the user it was issued to. A
// token of another kind (a project's client token, the X-SC-Token of a
// delivery) is refused with ErrWrongUse before its signature is checked,
// so that the answer says what was sent; an expired one with
// ErrTokenExpired.
func (a *AdminKeys) Verify(token string) (string, error) {
	unverified, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !IsAdminToken(unverified.Claims.(jwt.MapClaims)) {
		return "", fmt.Errorf("%w: not an admin token (project tokens and X-SC-Token are not taken here): log in with POST /v1/admin/login for one", ErrWrongUse)
	}
	claims := jwt.MapClaims{}
	p := jwt.NewParser(jwt.WithLeeway(leeway), jwt.WithIssuedAt(), jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithAudience(AdminAudience), jwt.WithIssuer(AdminIssuer), jwt.WithExpirationRequired())
	if _, err := p.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return a.secret, nil }); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			exp, _ := claims.GetExpirationTime()
			return "", fmt.Errorf("%w at %s: log in again with POST /v1/admin/login", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
		}
		return "", fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if claims[UseClaim] != AdminUse {
		return "", fmt.Errorf("%w: not an admin token (it lacks %s: %s)", ErrWrongUse, UseClaim, AdminUse)
	}
	user, err := claims.GetSubject()
	if err != nil || user == "" {
		return "", fmt.Errorf("%w: the token names no user (sub)", ErrInvalidToken)
	}
	return user, nil
}

// IsAdminToken reports whether claims bear any mark of an admin token.
func IsAdminToken(claims jwt.MapClaims) bool {
	if claims[UseClaim] == AdminUse || claims["iss"] == AdminIssuer {
		return true
	}
	aud, _ := claims.GetAudience()
	for _, a := range aud {
		if a == AdminAudience {
			return true
		}
	}
	return false
}

// isAdminToken reports whether an unverified token bears a mark of an
// admin token.
func isAdminToken(token string) bool {
	unverified, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	return err == nil && IsAdminToken(unverified.Claims.(jwt.MapClaims))
}
