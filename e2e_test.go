package main

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// These tests run the whole binary in process: serve with its embedded event store, broker,
// projector and read model, over real HTTP and websockets. The rules of each resolver are tested in
// graph/ at handler level; here every contract operation and error code is exercised once through
// the real wiring, asynchronous read model included.

// postJSON is the Post fields the tests read.
type postJSON struct {
	ID           string       `json:"id"`
	Author       string       `json:"author"`
	Message      string       `json:"message"`
	CreatedAt    string       `json:"createdAt"`
	EditedAt     *string      `json:"editedAt"`
	Likes        int          `json:"likes"`
	LikedByMe    bool         `json:"likedByMe"`
	CommentCount int          `json:"commentCount"`
	Comments     commentsJSON `json:"comments"`
	Version      int          `json:"version"`
}

type commentJSON struct {
	ID        string  `json:"id"`
	PostID    string  `json:"postId"`
	Author    string  `json:"author"`
	Text      string  `json:"text"`
	CreatedAt string  `json:"createdAt"`
	EditedAt  *string `json:"editedAt"`
}

// commentsJSON is a CommentConnection: a page of comments, oldest first.
type commentsJSON struct {
	Edges []struct {
		Cursor string      `json:"cursor"`
		Node   commentJSON `json:"node"`
	} `json:"edges"`
	PageInfo struct {
		HasNextPage bool    `json:"hasNextPage"`
		EndCursor   *string `json:"endCursor"`
	} `json:"pageInfo"`
}

// nodes returns the page's comments in order.
func (c commentsJSON) nodes() []commentJSON {
	out := make([]commentJSON, len(c.Edges))
	for i, e := range c.Edges {
		out[i] = e.Node
	}
	return out
}

type connectionJSON struct {
	Edges []struct {
		Cursor string   `json:"cursor"`
		Node   postJSON `json:"node"`
	} `json:"edges"`
	PageInfo struct {
		HasNextPage bool    `json:"hasNextPage"`
		EndCursor   *string `json:"endCursor"`
	} `json:"pageInfo"`
}

func (c connectionJSON) ids() []string {
	out := make([]string, len(c.Edges))
	for i, e := range c.Edges {
		out[i] = e.Node.ID
	}
	return out
}

const postFields = `id author message createdAt editedAt likes likedByMe commentCount version comments { edges { cursor node { id postId author text createdAt editedAt } } pageInfo { hasNextPage endCursor } }`

// uniqueName returns a name no other test of this binary uses, so tests can share one server.
func uniqueName(prefix string) string {
	uniqueNameMu.Lock()
	defer uniqueNameMu.Unlock()
	uniqueNameN++
	return fmt.Sprintf("%s-%d", prefix, uniqueNameN)
}

var (
	uniqueNameMu sync.Mutex
	uniqueNameN  int
)

func (s *testServer) createPost(token, message string) postJSON {
	s.tb.Helper()
	var d struct{ CreatePost postJSON }
	s.mustData(s.do(token, `mutation($m: String!) { createPost(message: $m) { `+postFields+` } }`, map[string]any{"m": message}), &d)
	return d.CreatePost
}

// readPost returns post id as user sees it, waiting (in the server) for minVersion.
func (s *testServer) readPost(token, id string, minVersion int) *postJSON {
	s.tb.Helper()
	var d struct{ Post *postJSON }
	s.mustData(s.do(token, `query($id: ID!, $v: Int) { post(id: $id, minVersion: $v) { `+postFields+` } }`,
		map[string]any{"id": id, "v": minVersion}), &d)
	return d.Post
}

// waitLikes waits until the read model shows post id with the given like count: likes live in the
// likers' streams, so post(minVersion) cannot wait for them.
func (s *testServer) waitLikes(id string, likes int) {
	s.tb.Helper()
	eventually(s.tb, 20*time.Second, "likes of "+id, func() error {
		p := s.readPost("", id, 0)
		if p == nil || p.Likes != likes {
			return fmt.Errorf("post %+v, want %d likes", p, likes)
		}
		return nil
	})
}

func TestEndToEnd(t *testing.T) {
	s := startServe(t)

	t.Run("health, readiness and metrics", func(t *testing.T) { testProbes(t, s) })
	t.Run("a post's life: create, edit, like, comment, delete", func(t *testing.T) { testPostLifecycle(t, s) })
	t.Run("posts: filters, order and paging", func(t *testing.T) { testPostsQuery(t, s) })
	t.Run("every error code", func(t *testing.T) { testErrorCodes(t, s) })
	t.Run("persisted queries and GET", func(t *testing.T) { testPersistedQueries(t, s) })
	t.Run("likeCount subscriber sees every count while 20 users like", func(t *testing.T) { testLikeCountSubscription(t, s) })
	t.Run("postCreated for one author", func(t *testing.T) { testPostCreated(t, s) })
	t.Run("a bad websocket token closes with 4403", func(t *testing.T) { testWebsocketBadToken(t, s) })
	t.Run("rebuild while likes keep coming", func(t *testing.T) { testRebuildUnderLoad(t, s) })
	t.Run("verify after quiet", func(t *testing.T) { testVerify(t, s) })
	t.Run("graceful shutdown", func(t *testing.T) { testGracefulShutdown(t, s) })
}

func testProbes(t *testing.T, s *testServer) {
	s = s.in(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := e2eHTTP.Get(s.url + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	// Run one operation so that the GraphQL counters exist, then read them from /metrics.
	s.do("", `{ posts(first: 1) { edges { cursor } } }`, nil)
	m := s.metrics()
	for _, name := range []string{
		`postgate_graphql_operations_total{type="query"}`,
		"postgate_projector_events_applied_total",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if m[`postgate_graphql_operations_total{type="query"}`] < 1 {
		t.Errorf("query counter %v after a query", m[`postgate_graphql_operations_total{type="query"}`])
	}
}

var metricSample = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// metrics returns the samples of /metrics by name with labels, as Prometheus prints them.
func (s *testServer) metrics() map[string]float64 {
	s.tb.Helper()
	resp, err := e2eHTTP.Get(s.url + "/metrics")
	if err != nil {
		s.tb.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		s.tb.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		m := metricSample.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if v, err := strconv.ParseFloat(m[2], 64); err == nil {
			out[m[1]] = v
		}
	}
	return out
}

func testPostLifecycle(t *testing.T, s *testServer) {
	s = s.in(t)
	alice, bob, carol := uniqueName("alice"), uniqueName("bob"), uniqueName("carol")
	ta, tb, tc := s.token(alice), s.token(bob), s.token(carol)

	// createPost: the mutation's result already holds the post; the same clientMutationId from the
	// same user returns it again, from another user it makes another post.
	create := `mutation($m: String!, $c: String) { createPost(message: $m, clientMutationId: $c) { ` + postFields + ` } }`
	var c1, c2, c3 struct{ CreatePost postJSON }
	cmid := uniqueName("cmid")
	s.mustData(s.do(ta, create, map[string]any{"m": "hello", "c": cmid}), &c1)
	s.mustData(s.do(ta, create, map[string]any{"m": "hello again", "c": cmid}), &c2)
	s.mustData(s.do(tb, create, map[string]any{"m": "bob's", "c": cmid}), &c3)
	p := c1.CreatePost
	if p.ID == "" || p.Author != alice || p.Message != "hello" || p.Likes != 0 || p.EditedAt != nil || p.Version < 1 {
		t.Fatalf("created %+v", p)
	}
	if _, err := time.Parse(time.RFC3339Nano, p.CreatedAt); err != nil || !strings.HasSuffix(p.CreatedAt, "Z") {
		t.Errorf("createdAt %q is not RFC 3339 UTC: %v", p.CreatedAt, err)
	}
	if c2.CreatePost.ID != p.ID || c2.CreatePost.Message != "hello" {
		t.Errorf("retried createPost returned %+v, want the first post %s", c2.CreatePost, p.ID)
	}
	if c3.CreatePost.ID == p.ID {
		t.Errorf("bob's createPost with alice's clientMutationId returned alice's post")
	}

	// The read model catches up asynchronously; post(minVersion) waits for it.
	if got := s.readPost("", p.ID, p.Version); got == nil || got.Message != "hello" || got.Author != alice {
		t.Fatalf("post(minVersion: %d) = %+v", p.Version, got)
	}

	// editPost with the right expectedVersion succeeds; with the old one again it conflicts.
	edit := `mutation($id: ID!, $m: String!, $v: Int) { editPost(id: $id, message: $m, expectedVersion: $v) { ` + postFields + ` } }`
	var e struct{ EditPost postJSON }
	s.mustData(s.do(ta, edit, map[string]any{"id": p.ID, "m": "hello, edited", "v": p.Version}), &e)
	if e.EditPost.Message != "hello, edited" || e.EditPost.Version != p.Version+1 || e.EditPost.EditedAt == nil {
		t.Errorf("edited %+v, want version %d and editedAt", e.EditPost, p.Version+1)
	}
	s.wantCode("editPost with a stale expectedVersion", s.do(ta, edit, map[string]any{"id": p.ID, "m": "again", "v": p.Version}), "CONFLICT")
	s.wantCode("editPost by another user", s.do(tb, edit, map[string]any{"id": p.ID, "m": "mine"}), "FORBIDDEN")

	// likePost and unlikePost: repeating either is a no-op that still answers with the post.
	like := `mutation($id: ID!) { likePost(id: $id) { id likes likedByMe } }`
	unlike := `mutation($id: ID!) { unlikePost(id: $id) { id likes likedByMe } }`
	for i := 0; i < 2; i++ {
		var l struct{ LikePost postJSON }
		s.mustData(s.do(tb, like, map[string]any{"id": p.ID}), &l)
		if l.LikePost.Likes != 1 || !l.LikePost.LikedByMe {
			t.Errorf("like #%d by bob: %+v, want 1 like by me", i+1, l.LikePost)
		}
	}
	s.mustData(s.do(tc, like, map[string]any{"id": p.ID}), new(any))
	for i := 0; i < 2; i++ {
		var u struct{ UnlikePost postJSON }
		s.mustData(s.do(tc, unlike, map[string]any{"id": p.ID}), &u)
		if u.UnlikePost.Likes != 1 || u.UnlikePost.LikedByMe {
			t.Errorf("unlike #%d by carol: %+v, want bob's like only", i+1, u.UnlikePost)
		}
	}
	s.waitLikes(p.ID, 1)
	if got := s.readPost(tb, p.ID, 0); !got.LikedByMe {
		t.Errorf("bob reads likedByMe false after liking")
	}
	if got := s.readPost("", p.ID, 0); got.LikedByMe {
		t.Errorf("anonymous reads likedByMe true")
	}

	// Comments: add, edit by their author, remove by the post's author.
	var ac struct{ AddComment commentJSON }
	s.mustData(s.do(tb, `mutation($p: ID!, $t: String!) { addComment(postId: $p, text: $t) { id postId author text createdAt editedAt } }`,
		map[string]any{"p": p.ID, "t": "nice"}), &ac)
	cm := ac.AddComment
	if cm.ID == "" || cm.PostID != p.ID || cm.Author != bob || cm.Text != "nice" || cm.EditedAt != nil {
		t.Fatalf("addComment = %+v", cm)
	}
	var ec struct{ EditComment commentJSON }
	s.mustData(s.do(tb, `mutation($p: ID!, $c: ID!, $t: String!) { editComment(postId: $p, commentId: $c, text: $t) { id text editedAt } }`,
		map[string]any{"p": p.ID, "c": cm.ID, "t": "very nice"}), &ec)
	if ec.EditComment.Text != "very nice" || ec.EditComment.EditedAt == nil {
		t.Errorf("editComment = %+v", ec.EditComment)
	}
	s.wantCode("editComment by the post's author", s.do(ta, `mutation($p: ID!, $c: ID!) { editComment(postId: $p, commentId: $c, text: "x") { id } }`,
		map[string]any{"p": p.ID, "c": cm.ID}), "FORBIDDEN")
	// edit + comment + comment edit: the post's stream is now at version+3.
	got := s.readPost("", p.ID, p.Version+3)
	if got == nil || got.CommentCount != 1 || len(got.Comments.nodes()) != 1 || got.Comments.nodes()[0].Text != "very nice" || got.Message != "hello, edited" {
		t.Fatalf("post after comment = %+v", got)
	}
	var rc struct{ RemoveComment string }
	s.mustData(s.do(ta, `mutation($p: ID!, $c: ID!) { removeComment(postId: $p, commentId: $c) }`,
		map[string]any{"p": p.ID, "c": cm.ID}), &rc)
	if rc.RemoveComment != cm.ID {
		t.Errorf("removeComment = %q, want %q", rc.RemoveComment, cm.ID)
	}
	if got := s.readPost("", p.ID, p.Version+4); got == nil || got.CommentCount != 0 || len(got.Comments.nodes()) != 0 || got.Comments.PageInfo.HasNextPage {
		t.Errorf("post after removeComment = %+v", got)
	}

	// deletePost: author only; afterwards the post is gone for reads and NOT_FOUND for writes.
	s.wantCode("deletePost by another user", s.do(tb, `mutation($id: ID!) { deletePost(id: $id) }`, map[string]any{"id": p.ID}), "FORBIDDEN")
	var d struct{ DeletePost string }
	s.mustData(s.do(ta, `mutation($id: ID!) { deletePost(id: $id) }`, map[string]any{"id": p.ID}), &d)
	if d.DeletePost != p.ID {
		t.Errorf("deletePost = %q", d.DeletePost)
	}
	eventually(t, 20*time.Second, "deleted post disappears", func() error {
		if got := s.readPost("", p.ID, 0); got != nil {
			return fmt.Errorf("post(id) = %+v after deletion", got)
		}
		return nil
	})
	s.wantCode("likePost on a deleted post", s.do(tb, like, map[string]any{"id": p.ID}), "NOT_FOUND")
	var ps struct{ Posts connectionJSON }
	s.mustData(s.do("", `query($a: String) { posts(author: $a) { edges { node { id } } } }`, map[string]any{"a": alice}), &ps)
	if len(ps.Posts.Edges) != 0 {
		t.Errorf("posts(author: %s) lists %v after the deletion", alice, ps.Posts.ids())
	}
}

func testPostsQuery(t *testing.T, s *testServer) {
	s = s.in(t)
	author := uniqueName("writer")
	ta := s.token(author)
	// Three posts, oldest first; the middle one gets three likes and the last one a comment.
	var posts []postJSON
	for i := 0; i < 3; i++ {
		posts = append(posts, s.createPost(ta, fmt.Sprintf("post %d", i)))
	}
	for i := 0; i < 3; i++ {
		s.mustData(s.do(s.token(uniqueName("fan")), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": posts[1].ID}), new(any))
	}
	s.mustData(s.do(ta, `mutation($id: ID!) { addComment(postId: $id, text: "first!") { id } }`, map[string]any{"id": posts[2].ID}), new(any))
	s.waitLikes(posts[1].ID, 3)
	s.readPost("", posts[2].ID, posts[2].Version+1)
	for _, p := range posts[:1] {
		s.readPost("", p.ID, p.Version)
	}

	query := func(args string, vars map[string]any) connectionJSON {
		t.Helper()
		// Declare only the variables used: GraphQL rejects unused ones.
		types := map[string]string{"a": "String", "after": "String", "n": "Int", "l": "Int", "w": "Boolean"}
		var decl []string
		for name := range vars {
			decl = append(decl, "$"+name+": "+types[name])
		}
		q := "query"
		if len(decl) > 0 {
			q += "(" + strings.Join(decl, ", ") + ")"
		}
		var d struct{ Posts connectionJSON }
		s.mustData(s.do("", q+` { posts(`+args+`) {
			edges { cursor node { id author likes commentCount } } pageInfo { hasNextPage endCursor } } }`, vars), &d)
		return d.Posts
	}
	ids := func(ps ...postJSON) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.ID
		}
		return out
	}
	same := func(what string, got, want []string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	a := map[string]any{"a": author}
	same("posts(author, NEWEST)", query("author: $a, orderBy: NEWEST", a).ids(), ids(posts[2], posts[1], posts[0]))
	same("posts(author, OLDEST)", query("author: $a, orderBy: OLDEST", a).ids(), ids(posts[0], posts[1], posts[2]))
	if got := query("author: $a, orderBy: MOST_LIKED", a).ids(); len(got) != 3 || got[0] != posts[1].ID {
		t.Errorf("posts(author, MOST_LIKED) = %v, want %s first", got, posts[1].ID)
	}
	same("posts(author, minLikes: 3)", query("author: $a, minLikes: $l", map[string]any{"a": author, "l": 3}).ids(), ids(posts[1]))
	same("posts(author, withComments)", query("author: $a, withComments: $w", map[string]any{"a": author, "w": true}).ids(), ids(posts[2]))

	// Without author, the filters still hold for every post listed (other tests share the server).
	for _, e := range query("minLikes: $l, first: 100", map[string]any{"l": 3}).Edges {
		if e.Node.Likes < 3 {
			t.Errorf("posts(minLikes: 3) lists %+v", e.Node)
		}
	}
	withComments := query("withComments: $w, first: 100", map[string]any{"w": true})
	for _, e := range withComments.Edges {
		if e.Node.CommentCount == 0 {
			t.Errorf("posts(withComments: true) lists %+v", e.Node)
		}
	}
	if !slices.Contains(withComments.ids(), posts[2].ID) {
		t.Errorf("posts(withComments: true) lacks %s", posts[2].ID)
	}

	// Paging: two pages of two, following endCursor, give every post once in order.
	p1 := query("author: $a, orderBy: OLDEST, first: $n", map[string]any{"a": author, "n": 2})
	if !p1.PageInfo.HasNextPage || p1.PageInfo.EndCursor == nil || *p1.PageInfo.EndCursor != p1.Edges[len(p1.Edges)-1].Cursor {
		t.Fatalf("first page %+v", p1)
	}
	p2 := query("author: $a, orderBy: OLDEST, first: $n, after: $after", map[string]any{"a": author, "n": 2, "after": *p1.PageInfo.EndCursor})
	if p2.PageInfo.HasNextPage {
		t.Errorf("second page says it has a next one")
	}
	same("pages", append(p1.ids(), p2.ids()...), ids(posts...))
}

func testErrorCodes(t *testing.T, s *testServer) {
	s = s.in(t)
	owner, other := uniqueName("owner"), uniqueName("other")
	to, tx := s.token(owner), s.token(other)
	p := s.createPost(to, "mine")
	vars := map[string]any{"id": p.ID}

	// A token signed with another key, as a server with another data dir would issue it.
	foreign := foreignToken(t)

	// Over the complexity limit (5000 by default): ten aliased full pages with comments.
	var heavy strings.Builder
	heavy.WriteString("{")
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&heavy, " p%d: posts(first: 100) { edges { node { id comments(first: 5) { edges { node { id text } } } } } }", i)
	}
	heavy.WriteString(" }")

	tests := []struct {
		name, token, query, code string
		vars                     map[string]any
	}{
		{"a mutation without a token", "", `mutation { createPost(message: "x") { id } }`, "UNAUTHENTICATED", nil},
		{"a malformed token, even on a query", "not-a-jwt", `{ posts { edges { cursor } } }`, "UNAUTHENTICATED", nil},
		{"a token signed with another key", foreign, `mutation { createPost(message: "x") { id } }`, "UNAUTHENTICATED", nil},
		{"deleting another user's post", tx, `mutation($id: ID!) { deletePost(id: $id) }`, "FORBIDDEN", vars},
		{"liking an unknown post", tx, `mutation { likePost(id: "no-such-post") { id } }`, "NOT_FOUND", nil},
		{"a stale expectedVersion", to, `mutation($id: ID!) { editPost(id: $id, message: "m", expectedVersion: 99) { id } }`, "CONFLICT", vars},
		{"a blank message", to, `mutation { createPost(message: " ") { id } }`, "BAD_USER_INPUT", nil},
		{"a comment over 2000 characters", tx, `mutation($id: ID!, $t: String!) { addComment(postId: $id, text: $t) { id } }`, "BAD_USER_INPUT",
			map[string]any{"id": p.ID, "t": strings.Repeat("y", 2001)}},
		{"a syntax error", "", `{ posts( }`, "GRAPHQL_PARSE_FAILED", nil},
		{"an unknown field", "", `{ nope }`, "GRAPHQL_VALIDATION_FAILED", nil},
		{"an operation over the complexity limit", "", heavy.String(), "COMPLEXITY_LIMIT_EXCEEDED", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do(tt.token, tt.query, tt.vars)
			if r.code() != tt.code {
				t.Errorf("code %q, want %q (status %d, body %.500s)", r.code(), tt.code, r.status, r.raw)
			}
		})
	}
	t.Run("an unknown persisted query", func(t *testing.T) {
		r := s.post("", map[string]any{"extensions": map[string]any{"persistedQuery": map[string]any{
			"version": 1, "sha256Hash": strings.Repeat("ab", 32)}}})
		s.wantCode("hash only", r, "PERSISTED_QUERY_NOT_FOUND")
	})
}

// foreignToken returns a well-formed token for a user, signed with a key this server never saw.
func foreignToken(tb testing.TB) string {
	tb.Helper()
	cfg := serveConfig(tb, []string{"--data", tb.TempDir()})
	var out strings.Builder
	if err := token(cfg, "mallory", time.Hour, &out); err != nil {
		tb.Fatalf("token: %v", err)
	}
	return strings.TrimSpace(out.String())
}

func testPersistedQueries(t *testing.T, s *testServer) {
	s = s.in(t)
	q := `query APQ { posts(first: 1) { pageInfo { hasNextPage } } }`
	sum := sha256.Sum256([]byte(q))
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	s.wantCode("first hash-only request", s.post("", map[string]any{"extensions": ext}), "PERSISTED_QUERY_NOT_FOUND")
	s.mustData(s.post("", map[string]any{"query": q, "extensions": ext}), new(any))
	s.mustData(s.post("", map[string]any{"extensions": ext}), new(any))

	// GET, as Apollo sends persisted queries with useGETForHashedQueries.
	u := s.url + "/graphql?" + url.Values{"query": {`{ posts(first: 1) { edges { cursor } } }`}}.Encode()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.mustData(s.send(req), new(any))
}

func testLikeCountSubscription(t *testing.T, s *testServer) {
	s = s.in(t)
	ctx := testDeadline(t, 60*time.Second)
	p := s.createPost(s.token(uniqueName("star")), "like me")
	s.readPost("", p.ID, p.Version)

	before := s.metrics()[`postgate_graphql_subscribers{field="likeCount"}`]
	c, err := s.dialWS(ctx, "")
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	c.subscribe(ctx, "likes", `subscription($id: ID!) { likeCount(postId: $id) { postId likes version } }`, map[string]any{"id": p.ID})
	// graphql-transport-ws does not acknowledge a subscribe: wait until the server counts it.
	eventually(t, 10*time.Second, "likeCount subscriber registered", func() error {
		if n := s.metrics()[`postgate_graphql_subscribers{field="likeCount"}`]; n < before+1 {
			return fmt.Errorf("%v likeCount subscribers", n)
		}
		return nil
	})

	const users = 20
	tokens := make([]string, 2*users)
	for i := range tokens {
		tokens[i] = s.token(uniqueName("liker"))
	}
	like := func(tok string) error {
		r := s.do(tok, `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": p.ID})
		if len(r.Errors) > 0 || r.status != http.StatusOK {
			return fmt.Errorf("likePost: %d %s", r.status, r.raw)
		}
		return nil
	}
	var got []int
	lastVersion := -1
	next := func() int {
		t.Helper()
		var d struct {
			LikeCount struct {
				PostID  string `json:"postId"`
				Likes   int    `json:"likes"`
				Version int    `json:"version"`
			} `json:"likeCount"`
		}
		m, err := c.read(ctx)
		if err != nil {
			t.Fatalf("after like counts %v: %v", got, err)
		}
		c.decodeNext(m, "likes", &d)
		if d.LikeCount.PostID != p.ID || d.LikeCount.Version <= lastVersion {
			t.Fatalf("message %+v after version %d (counts so far %v)", d.LikeCount, lastVersion, got)
		}
		lastVersion = d.LikeCount.Version
		got = append(got, d.LikeCount.Likes)
		return d.LikeCount.Likes
	}

	// Twenty users like one after another: the subscriber receives every count, in order.
	for i, tok := range tokens[:users] {
		if err := like(tok); err != nil {
			t.Fatal(err)
		}
		if n := next(); n != i+1 {
			t.Fatalf("like counts %v, want 1..%d in order", got, i+1)
		}
	}

	// Twenty more like at once. The projector applies what arrives together in one transaction and
	// announces the count it committed, so counts may be skipped, but never reordered or repeated,
	// and the last message holds the final count.
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for _, tok := range tokens[users:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := like(tok); err != nil {
				errs <- err
			}
		}()
	}
	burst := len(got)
	for last := got[len(got)-1]; last < 2*users; {
		n := next()
		if n <= last {
			t.Fatalf("like counts %v are not increasing", got)
		}
		last = n
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("concurrent likes: %d messages for %d likes: %v", len(got)-burst, users, got[burst:])
}

func testPostCreated(t *testing.T, s *testServer) {
	s = s.in(t)
	ctx := testDeadline(t, 30*time.Second)
	author, other := uniqueName("poet"), uniqueName("critic")
	before := s.metrics()[`postgate_graphql_subscribers{field="postCreated"}`]
	c, err := s.dialWS(ctx, s.token(other))
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	c.subscribe(ctx, "new", `subscription($a: String) { postCreated(author: $a) { id author message } }`, map[string]any{"a": author})
	eventually(t, 10*time.Second, "postCreated subscriber registered", func() error {
		if n := s.metrics()[`postgate_graphql_subscribers{field="postCreated"}`]; n < before+1 {
			return fmt.Errorf("%v postCreated subscribers", n)
		}
		return nil
	})
	s.createPost(s.token(other), "not for this subscriber")
	want := s.createPost(s.token(author), "for this subscriber")
	var d struct{ PostCreated postJSON }
	c.nextData(ctx, "new", &d)
	if d.PostCreated.ID != want.ID || d.PostCreated.Author != author || d.PostCreated.Message != "for this subscriber" {
		t.Fatalf("postCreated(author: %s) sent %+v, want post %s", author, d.PostCreated, want.ID)
	}
}

func testWebsocketBadToken(t *testing.T, s *testServer) {
	s = s.in(t)
	ctx := testDeadline(t, 20*time.Second)
	_, err := s.dialWS(ctx, "not-a-jwt")
	if code := websocket.CloseStatus(err); code != 4403 {
		t.Fatalf("dial with a bad token: %v (close status %d), want close 4403", err, code)
	}
}

func testVerify(t *testing.T, s *testServer) {
	s = s.in(t)
	// The read model catches up asynchronously: verify is retried until it agrees or the deadline passes.
	var out, errOut string
	var code int
	eventually(t, 30*time.Second, "postgate verify exits 0", func() error {
		out, errOut, code = s.command("verify")
		if code != 0 {
			return fmt.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
		return nil
	})
	if !strings.Contains(out, "read model equals") {
		t.Errorf("verify printed %q", out)
	}
}

// testRebuildUnderLoad runs `postgate rebuild` as a separate command against the data dir of the
// running server while users keep liking. A row tampered with beforehand (which `verify` must
// catch) proves that the server answers from the new generation afterwards, and every like,
// including those made during the rebuild, is counted once.
func testRebuildUnderLoad(t *testing.T, s *testServer) {
	s = s.in(t)
	p := s.createPost(s.token(uniqueName("rebuilder")), "rebuilt")
	like := func() error {
		r := s.do(s.token(uniqueName("fan")), `mutation($id: ID!) { likePost(id: $id) { likes } }`, map[string]any{"id": p.ID})
		if len(r.Errors) > 0 {
			return fmt.Errorf("like: %s", r.raw)
		}
		return nil
	}
	for range 10 {
		if err := like(); err != nil {
			t.Fatal(err)
		}
	}
	s.waitLikes(p.ID, 10)

	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.data, "read.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("UPDATE posts SET likes = likes + 1000 WHERE id = ?", p.ID); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	if out, _, code := s.command("verify"); code != 1 || !strings.Contains(out, "likes") {
		t.Fatalf("verify after tampering: exit %d\n%s", code, out)
	}

	// Likes keep coming until the rebuild has returned; at least one overlaps it.
	done := make(chan struct{})
	var during atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := like(); err != nil {
				t.Error(err)
				return
			}
			during.Add(1)
		}
	}()
	out, errOut, code := s.command("rebuild")
	close(done)
	wg.Wait()
	if code != 0 {
		t.Fatalf("postgate rebuild: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "rebuild: ") {
		t.Errorf("rebuild printed no progress lines: %q", out)
	}
	var events, gen, replaced, pos int64
	summary := out[strings.LastIndex(out, "rebuilt read model"):]
	if _, err := fmt.Sscanf(summary, "rebuilt read model: %d events into generation %d (replaced %d), at position %d", &events, &gen, &replaced, &pos); err != nil || gen == replaced {
		t.Fatalf("rebuild summary %q (%v): the generation did not change", summary, err)
	}
	if during.Load() == 0 {
		t.Fatal("no like overlapped the rebuild")
	}
	s.waitLikes(p.ID, 10+int(during.Load()))
}

func testGracefulShutdown(t *testing.T, s *testServer) {
	s = s.in(t)
	ctx := testDeadline(t, 40*time.Second)
	p := s.createPost(s.token(uniqueName("last")), "before shutdown")

	// An open subscription must not hold the shutdown up: it ends with the server.
	c, err := s.dialWS(ctx, "")
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	c.subscribe(ctx, "created", `subscription { postCreated { id } }`, nil)

	// A request in flight when the shutdown starts is still answered: this one waits in the server
	// for a version the post never reaches (about 5 s).
	queries := func() float64 { return s.metrics()[`postgate_graphql_operations_total{type="query"}`] }
	before := queries()
	type answer struct {
		status int
		body   string
		err    error
	}
	inflight := make(chan answer, 1)
	go func() {
		body := fmt.Sprintf(`{"query":"{ post(id: \"%s\", minVersion: 1000000) { id } }"}`, p.ID)
		resp, err := e2eHTTP.Post(s.url+"/graphql", "application/json", strings.NewReader(body))
		if err != nil {
			inflight <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		inflight <- answer{status: resp.StatusCode, body: string(b), err: err}
	}()
	eventually(t, 10*time.Second, "the slow query started", func() error {
		if n := queries(); n < before+1 {
			return fmt.Errorf("%v queries started", n)
		}
		return nil
	})

	took := s.stop(t)
	t.Logf("shutdown took %s", took)
	if took > 20*time.Second {
		t.Errorf("shutdown took %s, over the 20 s timeout", took)
	}
	select {
	case a := <-inflight:
		// After its bounded wait, post(minVersion) answers the current state: a real answer, not
		// an error from a request cut off by the shutdown.
		if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, `"post":{"id":"`+p.ID+`"}`) || strings.Contains(a.body, `"errors"`) {
			t.Errorf("the request in flight at shutdown got %d %q, %v", a.status, a.body, a.err)
		}
	case <-ctx.Done():
		t.Errorf("the request in flight at shutdown got no answer")
	}
	// The socket ends with 1012 (service restart) and no "complete": the subscription did not
	// finish, and the client is to resubscribe elsewhere. Posts created by the other subtests may
	// still arrive before the close.
	for {
		m, err := c.read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Errorf("the subscription's websocket stayed open after shutdown")
			} else if code := websocket.CloseStatus(err); code != websocket.StatusServiceRestart {
				t.Errorf("the subscription's websocket ended with %v, want close status 1012", err)
			}
			break
		}
		if m.Type != "next" {
			t.Errorf("at shutdown the subscription got %s %s %s, want only the close", m.Type, m.ID, m.Payload)
		}
	}
	if _, err := e2eHTTP.Get(s.url + "/healthz"); err == nil {
		t.Errorf("/healthz still answers after shutdown")
	}

	// Stopped, the data dir is quiet: verify folds the store and must find the read model equal.
	if out, errOut, code := s.command("verify"); code != 0 {
		t.Errorf("postgate verify after shutdown: exit %d\n%s\n%s", code, out, errOut)
	}
}
