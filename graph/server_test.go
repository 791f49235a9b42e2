package graph

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/postgate/postgate/graph/internal/gensum/sums"
	"github.com/postgate/postgate/read"
)

func TestGeneratedCodeIsFresh(t *testing.T) {
	want, err := os.ReadFile(sums.File)
	if err != nil {
		t.Fatalf("read %s: %v", sums.File, err)
	}
	got, err := sums.Compute(".")
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("generated code is stale or was edited by hand: run `go generate ./graph`\n got:\n%s want:\n%s", got, want)
	}
}

func TestTokens(t *testing.T) {
	valid, err := IssueToken(testSecret, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	future := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name, token, user string
	}{
		{"a token issued with the secret is valid", valid, "alice"},
		{"alg none is rejected", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": future}), ""},
		{"another key is rejected", sign(jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "alice", "exp": future}), ""},
		{"another HMAC algorithm is rejected", sign(jwt.SigningMethodHS512, testSecret, jwt.MapClaims{"sub": "alice", "exp": future}), ""},
		{"an expired token is rejected", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), ""},
		{"a token without expiry is rejected", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice"}), ""},
		{"a token without subject is rejected", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"exp": future}), ""},
		{"a malformed token is rejected", "abc.def.ghi", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := VerifyToken(testSecret, tt.token)
			if tt.user != "" {
				if err != nil || user != tt.user {
					t.Fatalf("VerifyToken = %q, %v; want %q", user, err, tt.user)
				}
				return
			}
			if err == nil {
				t.Fatalf("VerifyToken accepted it as %q", user)
			}
		})
	}
	if _, err := IssueToken(nil, "alice", time.Hour); err == nil {
		t.Error("IssueToken with an empty secret succeeded")
	}
}

func TestExpiredTokenOverHTTPIsUnauthenticated(t *testing.T) {
	e := newEnv(t)
	expired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}).SignedString(testSecret)
	if r := e.do(expired, `mutation { createPost(message: "x") { id } }`, nil); r.code() != CodeUnauthenticated {
		t.Fatalf("response %s, want UNAUTHENTICATED", r.raw)
	}
}

func TestMinVersionWaitsForTheReadModel(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "v1")
	e.project()
	e.mustData(e.do(e.token("alice"), `mutation($id: ID!) { editPost(id: $id, message: "v2") { id } }`, map[string]any{"id": p.ID}), new(any))

	type result struct {
		r   gqlResponse
		dur time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		// e.do may not call Fatal off the test goroutine; decode errors surface as a missing post.
		r := e.doBody("", map[string]any{"query": `query($id: ID!) { post(id: $id, minVersion: 2) { message version } }`, "variables": map[string]any{"id": p.ID}})
		done <- result{r, time.Since(start)}
	}()
	// Project only once the query is waiting, so it can only succeed by waiting.
	deadline := time.Now().Add(10 * time.Second)
	for e.reads.single.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the query never started waiting")
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}
	e.project()
	select {
	case res := <-done:
		var d struct{ Post *postJSON }
		e.mustData(res.r, &d)
		if d.Post == nil || d.Post.Message != "v2" || d.Post.Version != 2 {
			t.Fatalf("post(minVersion: 2) = %+v", d.Post)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("post(minVersion) did not return")
	}
}

// TestMinVersionAfterAnAbsentRead: a read before the post was projected caches its absence; a
// later post(minVersion) that the read model satisfies must not answer from that cache.
func TestMinVersionAfterAnAbsentRead(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "v1")
	var before struct{ Post *postJSON }
	e.mustData(e.do("", `query($id: ID!) { post(id: $id) { id } }`, map[string]any{"id": p.ID}), &before)
	if before.Post != nil {
		t.Fatalf("post before projection: %+v", before.Post)
	}
	// Project without telling the Hub, as when the notification is still on its way.
	evs, err := e.store.ReadAll(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.model.Apply(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var after struct{ Post *postJSON }
	e.mustData(e.do("", `query($id: ID!) { post(id: $id, minVersion: 1) { message version } }`, map[string]any{"id": p.ID}), &after)
	if after.Post == nil || after.Post.Version != 1 {
		t.Fatalf("post(minVersion: 1) = %+v, want the projected post", after.Post)
	}
}

func TestPageIsBatched(t *testing.T) {
	e := newEnv(t)
	for _, n := range []int{5, 40} {
		e2 := newEnv(t)
		e = e2
		var ids []string
		for i := range n {
			ids = append(ids, e.createPost("alice", fmt.Sprintf("p%d", i)).ID)
		}
		bob := e.token("bob")
		for _, id := range ids[:n/2] {
			e.mustData(e.do(bob, `mutation($id: ID!) { likePost(id: $id) { id } addComment(postId: $id, text: "c") { id } }`, map[string]any{"id": id}), new(any))
		}
		e.project()
		c0, l0, s0 := e.reads.comments.Load(), e.reads.likedBy.Load(), e.reads.single.Load()
		var d struct {
			Posts struct{ Edges []struct{ Node postJSON } }
		}
		e.mustData(e.do(bob, `{ posts(first: 40) { edges { node { id likedByMe comments { edges { node { id } } } } } } }`, nil), &d)
		if len(d.Posts.Edges) != n {
			t.Fatalf("page of %d posts has %d", n, len(d.Posts.Edges))
		}
		liked := 0
		for _, ed := range d.Posts.Edges {
			if ed.Node.LikedByMe {
				liked++
			}
		}
		if liked != n/2 {
			t.Errorf("%d posts liked by bob, want %d", liked, n/2)
		}
		if c, l, s := e.reads.comments.Load()-c0, e.reads.likedBy.Load()-l0, e.reads.single.Load()-s0; c != 1 || l != 1 || s != 0 {
			t.Errorf("page of %d: %d comment queries, %d likedBy queries, %d single-post queries; want 1, 1, 0", n, c, l, s)
		}
	}
}

func TestPersistedQueries(t *testing.T) {
	e := newEnv(t)
	const q = `{ posts { pageInfo { hasNextPage } } }`
	sum := sha256.Sum256([]byte(q))
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	if r := e.doBody("", map[string]any{"extensions": ext}); r.code() != "PERSISTED_QUERY_NOT_FOUND" {
		t.Fatalf("unknown hash: %s", r.raw)
	}
	if r := e.doBody("", map[string]any{"query": q, "extensions": ext}); len(r.Errors) > 0 {
		t.Fatalf("registering: %s", r.raw)
	}
	if r := e.doBody("", map[string]any{"extensions": ext}); len(r.Errors) > 0 || !strings.Contains(string(r.Data), "hasNextPage") {
		t.Fatalf("known hash: %s", r.raw)
	}
}

// TestListsCostWhatTheyCanReturn: with the default limit, a full page of posts with a few comments
// each passes, and aliasing many such pages (a cheap way to ask for megabytes) does not; a page of
// comments costs what its first allows (20 when absent).
func TestListsCostWhatTheyCanReturn(t *testing.T) {
	e := newEnv(t)
	const page = `posts(first: 100) { edges { cursor node { id author message likes comments(first: 5) { edges { node { id text } } } } } }`
	if r := e.do("", "{ "+page+" }", nil); len(r.Errors) > 0 {
		t.Fatalf("one full page: %s", r.raw)
	}
	// 100 posts with 20 comments each cost 1 + 100 * (1 + 4 + 1 + 20 * 4 + 1) + 1.
	if r := e.do("", `{ posts(first: 100) { edges { cursor node { id author message likes comments { edges { node { id text } } } } } } }`, nil); r.code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Fatalf("100 posts with 20 comments each: %.300s, want COMPLEXITY_LIMIT_EXCEEDED", r.raw)
	}
	if r := e.do("", `{ posts(first: 20) { edges { cursor node { id author message likes comments { edges { node { id text } } } } } } }`, nil); len(r.Errors) > 0 {
		t.Fatalf("the default page of posts with their default page of comments: %s", r.raw)
	}
	var aliased strings.Builder
	aliased.WriteString("{")
	// Five pages, not sixty: sixty aliases are refused before complexity is computed.
	for i := range 5 {
		fmt.Fprintf(&aliased, " p%d: %s", i, page)
	}
	aliased.WriteString(" }")
	if r := e.do("", aliased.String(), nil); r.code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Fatalf("five aliased full pages: %.300s, want COMPLEXITY_LIMIT_EXCEEDED", r.raw)
	}
	small := `{ a: posts(first: 1) { edges { node { id } } } b: posts(first: 1) { edges { node { id } } } }`
	if r := e.do("", small, nil); len(r.Errors) > 0 {
		t.Fatalf("two one-post pages: %s", r.raw)
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) {
		c.ComplexityLimit = 10
		c.ParserTokenLimit = 200
		c.MaxBodyBytes = 4096
	})
	if r := e.do("", `{ posts { edges { cursor node { id author message likes likedByMe commentCount version comments { edges { node { id text } } } } } } }`, nil); r.code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Errorf("complex query: %s", r.raw)
	}
	many := "{ " + strings.Repeat("a: __typename ", 150) + "}"
	if r := e.do("", many, nil); len(r.Errors) == 0 || r.code() == CodeInternal {
		t.Errorf("query over the token limit: %s", r.raw)
	}
	big := `{"query": "{ __typename }", "variables": {"pad": "` + strings.Repeat("x", 5000) + `"}}`
	if r := e.doRaw("", []byte(big)); r.status != http.StatusRequestEntityTooLarge || r.code() != CodeBadRequest {
		t.Errorf("declared oversized body: status %d, %s", r.status, r.raw)
	}
	// Without a Content-Length the limit bites while reading.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Content-Type", "application/json")
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "too large") || strings.Contains(string(body), "xxxx") {
		t.Errorf("streamed oversized body: %s", body)
	}
	// A malformed body is not echoed back: it may hold a token or a password.
	if r := e.doRaw("", []byte(`{"query": "secret-password`)); r.code() != CodeBadRequest || strings.Contains(r.raw, "secret-password") {
		t.Errorf("malformed JSON: %s", r.raw)
	}
}

func TestIntrospectionIsConfigurable(t *testing.T) {
	const q = `{ __schema { queryType { name } } }`
	if r := newEnv(t).do("", q, nil); len(r.Errors) > 0 {
		t.Errorf("introspection by default: %s", r.raw)
	}
	off := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.DisableIntrospection = true })
	if r := off.do("", q, nil); len(r.Errors) == 0 {
		t.Errorf("introspection when disabled: %s", r.raw)
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.AllowedOrigins = []string{"https://app.example.com"} })
	for origin, allowed := range map[string]bool{"https://app.example.com": true, "https://evil.example.com": false} {
		req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+"/graphql", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Access-Control-Allow-Origin") == origin; got != allowed {
			t.Errorf("origin %s: allowed=%v, want %v", origin, got, allowed)
		}
	}
}

func TestGraphiQLIsServedOffline(t *testing.T) {
	e := newEnv(t)
	res, err := e.srv.Client().Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	page := html.UnescapeString(string(raw)) // attributes are HTML-escaped ("+" as "&#43;")
	if res.StatusCode != http.StatusOK || strings.Contains(page, "cdn.jsdelivr") || strings.Contains(page, "https://") {
		t.Fatalf("GraphiQL page (%d) refers to the internet:\n%s", res.StatusCode, page)
	}
	for _, asset := range []string{"graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js"} {
		if !strings.Contains(page, `"/graphiql/`+asset+`"`) || !strings.Contains(page, sri(asset)) {
			t.Errorf("page does not load %s with its integrity hash", asset)
		}
		res, err := e.srv.Client().Get(e.srv.URL + "/graphiql/" + asset)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || n < 1000 {
			t.Errorf("asset %s: status %d, %d bytes", asset, res.StatusCode, n)
		}
	}
	// gqlgen pins these hashes for the same npm files; equal hashes prove the files are unmodified.
	if got := sri("graphiql.min.js"); got != "sha256-hnImuor1znlJkD/FOTL3jayfS/xsyNoP04abi8bFJWs=" {
		t.Errorf("graphiql.min.js is not the npm graphiql@4.1.2 file: %s", got)
	}
}

func TestMetricsCountOperationsAndErrors(t *testing.T) {
	e := newEnv(t)
	e.createPost("alice", "m")
	e.do("", `mutation { createPost(message: "x") { id } }`, nil)
	families, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				seen[f.GetName()+"/"+l.GetValue()] = true
			}
		}
	}
	for _, want := range []string{"postgate_graphql_operations_total/mutation", "postgate_graphql_errors_total/UNAUTHENTICATED", "postgate_graphql_mutation_seconds/createPost"} {
		if !seen[want] {
			t.Errorf("metric %s missing; have %v", want, seen)
		}
	}
}

func TestHubDropsASlowSubscriberWithoutSlowingOthers(t *testing.T) {
	e := newEnv(t, func(_ *ServerConfig, h *[]HubOption) { *h = append(*h, WithBuffer(2)) })
	p := e.createPost("alice", "x")
	e.project()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slowCtx := context.WithValue(ctx, overflowKey{}, new(atomic.Bool))
	slow := e.hub.SubscribeLikes(slowCtx, p.ID)
	fast := e.hub.SubscribeLikes(ctx, p.ID)
	var got []int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := range fast {
			got = append(got, v.Likes)
			if v.Likes == 10 {
				return
			}
		}
	}()
	for i := int64(1); i <= 10; i++ {
		e.hub.Publish([]read.Change{{PostID: p.ID, LikesChange: true, Likes: i, LikeVersion: i}})
		if i%2 == 0 {
			// Let the fast reader drain so that only the slow one overflows.
			deadline := time.Now().Add(5 * time.Second)
			for len(fast) > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
			}
		}
	}
	wg.Wait()
	if len(got) != 10 {
		t.Fatalf("fast subscriber got %v, want 10 counts", got)
	}
	n := 0
	for range slow {
		n++
	}
	if n != 2 {
		t.Fatalf("slow subscriber got %d buffered messages before being dropped, want 2", n)
	}
	if !overflowFlag(slowCtx).Load() {
		t.Fatal("slow subscriber was not flagged as dropped")
	}
}

// TestEveryErrorHasACode: errors that gqlgen's transports and extensions produce on their own
// carry an extensions.code too.
func TestEveryErrorHasACode(t *testing.T) {
	e := newEnv(t)
	send := func(method, url, contentType, body string) gqlResponse {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var r gqlResponse
		_ = json.Unmarshal(b, &r)
		r.status, r.raw = res.StatusCode, string(b)
		return r
	}
	cases := map[string]gqlResponse{
		"a text/plain POST":   send(http.MethodPost, e.srv.URL+"/graphql", "text/plain", `{ posts { pageInfo { hasNextPage } } }`),
		"a DELETE":            send(http.MethodDelete, e.srv.URL+"/graphql", "", ""),
		"a mutation over GET": send(http.MethodGet, e.srv.URL+"/graphql?query="+url.QueryEscape(`mutation { createPost(message: "x") { id } }`), "", ""),
		"a persisted-query hash that does not match": send(http.MethodPost, e.srv.URL+"/graphql", "application/json",
			`{"query":"{ posts { pageInfo { hasNextPage } } }","extensions":{"persistedQuery":{"version":1,"sha256Hash":"deadbeef"}}}`),
		"31 aliases": send(http.MethodPost, e.srv.URL+"/graphql", "application/json",
			`{"query":"{ `+aliasList(31)+` }"}`),
		"a directive repeated 1,000 times (errors capped)": send(http.MethodPost, e.srv.URL+"/graphql", "application/json",
			`{"query":"{ __typename`+strings.Repeat(" @include(if: true)", 1000)+` }"}`),
		"30 bad cursors (execution errors capped)": send(http.MethodPost, e.srv.URL+"/graphql", "application/json",
			`{"query":"{ `+strings.Repeat(`p: posts(after: \"bad\") { pageInfo { hasNextPage } } `, 30)+` }"}`),
	}
	small := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MaxAnswerBytes = 100 })
	small.mustData(small.do(small.token("alice"), `mutation($m: String!) { createPost(message: $m) { id } }`, map[string]any{"m": strings.Repeat("x", 200)}), new(any))
	small.project()
	cases["an answer over the limit"] = small.do("", `{ posts { edges { node { message } } } }`, nil)
	for name, r := range cases {
		if len(r.Errors) == 0 {
			t.Errorf("%s: %d %s, want errors with extensions.code", name, r.status, r.raw)
		}
		for _, e := range r.Errors {
			if c, _ := e.Extensions["code"].(string); c == "" {
				t.Errorf("%s: error %q has no code (%d %.300s)", name, e.Message, r.status, r.raw)
			}
		}
	}
}

func aliasList(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "a%d: __typename ", i)
	}
	return b.String()
}
