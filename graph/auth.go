package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenLeeway absorbs clock skew between the issuer and this server, at verification and when a
// long-lived websocket's token expires.
const tokenLeeway = 5 * time.Second

// ErrUnauthenticated is returned for a missing, malformed, expired or wrongly signed token.
var ErrUnauthenticated = errors.New("unauthenticated")

// IssueToken returns an HS256 JWT whose subject is user, expiring after ttl. Errors: an empty
// secret or user, or a non-positive ttl.
func IssueToken(secret []byte, user string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("issue token: empty secret")
	}
	if user == "" {
		return "", errors.New("issue token: empty user")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("issue token: ttl %s is not positive", ttl)
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	return s, nil
}

// VerifyToken checks token (without the "Bearer " prefix) and returns its subject. Only HS256 with
// secret is accepted, and an expiry is required, so "alg: none", another key, a missing or past
// expiry, and malformed tokens all fail with an error wrapping ErrUnauthenticated.
func VerifyToken(secret []byte, token string) (string, error) {
	claims, err := verifyClaims(secret, token)
	if err != nil {
		return "", err
	}
	return claims.Subject, nil
}

// verifyClaims is VerifyToken returning every registered claim, the expiry included.
func verifyClaims(secret []byte, token string) (jwt.RegisteredClaims, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(tokenLeeway),
	)
	if err != nil {
		return claims, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if claims.Subject == "" {
		return claims, fmt.Errorf("%w: token has no subject", ErrUnauthenticated)
	}
	return claims, nil
}

// identity is what the edge learned about the caller: a verified user, or a token that failed.
type identity struct {
	user    string
	expires time.Time // the token's expiry: a websocket outlives its token, its operations may not
	bad     error     // non-nil when a token was presented and rejected
}

// expired reports whether the identity came from a token that has expired since it was verified.
func (id identity) expired(now time.Time) bool {
	return id.user != "" && !id.expires.IsZero() && now.After(id.expires.Add(tokenLeeway))
}

type identityKey struct{}

func withIdentity(ctx context.Context, id identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// viewer returns the verified user of the request, "" when anonymous.
func viewer(ctx context.Context) string { return identityFrom(ctx).user }

// requireUser returns the verified user, or an UNAUTHENTICATED error for an anonymous caller.
func requireUser(ctx context.Context) (string, error) {
	if u := viewer(ctx); u != "" {
		return u, nil
	}
	return "", errUnauthenticated("a valid bearer token is required")
}

// identify verifies an "Authorization" value ("Bearer <token>"). An empty value is an anonymous
// caller; anything else that does not verify is remembered as a bad token, which fails every
// operation of the request (a client that sends a token expects to act as its user).
func identify(secret []byte, authorization string) identity {
	if authorization == "" {
		return identity{}
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return identity{bad: fmt.Errorf("%w: authorization is not a bearer token", ErrUnauthenticated)}
	}
	claims, err := verifyClaims(secret, strings.TrimSpace(token))
	if err != nil {
		return identity{bad: err}
	}
	return identity{user: claims.Subject, expires: claims.ExpiresAt.Time}
}

// authenticate puts the caller's identity from the Authorization header into the request context.
func authenticate(secret []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identify(secret, r.Header.Get("Authorization"))
		next.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
	})
}
