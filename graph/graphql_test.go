package graph

import (
	"fmt"
	"testing"
)

func TestPostLifecycleOverHTTP(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.token("alice"), e.token("bob")

	p := e.createPost("alice", "hello")
	if p.Author != "alice" || p.Message != "hello" || p.Version != 1 || p.Likes != 0 || p.EditedAt != nil {
		t.Fatalf("created post = %+v", p)
	}

	// The read model has not caught up: post(id) is null until projection.
	var q struct{ Post *postJSON }
	e.mustData(e.do("", `query($id: ID!) { post(id: $id) { id } }`, map[string]any{"id": p.ID}), &q)
	if q.Post != nil {
		t.Fatalf("post before projection = %+v, want null", q.Post)
	}
	e.project()
	e.mustData(e.do("", `query($id: ID!) { post(id: $id) { `+postFields+` } }`, map[string]any{"id": p.ID}), &q)
	if q.Post == nil || q.Post.Message != "hello" || q.Post.LikedByMe {
		t.Fatalf("post after projection = %+v", q.Post)
	}

	// A mutation's result includes its own effect even before the projector applies it.
	var liked struct{ LikePost postJSON }
	e.mustData(e.do(bob, `mutation($id: ID!) { likePost(id: $id) { likes likedByMe } }`, map[string]any{"id": p.ID}), &liked)
	if liked.LikePost.Likes != 1 || !liked.LikePost.LikedByMe {
		t.Fatalf("likePost before projection = %+v, want 1 like by me", liked.LikePost)
	}
	e.mustData(e.do(bob, `mutation($id: ID!) { likePost(id: $id) { likes likedByMe } }`, map[string]any{"id": p.ID}), &liked)
	if liked.LikePost.Likes != 1 {
		t.Fatalf("repeated likePost = %+v, want still 1", liked.LikePost)
	}
	e.project()
	e.mustData(e.do(bob, `mutation($id: ID!) { likePost(id: $id) { likes likedByMe } }`, map[string]any{"id": p.ID}), &liked)
	if liked.LikePost.Likes != 1 || !liked.LikePost.LikedByMe {
		t.Fatalf("likePost after projection = %+v, want 1", liked.LikePost)
	}
	var unliked struct{ UnlikePost postJSON }
	e.mustData(e.do(bob, `mutation($id: ID!) { unlikePost(id: $id) { likes likedByMe } }`, map[string]any{"id": p.ID}), &unliked)
	if unliked.UnlikePost.Likes != 0 || unliked.UnlikePost.LikedByMe {
		t.Fatalf("unlikePost = %+v, want 0", unliked.UnlikePost)
	}
	e.mustData(e.do(bob, `mutation($id: ID!) { likePost(id: $id) { likes } }`, map[string]any{"id": p.ID}), &liked)
	e.project()

	var edited struct{ EditPost postJSON }
	e.mustData(e.do(alice, `mutation($id: ID!) { editPost(id: $id, message: "hello, world", expectedVersion: 1) { message version editedAt likes } }`, map[string]any{"id": p.ID}), &edited)
	if edited.EditPost.Message != "hello, world" || edited.EditPost.Version != 2 || edited.EditPost.EditedAt == nil || edited.EditPost.Likes != 1 {
		t.Fatalf("editPost = %+v", edited.EditPost)
	}

	var added struct{ AddComment commentJSON }
	e.mustData(e.do(bob, `mutation($id: ID!) { addComment(postId: $id, text: "nice") { id postId author text } }`, map[string]any{"id": p.ID}), &added)
	c := added.AddComment
	if c.Author != "bob" || c.Text != "nice" || c.PostID != p.ID || c.ID == "" {
		t.Fatalf("addComment = %+v", c)
	}
	var ec struct{ EditComment commentJSON }
	e.mustData(e.do(bob, `mutation($p: ID!, $c: ID!) { editComment(postId: $p, commentId: $c, text: "very nice") { text editedAt } }`, map[string]any{"p": p.ID, "c": c.ID}), &ec)
	if ec.EditComment.Text != "very nice" || ec.EditComment.EditedAt == nil {
		t.Fatalf("editComment = %+v", ec.EditComment)
	}
	e.project()
	e.mustData(e.do(bob, `query($id: ID!) { post(id: $id) { `+postFields+` } }`, map[string]any{"id": p.ID}), &q)
	if q.Post.CommentCount != 1 || len(q.Post.Comments.nodes()) != 1 || q.Post.Comments.nodes()[0].Text != "very nice" || !q.Post.LikedByMe || q.Post.Likes != 1 {
		t.Fatalf("post after comments = %+v", q.Post)
	}

	// The post's author may remove anyone's comment.
	var rc struct{ RemoveComment string }
	e.mustData(e.do(alice, `mutation($p: ID!, $c: ID!) { removeComment(postId: $p, commentId: $c) }`, map[string]any{"p": p.ID, "c": c.ID}), &rc)
	if rc.RemoveComment != c.ID {
		t.Fatalf("removeComment = %q, want %q", rc.RemoveComment, c.ID)
	}
	var del struct{ DeletePost string }
	e.mustData(e.do(alice, `mutation($id: ID!) { deletePost(id: $id) }`, map[string]any{"id": p.ID}), &del)
	if del.DeletePost != p.ID {
		t.Fatalf("deletePost = %q", del.DeletePost)
	}
	e.project()
	e.mustData(e.do("", `query($id: ID!) { post(id: $id) { id } }`, map[string]any{"id": p.ID}), &q)
	if q.Post != nil {
		t.Fatalf("deleted post = %+v, want null", q.Post)
	}
}

func TestCreatePostIsIdempotentPerClientMutationID(t *testing.T) {
	e := newEnv(t)
	tok := e.token("alice")
	const m = `mutation { createPost(message: "once", clientMutationId: "c-1") { id } }`
	var a, b struct{ CreatePost postJSON }
	e.mustData(e.do(tok, m, nil), &a)
	e.mustData(e.do(tok, m, nil), &b)
	if a.CreatePost.ID != b.CreatePost.ID {
		t.Fatalf("same clientMutationId gave posts %s and %s", a.CreatePost.ID, b.CreatePost.ID)
	}
	var c struct{ CreatePost postJSON }
	e.mustData(e.do(e.token("bob"), m, nil), &c)
	if c.CreatePost.ID == a.CreatePost.ID {
		t.Fatal("another user's clientMutationId returned alice's post")
	}
}

func TestErrorCodes(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "hello")
	e.project()
	alice, bob := e.token("alice"), e.token("bob")
	long := make([]byte, 5001)
	for i := range long {
		long[i] = 'x'
	}
	tests := []struct {
		name, token, query, code string
		vars                     map[string]any
	}{
		{"a mutation without a token is unauthenticated", "", `mutation { createPost(message: "x") { id } }`, CodeUnauthenticated, nil},
		{"a bad token fails even a query", "not-a-jwt", `{ posts { edges { cursor } } }`, CodeUnauthenticated, nil},
		{"a blank message is bad input", alice, `mutation { createPost(message: "  ") { id } }`, CodeBadUserInput, nil},
		{"a message over 5000 characters is bad input", alice, `mutation($m: String!) { createPost(message: $m) { id } }`, CodeBadUserInput, map[string]any{"m": string(long)}},
		{"editing someone else's post is forbidden", bob, `mutation($id: ID!) { editPost(id: $id, message: "mine") { id } }`, CodeForbidden, map[string]any{"id": p.ID}},
		{"deleting someone else's post is forbidden", bob, `mutation($id: ID!) { deletePost(id: $id) }`, CodeForbidden, map[string]any{"id": p.ID}},
		{"a stale expectedVersion conflicts", alice, `mutation($id: ID!) { editPost(id: $id, message: "new", expectedVersion: 7) { id } }`, CodeConflict, map[string]any{"id": p.ID}},
		{"liking an unknown post is not found", bob, `mutation { likePost(id: "nope") { id } }`, CodeNotFound, nil},
		{"commenting on an unknown post is not found", bob, `mutation { addComment(postId: "nope", text: "x") { id } }`, CodeNotFound, nil},
		{"editing an unknown comment is not found", alice, `mutation($id: ID!) { editComment(postId: $id, commentId: "nope", text: "x") { id } }`, CodeNotFound, map[string]any{"id": p.ID}},
		{"a blank comment is bad input", bob, `mutation($id: ID!) { addComment(postId: $id, text: "") { id } }`, CodeBadUserInput, map[string]any{"id": p.ID}},
		{"first over 100 is bad input", "", `{ posts(first: 101) { edges { cursor } } }`, CodeBadUserInput, nil},
		{"first below 1 is bad input", "", `{ posts(first: 0) { edges { cursor } } }`, CodeBadUserInput, nil},
		{"a foreign cursor is bad input", "", `{ posts(after: "bogus") { edges { cursor } } }`, CodeBadUserInput, nil},
		{"a syntax error fails parsing", "", `{ posts( }`, "GRAPHQL_PARSE_FAILED", nil},
		{"an unknown field fails validation", "", `{ nope }`, "GRAPHQL_VALIDATION_FAILED", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.token, tt.query, tt.vars)
			if r.code() != tt.code {
				t.Fatalf("code = %q, want %q (response %s)", r.code(), tt.code, r.raw)
			}
		})
	}
	// The comment rules: only its author edits; the post's author or its author removes.
	var added struct{ AddComment commentJSON }
	e.mustData(e.do(bob, `mutation($id: ID!) { addComment(postId: $id, text: "hi") { id } }`, map[string]any{"id": p.ID}), &added)
	carol := e.token("carol")
	vars := map[string]any{"p": p.ID, "c": added.AddComment.ID}
	if r := e.do(alice, `mutation($p: ID!, $c: ID!) { editComment(postId: $p, commentId: $c, text: "x") { id } }`, vars); r.code() != CodeForbidden {
		t.Fatalf("post author editing a comment: %s", r.raw)
	}
	if r := e.do(carol, `mutation($p: ID!, $c: ID!) { removeComment(postId: $p, commentId: $c) }`, vars); r.code() != CodeForbidden {
		t.Fatalf("stranger removing a comment: %s", r.raw)
	}
	if r := e.do(bob, `mutation($p: ID!, $c: ID!) { removeComment(postId: $p, commentId: $c) }`, vars); len(r.Errors) > 0 {
		t.Fatalf("comment author removing it: %s", r.raw)
	}
	// Any operation on a deleted post: NOT_FOUND.
	e.mustData(e.do(alice, `mutation($id: ID!) { deletePost(id: $id) }`, map[string]any{"id": p.ID}), new(any))
	for _, m := range []string{
		`mutation($id: ID!) { editPost(id: $id, message: "x") { id } }`,
		`mutation($id: ID!) { likePost(id: $id) { id } }`,
		`mutation($id: ID!) { unlikePost(id: $id) { id } }`,
		`mutation($id: ID!) { deletePost(id: $id) }`,
		`mutation($id: ID!) { addComment(postId: $id, text: "x") { id } }`,
	} {
		if r := e.do(alice, m, map[string]any{"id": p.ID}); r.code() != CodeNotFound {
			t.Errorf("%s on a deleted post: %s", m, r.raw)
		}
	}
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	e := newEnv(t)
	e.model.Close() // every read now fails with the driver's own error
	r := e.do("", `{ posts { edges { cursor } } }`, nil)
	if r.code() != CodeInternal || r.Errors[0].Message != "internal server error" {
		t.Fatalf("response = %s, want a generic INTERNAL_SERVER_ERROR", r.raw)
	}
}

func TestPostsPagingFiltersAndOrder(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 5 {
		author := "alice"
		if i%2 == 1 {
			author = "bob"
		}
		ids = append(ids, e.createPost(author, fmt.Sprintf("post %d", i)).ID)
	}
	carol := e.token("carol")
	for _, id := range ids[3:] {
		e.mustData(e.do(carol, `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": id}), new(any))
	}
	e.mustData(e.do(carol, `mutation($id: ID!) { addComment(postId: $id, text: "c") { id } }`, map[string]any{"id": ids[0]}), new(any))
	e.project()

	type conn struct {
		Posts struct {
			Edges []struct {
				Cursor string
				Node   postJSON
			}
			PageInfo struct {
				HasNextPage bool
				EndCursor   *string
			}
		}
	}
	const q = `query($first: Int, $after: String, $author: String, $minLikes: Int, $withComments: Boolean, $order: PostOrder) {
		posts(first: $first, after: $after, author: $author, minLikes: $minLikes, withComments: $withComments, orderBy: $order) {
			edges { cursor node { id author likes commentCount } } pageInfo { hasNextPage endCursor } } }`
	var seen []string
	var after any
	for {
		var c conn
		e.mustData(e.do("", q, map[string]any{"first": 2, "after": after, "order": "OLDEST"}), &c)
		for _, ed := range c.Posts.Edges {
			seen = append(seen, ed.Node.ID)
		}
		if !c.Posts.PageInfo.HasNextPage {
			break
		}
		after = *c.Posts.PageInfo.EndCursor
	}
	if fmt.Sprint(seen) != fmt.Sprint(ids) {
		t.Fatalf("paged OLDEST = %v, want %v", seen, ids)
	}
	count := func(vars map[string]any) int {
		var c conn
		e.mustData(e.do("", q, vars), &c)
		return len(c.Posts.Edges)
	}
	if n := count(map[string]any{"author": "bob"}); n != 2 {
		t.Errorf("posts(author: bob) = %d, want 2", n)
	}
	if n := count(map[string]any{"minLikes": 1}); n != 2 {
		t.Errorf("posts(minLikes: 1) = %d, want 2", n)
	}
	if n := count(map[string]any{"withComments": true}); n != 1 {
		t.Errorf("posts(withComments: true) = %d, want 1", n)
	}
	var c conn
	e.mustData(e.do("", q, map[string]any{"order": "MOST_LIKED", "first": 1}), &c)
	if c.Posts.Edges[0].Node.Likes != 1 {
		t.Errorf("MOST_LIKED first = %+v", c.Posts.Edges[0].Node)
	}
}
