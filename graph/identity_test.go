package graph

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://idp.example.com/"
	testAudience = "postgate"
)

// testIdP is an identity provider's key set served over HTTP, as Keycloak or Auth0 publish theirs.
type testIdP struct {
	tb     testing.TB
	srv    *httptest.Server
	hits   atomic.Int64
	mu     sync.Mutex
	keys   map[string]crypto.Signer // kid → private key, every one published
	maxAge int
}

func newTestIdP(tb testing.TB, maxAge int) *testIdP {
	tb.Helper()
	p := &testIdP{tb: tb, keys: map[string]crypto.Signer{}, maxAge: maxAge}
	p.add("rsa-1", mustRSA(tb))
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.add("ec-1", ec)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p.add("ed-1", ed)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		var set jwkset.JWKSMarshal
		for kid, k := range p.keys {
			j, err := jwkset.NewJWKFromKey(k.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
			if err != nil {
				tb.Errorf("jwk: %v", err)
			}
			set.Keys = append(set.Keys, j.Marshal())
		}
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", p.maxAge))
		json.NewEncoder(w).Encode(set)
	}))
	tb.Cleanup(p.srv.Close)
	return p
}

func mustRSA(tb testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func (p *testIdP) add(kid string, k crypto.Signer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = k
}

// replace publishes keys instead of every key so far.
func (p *testIdP) replace(keys map[string]crypto.Signer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

func (p *testIdP) key(kid string) crypto.Signer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[kid]
}

// claims are a valid token's claims for user, to be spoiled by a case.
func validClaims(user string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "id-" + user, "preferred_username": user,
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
}

// sign makes a token with method and key, kid in its header (none when ""), and extra header fields.
func sign(tb testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims, header map[string]any) string {
	tb.Helper()
	t := jwt.NewWithClaims(m, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	for k, v := range header {
		t.Header[k] = v
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return s
}

func withIdP(p *testIdP, opts ...JWKSOption) envOption {
	return func(c *ServerConfig, _ *[]HubOption) {
		jwks, err := NewJWKS(context.Background(), p.srv.URL, opts...)
		if err != nil {
			p.tb.Fatalf("jwks: %v", err)
		}
		c.JWKS, c.JWTIssuer, c.JWTAudience, c.JWTUserClaim = jwks, testIssuer, testAudience, "preferred_username"
	}
}

const whoAmI = `mutation { createPost(message: "hello") { author } }`

func (e *env) author(token string) (string, gqlResponse) {
	e.tb.Helper()
	r := e.do(token, whoAmI, nil)
	var d struct{ CreatePost struct{ Author string } }
	if len(r.Errors) == 0 {
		e.mustData(r, &d)
	}
	return d.CreatePost.Author, r
}

func TestProviderTokensActAsTheirConfiguredClaim(t *testing.T) {
	p := newTestIdP(t, 300)
	e := newEnv(t, withIdP(p))
	for _, tt := range []struct {
		alg jwt.SigningMethod
		kid string
	}{{jwt.SigningMethodRS256, "rsa-1"}, {jwt.SigningMethodPS256, "rsa-1"}, {jwt.SigningMethodES256, "ec-1"}, {jwt.SigningMethodEdDSA, "ed-1"}} {
		tok := sign(t, tt.alg, p.key(tt.kid), tt.kid, validClaims("ada"), nil)
		if got, r := e.author(tok); got != "ada" {
			t.Errorf("%s: author %q (%s), want ada, the preferred_username", tt.alg.Alg(), got, r.raw)
		}
	}
	// Over a websocket the token is checked at connection_init and acts the same.
	ctx := testCtx(t)
	c, err := e.dialWS(ctx, sign(t, jwt.SigningMethodES256, p.key("ec-1"), "ec-1", validClaims("brian"), nil), false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "1", whoAmI, nil)
	var d struct{ CreatePost struct{ Author string } }
	c.nextData(ctx, &d)
	if d.CreatePost.Author != "brian" {
		t.Errorf("websocket author %q, want brian", d.CreatePost.Author)
	}
	// HS256 tokens of `postgate token` keep working beside the provider.
	if got, r := e.author(e.token("cleo")); got != "cleo" {
		t.Errorf("HS256 token: author %q (%s)", got, r.raw)
	}
}

// TestForgedTokensAreRefused: each token is what an attacker would try; each is UNAUTHENTICATED
// with the message "invalid token" and nothing more.
func TestForgedTokensAreRefused(t *testing.T) {
	p := newTestIdP(t, 300)
	var logs syncLog
	e := newEnv(t, withIdP(p), func(c *ServerConfig, _ *[]HubOption) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	rsaKey := p.key("rsa-1").(*rsa.PrivateKey)
	pub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	attacker := mustRSA(t)
	attackerJWK, _ := jwkset.NewJWKFromKey(&attacker.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "rsa-1"}})
	with := func(k string, v any) jwt.MapClaims {
		c := validClaims("ada")
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c, nil) }
	hour := time.Now().Add(time.Hour).Unix()
	tests := []struct{ name, token string }{
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", validClaims("ada"), nil)},
		{"HS256 signed with the provider's RSA public key", sign(t, jwt.SigningMethodHS256, pubPEM, "rsa-1", validClaims("ada"), nil)},
		{"HS256 signed with the public key's modulus", sign(t, jwt.SigningMethodHS256, rsaKey.PublicKey.N.Bytes(), "rsa-1", validClaims("ada"), nil)},
		{"wrong issuer", rs(with("iss", "https://evil.example.com/"))},
		{"no issuer", rs(with("iss", nil))},
		{"wrong audience", rs(with("aud", "someone-else"))},
		{"string exp", rs(with("exp", fmt.Sprint(hour)))},
		{"no exp", rs(with("exp", nil))},
		{"exp a hundred years out", rs(with("exp", time.Now().AddDate(100, 0, 0).Unix()))},
		{"future nbf", rs(with("nbf", time.Now().Add(time.Minute).Unix()))},
		{"future iat", rs(with("iat", time.Now().Add(time.Minute).Unix()))},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, attacker, "made-up", validClaims("ada"), nil)},
		{"embedded jwk header", sign(t, jwt.SigningMethodRS256, attacker, "", validClaims("ada"), map[string]any{"jwk": attackerJWK.Marshal()})},
		{"jku header", sign(t, jwt.SigningMethodRS256, attacker, "", validClaims("ada"), map[string]any{"jku": "http://127.0.0.1:1/jwks"})},
		{"another key under the provider's kid", sign(t, jwt.SigningMethodRS256, attacker, "rsa-1", validClaims("ada"), nil)},
		{"RS256 naming the EC key", sign(t, jwt.SigningMethodRS256, rsaKey, "ec-1", validClaims("ada"), nil)},
		{"EdDSA naming the RSA key", sign(t, jwt.SigningMethodEdDSA, p.key("ed-1"), "rsa-1", validClaims("ada"), nil)},
		{"user claim missing", rs(with("preferred_username", nil))},
		{"user claim not a string", rs(with("preferred_username", 42))},
		{"name ending in a space", rs(with("preferred_username", "ada "))},
		{"name with a zero-width space", rs(with("preferred_username", "a\u200bda"))},
		{"name with a control character", rs(with("preferred_username", "ada\x07"))},
		{"name with a Hangul filler", rs(with("preferred_username", "ada\u3164"))},
		{"name with a slash", rs(with("preferred_username", "ada/bob"))},
		{"name of 129 characters", rs(with("preferred_username", strings.Repeat("a", 129)))},
		{"HS256 token living longer than 24 h", sign(t, jwt.SigningMethodHS256, testSecret, "", jwt.MapClaims{"sub": "ada", "exp": time.Now().Add(48 * time.Hour).Unix()}, nil)},
		{"HS256 token with a string exp", sign(t, jwt.SigningMethodHS256, testSecret, "", jwt.MapClaims{"sub": "ada", "exp": fmt.Sprint(hour)}, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r := e.author(tt.token)
			if r.code() != CodeUnauthenticated || r.Errors[0].Message != "invalid token" {
				t.Fatalf("response %s, want UNAUTHENTICATED \"invalid token\"", r.raw)
			}
			sig := tt.token[strings.LastIndex(tt.token, ".")+1:]
			if l := logs.String(); !strings.Contains(l, "token refused") || (sig != "" && strings.Contains(l, sig)) {
				t.Fatalf("the refusal is not logged, or its token is:\n%s", l)
			}
		})
	}
	expired := rs(with("exp", time.Now().Add(-time.Minute).Unix()))
	if _, r := e.author(expired); r.code() != CodeUnauthenticated || r.Errors[0].Message != "token expired" {
		t.Errorf("expired token: %s, want UNAUTHENTICATED \"token expired\"", r.raw)
	}
	ctx := testCtx(t)
	if _, err := e.dialWS(ctx, rs(with("iss", "https://evil.example.com/")), false); websocket.CloseStatus(err) != closeForbidden {
		t.Errorf("websocket with a wrong issuer: %v, want 4403", err)
	}
}

// syncLog is a goroutine-safe log sink.
type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestANameDifferingOnlyByNormalisationIsThePerson(t *testing.T) {
	p := newTestIdP(t, 300)
	e := newEnv(t, withIdP(p))
	composed := sign(t, jwt.SigningMethodRS256, p.key("rsa-1"), "rsa-1", validClaims("Jos\u00e9"), nil)
	decomposed := sign(t, jwt.SigningMethodES256, p.key("ec-1"), "ec-1", validClaims("Jose\u0301"), nil)
	post := e.createPost("ada", "like me")
	for _, tok := range []string{composed, decomposed} {
		e.mustData(e.do(tok, `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": post.ID}), &struct{}{})
	}
	e.project()
	var d struct{ Post postJSON }
	e.mustData(e.do(decomposed, `query($id: ID!) { post(id: $id) { likes likedByMe } }`, map[string]any{"id": post.ID}), &d)
	if d.Post.Likes != 1 || !d.Post.LikedByMe {
		t.Fatalf("likes %d likedByMe %v: José composed and decomposed are one person, who likes once", d.Post.Likes, d.Post.LikedByMe)
	}
	if got, _ := e.author(decomposed); got != "Jos\u00e9" {
		t.Errorf("author %q, want the NFC name", got)
	}
}

func TestUnknownKidFloodRefetchesAtMostOncePerInterval(t *testing.T) {
	p := newTestIdP(t, 300)
	e := newEnv(t, withIdP(p))
	before := p.hits.Load()
	attacker := mustRSA(t)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := sign(t, jwt.SigningMethodRS256, attacker, fmt.Sprintf("kid-%d", i), validClaims("ada"), nil)
			if _, r := e.author(tok); r.code() != CodeUnauthenticated {
				t.Errorf("made-up kid: %s", r.raw)
			}
		}()
	}
	wg.Wait()
	if n := p.hits.Load() - before; n > 1 {
		t.Fatalf("40 tokens with made-up kids made %d fetches of the key set, want at most 1 per 10 s", n)
	}
}

func TestRotatedKeysWorkAtOnceAndOldOnesUntilTheirCacheLifetimeEnds(t *testing.T) {
	p := newTestIdP(t, 300)
	e := newEnv(t, withIdP(p))
	old := sign(t, jwt.SigningMethodRS256, p.key("rsa-1"), "rsa-1", validClaims("ada"), nil)
	if got, r := e.author(old); got != "ada" {
		t.Fatalf("before rotation: %s", r.raw)
	}
	// The provider stops publishing rsa-1 and signs with rsa-2 from now on.
	next := mustRSA(t)
	p.replace(map[string]crypto.Signer{"rsa-2": next})
	if got, r := e.author(sign(t, jwt.SigningMethodRS256, next, "rsa-2", validClaims("brian"), nil)); got != "brian" {
		t.Fatalf("a token of the new key: %s", r.raw)
	}
	if got, r := e.author(old); got != "ada" {
		t.Fatalf("a token of the retired key within the cache lifetime: %s", r.raw)
	}
}

func TestTwoAuthorizationHeadersAreABadRequest(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(`{"query":"{ __typename }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Authorization", "Bearer "+e.token("ada"))
	req.Header.Add("Authorization", "Bearer "+e.token("bob"))
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r gqlResponse
	json.NewDecoder(res.Body).Decode(&r)
	if res.StatusCode != http.StatusBadRequest || r.code() != CodeBadRequest {
		t.Fatalf("status %d code %q, want 400 BAD_REQUEST", res.StatusCode, r.code())
	}
}

func TestAJWKSUnreachablePastItsCacheLifetimeIsAProblem(t *testing.T) {
	p := newTestIdP(t, 1)
	jwks, err := NewJWKS(context.Background(), p.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go jwks.Run(ctx)
	if got := jwks.Problem(); got != "" {
		t.Fatalf("problem %q while the provider answers", got)
	}
	p.srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for jwks.Problem() == "" {
		if time.Now().After(deadline) {
			t.Fatal("no problem reported 10 s after the provider went away, with a cache lifetime of 1 s")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if _, err := NewJWKS(context.Background(), p.srv.URL); err == nil {
		t.Fatal("NewJWKS succeeded against a provider that is gone")
	}
}

func TestCacheLifetimeFollowsTheProvidersHeaders(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"max-age", http.Header{"Cache-Control": {"public, max-age=600"}}, 10 * time.Minute},
		{"max-age less Age", http.Header{"Cache-Control": {"max-age=600"}, "Age": {"100"}}, 500 * time.Second},
		{"Expires less Date", http.Header{"Expires": {"Tue, 01 Jan 2030 01:00:00 GMT"}, "Date": {"Tue, 01 Jan 2030 00:00:00 GMT"}}, time.Hour},
		{"no-cache takes the default", http.Header{"Cache-Control": {"no-cache"}}, defaultJWKSLifetime},
		{"nothing takes the default", http.Header{}, defaultJWKSLifetime},
		{"a week is capped at a day", http.Header{"Cache-Control": {"max-age=604800"}}, maxJWKSLifetime},
	} {
		if got := cacheLifetime(tt.h, now); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}
