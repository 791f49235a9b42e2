package graph

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/text/unicode/norm"

	"github.com/postgate/postgate/write"
)

// tokenLeeway absorbs clock skew between the issuer and this server, at verification and when a
// long-lived websocket's token expires.
const tokenLeeway = 5 * time.Second

// DefaultMaxTokenTTL is the longest token lifetime accepted unless configured otherwise.
const DefaultMaxTokenTTL = 24 * time.Hour

// ErrUnauthenticated is returned for a missing, malformed, expired or wrongly signed token.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrTokenExpired wraps ErrUnauthenticated for a token that was valid and has expired: the one
// refusal a client is told apart from "invalid", so that it knows a fresh token will do.
var ErrTokenExpired = fmt.Errorf("%w: token expired", ErrUnauthenticated)

// providerAlgs are the algorithms an identity provider's keys may sign with. HS256 is only ever
// verified with the secret, never with a key from a JWKS, and "none" is never accepted.
var providerAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

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

// VerifyToken checks an HS256 token (without the "Bearer " prefix) signed with secret, with the
// default claim rules, and returns its user. Errors wrap ErrUnauthenticated (ErrTokenExpired for an
// expired token).
func VerifyToken(secret []byte, token string) (string, error) {
	id, err := newTokenVerifier(TokenConfig{Secret: secret}).verify(token)
	return id.user, err
}

// TokenConfig says which bearer tokens are accepted.
type TokenConfig struct {
	// Secret verifies HS256 tokens, the kind `postgate token` makes; their user is "sub".
	Secret []byte
	// JWKS, when set, verifies an identity provider's RS*, PS*, ES* and EdDSA tokens.
	JWKS *JWKS
	// Issuer and Audience, when set, must match the "iss" and "aud" of the provider's tokens.
	Issuer, Audience string
	// UserClaim names the claim of a provider's token that holds the user (default "sub").
	UserClaim string
	// MaxTTL is the longest lifetime (exp less iat, or less now without iat) of any token
	// (default 24 h).
	MaxTTL time.Duration
	// Logger receives every refusal at info, with its reason and never the token.
	Logger *slog.Logger
}

// tokenVerifier verifies bearer tokens under one TokenConfig.
type tokenVerifier struct {
	secret    []byte
	jwks      *JWKS
	hs        *jwt.Parser
	provider  *jwt.Parser
	userClaim string
	maxTTL    time.Duration
	log       *slog.Logger
}

func newTokenVerifier(cfg TokenConfig) *tokenVerifier {
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTokenTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	strict := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(tokenLeeway)}
	provider := append([]jwt.ParserOption{jwt.WithValidMethods(providerAlgs)}, strict...)
	if cfg.Issuer != "" {
		provider = append(provider, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		provider = append(provider, jwt.WithAudience(cfg.Audience))
	}
	return &tokenVerifier{
		secret:    cfg.Secret,
		jwks:      cfg.JWKS,
		hs:        jwt.NewParser(append([]jwt.ParserOption{jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()})}, strict...)...),
		provider:  jwt.NewParser(provider...),
		userClaim: cfg.UserClaim,
		maxTTL:    cfg.MaxTTL,
		log:       cfg.Logger,
	}
}

// joseHeader is the part of a token's header looked at before its signature is.
type joseHeader struct {
	Alg  string          `json:"alg"`
	JWK  json.RawMessage `json:"jwk"`
	JKU  json.RawMessage `json:"jku"`
	X5U  json.RawMessage `json:"x5u"`
	X5C  json.RawMessage `json:"x5c"`
	Crit json.RawMessage `json:"crit"`
}

// refuse wraps ErrUnauthenticated with a reason for the log.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, fmt.Sprintf(format, args...))
}

// verify checks token and returns the identity it proves. An HS256 token is checked with the
// secret; any other algorithm only with the JWKS, whose keys each verify their own family alone.
// Both kinds need a numeric exp, may not be issued (iat) or valid (nbf) in the future beyond
// tokenLeeway, nor live longer than maxTTL, and must name a user that is one person's name.
func (v *tokenVerifier) verify(token string) (identity, error) {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return identity{}, refuse("malformed token")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	var h joseHeader
	if err != nil || json.Unmarshal(raw, &h) != nil {
		return identity{}, refuse("malformed token header")
	}
	switch {
	case !isAbsent(h.JWK) || !isAbsent(h.JKU) || !isAbsent(h.X5U) || !isAbsent(h.X5C):
		// Keys come from the secret or the configured JWKS only: a token naming its own key
		// (or where to fetch one) is an attempt to choose the key that verifies it.
		return identity{}, refuse("the token's header embeds or points to a key (jwk, jku, x5u, x5c)")
	case !isAbsent(h.Crit):
		return identity{}, refuse("the token's header has critical extensions (crit)")
	}
	claims := jwt.MapClaims{}
	userClaim := "sub"
	switch {
	case h.Alg == jwt.SigningMethodHS256.Alg():
		_, err = v.hs.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return v.secret, nil })
	case v.jwks != nil:
		userClaim = v.userClaim
		_, err = v.provider.ParseWithClaims(token, claims, v.jwks.keyfunc)
	default:
		return identity{}, refuse("algorithm %q is not accepted (no identity provider is configured)", truncate(h.Alg, 16))
	}
	if errors.Is(err, jwt.ErrTokenExpired) {
		return identity{}, fmt.Errorf("%w: %w", ErrTokenExpired, err)
	}
	if err != nil {
		return identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	exp, _ := claims.GetExpirationTime() // required and numeric: the parser checked
	start := time.Now()
	if iat, _ := claims.GetIssuedAt(); iat != nil {
		start = iat.Time
	}
	if life := exp.Sub(start); life > v.maxTTL+tokenLeeway {
		return identity{}, refuse("the token lives %s, longer than the longest lifetime accepted (%s)", life.Round(time.Second), v.maxTTL)
	}
	s, ok := claims[userClaim].(string)
	if !ok {
		return identity{}, refuse("the token has no string %q claim", truncate(userClaim, 64))
	}
	user, err := UserName(s)
	if err != nil {
		return identity{}, fmt.Errorf("%w: claim %q: %w", ErrUnauthenticated, userClaim, err)
	}
	return identity{user: user, expires: exp.Time}, nil
}

// UserName returns the one name of the person a token's user claim names: the claim in Unicode
// NFC, so that a composed and a decomposed "é" are one person. It refuses what cannot be told
// apart on screen or breaks the event store's stream names: a name that is empty, longer than
// write.MaxUserLen characters, begins or ends with whitespace, or holds "/", a control, format
// (zero-width, bidi) or other invisible character. The error says which, without the name.
func UserName(claim string) (string, error) {
	if !utf8.ValidString(claim) {
		return "", errors.New("a user name must be UTF-8")
	}
	name := norm.NFC.String(claim)
	if name == "" {
		return "", errors.New("a user name may not be empty")
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return "", errors.New("a user name may not begin or end with whitespace")
	}
	for _, r := range name {
		if invisible(r) {
			return "", fmt.Errorf("a user name may not hold the control or invisible character %U", r)
		}
	}
	if err := write.CheckUser(name); err != nil {
		return "", errors.New(write.MessageOf(err))
	}
	return name, nil
}

// invisible reports whether r shows nothing, or changes how its neighbours show, so that two
// names that look the same could differ by it: controls, format characters (zero-width spaces and
// joiners, bidi marks), spaces other than U+0020, variation selectors and the other default-ignorable
// code points (the Hangul fillers among them), and the blank Braille pattern.
func invisible(r rune) bool {
	return (!unicode.IsPrint(r) && r != ' ') ||
		unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r) ||
		r == '\u2800'
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
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

// refusal is what a client is told about its refused token: whether it expired or is invalid,
// and nothing more.
func refusal(err error) string {
	if errors.Is(err, ErrTokenExpired) {
		return "token expired"
	}
	return "invalid token"
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

// identify verifies an "Authorization" value ("Bearer <token>") that came over transport. An
// empty value is an anonymous caller; anything else that does not verify is remembered as a bad
// token, which fails every operation of the request (a client that sends a token expects to act
// as its user), and logged at info with its reason.
func (v *tokenVerifier) identify(authorization, transport string) identity {
	if authorization == "" {
		return identity{}
	}
	var id identity
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		id.bad = refuse("authorization is not a bearer token")
	} else {
		id, id.bad = v.verify(strings.TrimSpace(token))
	}
	if id.bad != nil {
		v.log.Info("token refused", "transport", transport, "reason", truncate(id.bad.Error(), 300))
	}
	return id
}

// authenticate puts the caller's identity from the Authorization header into the request context.
// Two Authorization headers are a BAD_REQUEST: which of them a proxy or the server reads is not
// something a client should have to guess.
func authenticate(v *tokenVerifier, m *Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := len(r.Header.Values("Authorization")); n > 1 {
			v.log.Info("token refused", "transport", "http", "reason", fmt.Sprintf("%d Authorization headers", n))
			m.countError(CodeBadRequest)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"errors":[{"message":"send one Authorization header, not %d","extensions":{"code":%q}}],"data":null}`, n, CodeBadRequest)
			return
		}
		id := v.identify(r.Header.Get("Authorization"), "http")
		next.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
	})
}
