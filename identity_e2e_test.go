package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// oidcProvider is panva's oidc-provider (clients/oidc.mjs) running under Node on this machine.
type oidcProvider struct {
	tb     testing.TB
	issuer string
	stdin  io.WriteCloser
}

// privateJWKS returns the set of private JWKs, named by kid, that the provider signs with.
func privateJWKS(tb testing.TB, keys map[string]crypto.Signer, order ...string) string {
	tb.Helper()
	var set jwkset.JWKSMarshal
	for _, kid := range order {
		alg := jwkset.AlgRS256
		if _, ok := keys[kid].(*ecdsa.PrivateKey); ok {
			alg = jwkset.AlgES256
		}
		j, err := jwkset.NewJWKFromKey(keys[kid], jwkset.JWKOptions{
			Marshal:  jwkset.JWKMarshalOptions{Private: true},
			Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig, ALG: alg},
		})
		if err != nil {
			tb.Fatalf("jwk %s: %v", kid, err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, _ := json.Marshal(set)
	return string(b)
}

func startOIDC(tb testing.TB, node, jwks string) *oidcProvider {
	tb.Helper()
	cmd := exec.Command(node, "oidc.mjs")
	cmd.Dir = clientsDir
	cmd.Env = append(cmd.Environ(), "OIDC_JWKS="+jwks)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close() // the script exits when its stdin ends
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("oidc-provider stderr:\n%s", stderr.tail(16<<10))
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				lines <- u
			}
		}
	}()
	select {
	case u := <-lines:
		return &oidcProvider{tb: tb, issuer: u, stdin: stdin}
	case <-time.After(30 * time.Second):
		tb.Fatalf("oidc-provider did not start within 30 s:\n%s", stderr.tail(16<<10))
	}
	return nil
}

// token runs the client-credentials grant for client (a user of clients/oidc.mjs) and returns
// the JWT access token, signed with alg (RS256 or ES256).
func (p *oidcProvider) token(client, alg string) string {
	p.tb.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"posts"},
		"resource": {"http://postgate.test/" + strings.ToLower(alg)}}
	req, _ := http.NewRequest(http.MethodPost, p.issuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, "secret")
	res, err := e2eHTTP.Do(req)
	if err != nil {
		p.tb.Fatalf("token: %v", err)
	}
	defer res.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &body); err != nil || body.AccessToken == "" {
		p.tb.Fatalf("token for %s: status %d: %s", client, res.StatusCode, raw)
	}
	if got := headerOf(p.tb, body.AccessToken)["alg"]; got != alg {
		p.tb.Fatalf("the provider signed with %v, want %s", got, alg)
	}
	return body.AccessToken
}

func (p *oidcProvider) rotate(jwks string) {
	p.tb.Helper()
	res, err := e2eHTTP.Post(p.issuer+"/test/rotate", "application/json", strings.NewReader(jwks))
	if err != nil || res.StatusCode != http.StatusNoContent {
		p.tb.Fatalf("rotate: %v %v", res, err)
	}
	res.Body.Close()
}

// jwksHits is how many times the provider served its key set.
func (p *oidcProvider) jwksHits() int {
	p.tb.Helper()
	res, err := e2eHTTP.Get(p.issuer + "/test/jwks-hits")
	if err != nil {
		p.tb.Fatal(err)
	}
	defer res.Body.Close()
	var b struct{ Hits int }
	json.NewDecoder(res.Body).Decode(&b)
	return b.Hits
}

func headerOf(tb testing.TB, token string) map[string]any {
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	var h map[string]any
	if err != nil || json.Unmarshal(raw, &h) != nil {
		tb.Fatalf("token header %q", head)
	}
	return h
}

func signed(tb testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims, header map[string]any) string {
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

const authorOf = `mutation { createPost(message: "who am I") { author } }`

// actsAs fails unless token creates a post as user.
func (s *testServer) actsAs(what, token, user string) {
	s.tb.Helper()
	var d struct{ CreatePost struct{ Author string } }
	s.mustData(s.do(token, authorOf, nil), &d)
	if d.CreatePost.Author != user {
		s.tb.Errorf("%s: acts as %q, want %q", what, d.CreatePost.Author, user)
	}
}

// TestRealIdentityProvider runs postgate against oidc-provider: its RS256 and ES256 access tokens
// act as their preferred_username over HTTP and websocket, keys rotate under a running gateway,
// and forged tokens (signed with the provider's own keys where that matters) are refused.
func TestRealIdentityProvider(t *testing.T) {
	node := requireTool(t, "node", "Node.js 20+ with npm (Debian: apt-get install -y nodejs npm), or run .ci/install")
	npmCI(t)
	keys := map[string]crypto.Signer{}
	for _, kid := range []string{"rsa-1", "rsa-2"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		keys[kid] = k
	}
	for _, kid := range []string{"ec-1", "ec-2"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keys[kid] = k
	}
	idp := startOIDC(t, node, privateJWKS(t, keys, "rsa-1", "ec-1"))
	s := startServe(t, "--jwks-url="+idp.issuer+"/jwks", "--jwt-issuer="+idp.issuer, "--jwt-audience=postgate",
		"--jwt-user-claim=preferred_username")

	rs, es := idp.token("ada", "RS256"), idp.token("brian", "ES256")
	s.actsAs("RS256 token over HTTP", rs, "ada")
	s.actsAs("ES256 token over HTTP", es, "brian")
	ctx := testDeadline(t, time.Minute)
	c, err := s.dialWS(ctx, es)
	if err != nil {
		t.Fatalf("websocket with the provider's ES256 token: %v", err)
	}
	c.subscribe(ctx, "1", authorOf, nil)
	var d struct{ CreatePost struct{ Author string } }
	c.nextData(ctx, "1", &d)
	if d.CreatePost.Author != "brian" {
		t.Errorf("websocket acts as %q, want brian", d.CreatePost.Author)
	}
	s.actsAs("postgate token beside the provider", s.token("cleo"), "cleo")

	t.Run("one name per person", func(t *testing.T) {
		s := s.in(t)
		var p struct{ CreatePost struct{ ID string } }
		s.mustData(s.do(rs, `mutation { createPost(message: "like me") { id } }`, nil), &p)
		nfd, nfc := idp.token("jose-nfd", "ES256"), idp.token("jose-nfc", "RS256")
		like := `mutation($id: ID!) { likePost(id: $id) { likes likedByMe } }`
		var l struct{ LikePost struct{ Likes int } }
		s.mustData(s.do(nfd, like, map[string]any{"id": p.CreatePost.ID}), &l)
		s.mustData(s.do(nfc, like, map[string]any{"id": p.CreatePost.ID}), &l)
		if l.LikePost.Likes != 1 {
			t.Errorf("José decomposed and composed liked to %d, want 1: they are one person", l.LikePost.Likes)
		}
		s.actsAs("decomposed name", nfd, "Jos\u00e9")
	})

	t.Run("forged tokens", func(t *testing.T) {
		s := s.in(t)
		rsaKey := keys["rsa-1"].(*rsa.PrivateKey)
		pub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
		attacker, _ := rsa.GenerateKey(rand.Reader, 2048)
		attackerJWK, _ := jwkset.NewJWKFromKey(&attacker.PublicKey, jwkset.JWKOptions{})
		claims := func(k string, v any) jwt.MapClaims {
			now := time.Now()
			c := jwt.MapClaims{"iss": idp.issuer, "aud": "postgate", "sub": "ada", "preferred_username": "ada",
				"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
			c[k] = v
			return c
		}
		genuine := func(c jwt.MapClaims) string { return signed(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c, nil) }
		s.actsAs("a well-formed token signed with the provider's key", genuine(claims("scope", "posts")), "ada")
		for _, tt := range []struct{ name, token string }{
			{"alg none", signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", claims("scope", "posts"), nil)},
			{"HS256 signed with the RSA public key", signed(t, jwt.SigningMethodHS256, pubPEM, "rsa-1", claims("scope", "posts"), nil)},
			{"wrong issuer", genuine(claims("iss", "http://evil.example.com"))},
			{"wrong audience", genuine(claims("aud", "another-api"))},
			{"string exp", genuine(claims("exp", fmt.Sprint(time.Now().Add(time.Hour).Unix())))},
			{"future nbf", genuine(claims("nbf", time.Now().Add(time.Minute).Unix()))},
			{"embedded jwk header", signed(t, jwt.SigningMethodRS256, attacker, "", claims("scope", "posts"), map[string]any{"jwk": attackerJWK.Marshal()})},
			{"name with a trailing space", genuine(claims("preferred_username", "ada "))},
		} {
			r := s.do(tt.token, authorOf, nil)
			if r.code() != "UNAUTHENTICATED" || r.Errors[0].Message != "invalid token" {
				t.Errorf("%s: %s, want UNAUTHENTICATED \"invalid token\"", tt.name, r.raw)
			}
		}
	})

	t.Run("rotation", func(t *testing.T) {
		s := s.in(t)
		idp.rotate(privateJWKS(t, keys, "rsa-2", "ec-2", "rsa-1", "ec-1"))
		rs2, es2 := idp.token("ada", "RS256"), idp.token("brian", "ES256")
		if kid := headerOf(t, rs2)["kid"]; kid != "rsa-2" {
			t.Fatalf("after rotation the provider signs with %v", kid)
		}
		s.actsAs("new RS256 key, at once", rs2, "ada")
		s.actsAs("new ES256 key, at once", es2, "brian")
		s.actsAs("old RS256 token, until it expires", rs, "ada")
		s.actsAs("old ES256 token, until it expires", es, "brian")
	})

	t.Run("unknown kid flood", func(t *testing.T) {
		s := s.in(t)
		before := idp.jwksHits()
		attacker, _ := rsa.GenerateKey(rand.Reader, 2048)
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok := signed(t, jwt.SigningMethodRS256, attacker, fmt.Sprintf("made-up-%d", i), jwt.MapClaims{
					"iss": idp.issuer, "aud": "postgate", "preferred_username": "ada", "exp": time.Now().Add(time.Minute).Unix()}, nil)
				if r := s.do(tok, authorOf, nil); r.code() != "UNAUTHENTICATED" {
					t.Errorf("made-up kid: %s", r.raw)
				}
			}()
		}
		wg.Wait()
		n := idp.jwksHits() - before
		t.Logf("30 made-up kids: the provider served its key set %d times", n)
		if n > 1 {
			t.Errorf("30 tokens with made-up kids made the provider serve its key set %d times, want at most 1 per 10 s", n)
		}
	})
}

// staticJWKS serves one EC key's set with a cache lifetime of a second, and can be taken down.
func staticJWKS(tb testing.TB) (*httptest.Server, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	j, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1"}})
	if err != nil {
		tb.Fatal(err)
	}
	set, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{j.Marshal()}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1")
		w.Write(set)
	}))
	tb.Cleanup(srv.Close)
	return srv, key
}

func TestReadyzReportsAJWKSUnreachablePastItsCacheLifetime(t *testing.T) {
	jwks, key := staticJWKS(t)
	s := startServe(t, "--jwks-url="+jwks.URL)
	s.actsAs("ES256 token", signed(t, jwt.SigningMethodES256, key, "k1", jwt.MapClaims{"sub": "ada", "exp": time.Now().Add(time.Minute).Unix()}, nil), "ada")
	jwks.Close()
	eventually(t, 20*time.Second, "/readyz reports the JWKS", func() error {
		res, err := e2eHTTP.Get(s.url + "/readyz")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "JWKS unreachable") {
			return fmt.Errorf("status %d: %s", res.StatusCode, body)
		}
		return nil
	})
}

func TestServeWithAnUnreachableJWKSFailsToStart(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	cfg := serveConfig(t, append(append([]string{"--data", t.TempDir(), "--addr", "127.0.0.1:0"}, embeddedFlags...), "--jwks-url="+dead.URL+"/jwks"))
	err := serve(context.Background(), cfg, slog.New(slog.DiscardHandler), func(string) { t.Error("serve started") })
	if err == nil || !strings.Contains(err.Error(), "--jwks-url") || !strings.Contains(err.Error(), "cannot fetch") {
		t.Fatalf("serve: %v, want a start-up error naming --jwks-url", err)
	}
}

func TestTokenRefusesATTLBeyondTheMaximum(t *testing.T) {
	var errOut strings.Builder
	if code := run(t.Context(), []string{"token", "--data", t.TempDir(), "--user", "ada", "--ttl", "48h"}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "--jwt-max-ttl") {
		t.Errorf("token --ttl 48h exited %d: %s", code, errOut.String())
	}
	if code := run(t.Context(), []string{"token", "--data", t.TempDir(), "--user", "ada "}, io.Discard, io.Discard); code != 1 {
		t.Errorf("token --user \"ada \" exited %d, want 1", code)
	}
}
