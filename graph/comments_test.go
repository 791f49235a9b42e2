package graph

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// addComments adds n comments "c0".. to post id through the command side (no rate limit), by
// bob, and returns their ids in order.
func (e *env) addComments(id string, n int) []string {
	e.tb.Helper()
	var ids []string
	for i := range n {
		_, c, err := e.commands.AddComment(context.Background(), "bob", id, fmt.Sprintf("c%d", i))
		if err != nil {
			e.tb.Fatalf("add comment %d: %v", i, err)
		}
		ids = append(ids, c.ID)
	}
	return ids
}

const commentPageQuery = `query($id: ID!, $first: Int, $after: String) {
	post(id: $id) { comments(first: $first, after: $after) { edges { cursor node { ` + commentFields + ` } } pageInfo { hasNextPage endCursor } } }
}`

func TestCommentsArePagedOldestFirst(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "busy")
	want := e.addComments(p.ID, 45)
	e.project()

	page := func(first any, after *string) commentConnJSON {
		t.Helper()
		vars := map[string]any{"id": p.ID, "first": first}
		if after != nil {
			vars["after"] = *after
		}
		var d struct {
			Post struct{ Comments commentConnJSON }
		}
		e.mustData(e.do("", commentPageQuery, vars), &d)
		return d.Post.Comments
	}
	var got []string
	var after *string
	sizes := []int{}
	for {
		c := page(20, after)
		for i, ed := range c.Edges {
			got = append(got, ed.Node.ID)
			if ed.Node.PostID != p.ID || ed.Cursor == "" {
				t.Fatalf("edge %d = %+v", i, ed)
			}
		}
		sizes = append(sizes, len(c.Edges))
		if n := len(c.Edges); n > 0 && (c.PageInfo.EndCursor == nil || *c.PageInfo.EndCursor != c.Edges[n-1].Cursor) {
			t.Fatalf("endCursor %v is not the last edge's cursor", c.PageInfo.EndCursor)
		}
		if !c.PageInfo.HasNextPage {
			break
		}
		after = c.PageInfo.EndCursor
	}
	if !slices.Equal(sizes, []int{20, 20, 5}) || !slices.Equal(got, want) {
		t.Fatalf("pages of %v with %v, want pages of [20 20 5] with %v", sizes, got, want)
	}
	// No first means 20.
	if c := page(nil, nil); len(c.Edges) != 20 || !c.PageInfo.HasNextPage || c.Edges[0].Node.ID != want[0] {
		t.Fatalf("default page: %d comments, next %v", len(c.Edges), c.PageInfo.HasNextPage)
	}

	// A mutation's answer pages the write side's state with the same cursors.
	var second commentConnJSON
	{
		first := page(20, nil)
		second = page(20, first.PageInfo.EndCursor)
		var d struct {
			LikePost struct{ Comments commentConnJSON }
		}
		e.mustData(e.do(e.token("cid"), `mutation($id: ID!, $after: String) { likePost(id: $id) { comments(first: 20, after: $after) { edges { cursor node { `+commentFields+` } } pageInfo { hasNextPage endCursor } } } }`,
			map[string]any{"id": p.ID, "after": *first.PageInfo.EndCursor}), &d)
		if !sameCommentPage(d.LikePost.Comments, second) {
			t.Fatalf("mutation's second page %+v, read model's %+v", d.LikePost.Comments, second)
		}
	}

	for name, tc := range map[string]struct {
		first any
		after string
	}{
		"first 101":          {101, ""},
		"first 0":            {0, ""},
		"first -1":           {-1, ""},
		"a garbage cursor":   {20, "!!"},
		"a post cursor":      {20, e.firstPostCursor()},
		"first over 32 bits": {int64(1) << 40, ""},
	} {
		vars := map[string]any{"id": p.ID, "first": tc.first}
		if tc.after != "" {
			vars["after"] = tc.after
		}
		if r := e.do("", commentPageQuery, vars); r.code() != CodeBadUserInput {
			t.Errorf("%s: %s, want BAD_USER_INPUT", name, r.raw)
		}
	}
	if r := e.do("", `query($id: ID!) { post(id: $id) { comments(first: 101) { edges { cursor } } } }`, map[string]any{"id": p.ID}); r.code() != CodeBadUserInput {
		t.Errorf("literal first: 101: %s, want BAD_USER_INPUT", r.raw)
	}
}

// sameCommentPage reports whether two pages hold the same comments, cursors and page info.
func sameCommentPage(a, b commentConnJSON) bool {
	if len(a.Edges) != len(b.Edges) || a.PageInfo.HasNextPage != b.PageInfo.HasNextPage ||
		(a.PageInfo.EndCursor == nil) != (b.PageInfo.EndCursor == nil) ||
		a.PageInfo.EndCursor != nil && *a.PageInfo.EndCursor != *b.PageInfo.EndCursor {
		return false
	}
	for i := range a.Edges {
		if a.Edges[i].Cursor != b.Edges[i].Cursor || commentKey(a.Edges[i].Node) != commentKey(b.Edges[i].Node) {
			return false
		}
	}
	return true
}

// commentKey is every field of c as one comparable string.
func commentKey(c commentJSON) string {
	edited := "<never>"
	if c.EditedAt != nil {
		edited = *c.EditedAt
	}
	return strings.Join([]string{c.ID, c.PostID, c.Author, c.Text, c.CreatedAt, edited}, "|")
}

func (e *env) firstPostCursor() string {
	e.tb.Helper()
	var d struct {
		Posts struct{ Edges []struct{ Cursor string } }
	}
	e.mustData(e.do("", `{ posts(first: 1) { edges { cursor } } }`, nil), &d)
	if len(d.Posts.Edges) == 0 {
		e.tb.Fatal("no post to take a cursor from")
	}
	return d.Posts.Edges[0].Cursor
}

// TestCommentPagesAreBatchedPerArguments: a page of 40 posts reads the comments of all of them in
// one query per distinct (first, after), however many aliases ask.
func TestCommentPagesAreBatchedPerArguments(t *testing.T) {
	e := newEnv(t)
	for i := range 40 {
		p := e.createPost("alice", fmt.Sprintf("p%d", i))
		e.addComments(p.ID, 1+i%3)
	}
	e.project()
	c0 := e.reads.comments.Load()
	var d struct {
		Posts struct {
			Edges []struct {
				Node struct {
					A, B, C commentConnJSON
				}
			}
		}
	}
	e.mustData(e.do("", `{ posts(first: 40) { edges { node {
		a: comments { edges { node { id } } }
		b: comments(first: 1) { edges { node { id } } pageInfo { hasNextPage } }
		c: comments(first: 1) { edges { node { text } } }
	} } } }`, nil), &d)
	if len(d.Posts.Edges) != 40 {
		t.Fatalf("%d posts, want 40", len(d.Posts.Edges))
	}
	for i, ed := range d.Posts.Edges {
		n := len(ed.Node.A.Edges)
		if n < 1 || n > 3 || len(ed.Node.B.Edges) != 1 || ed.Node.B.PageInfo.HasNextPage != (n > 1) || len(ed.Node.C.Edges) != 1 {
			t.Errorf("post %d: comments %+v", i, ed.Node)
		}
	}
	if c := e.reads.comments.Load() - c0; c != 2 {
		t.Errorf("%d comment queries for two distinct argument pairs, want 2", c)
	}
}

// TestIntArgumentsAre32Bit: GraphQL's Int is 32-bit; a larger argument is BAD_USER_INPUT whether
// it is a literal or a variable, and the largest 32-bit value is accepted.
func TestIntArgumentsAre32Bit(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "x")
	e.project()
	for _, tc := range []struct {
		name  string
		query string
		vars  map[string]any
		ok    bool
	}{
		{"minLikes literal over 64 bits' half", `{ posts(minLikes: 9223372036854775807) { edges { cursor } } }`, nil, false},
		{"minLikes variable", `query($n: Int) { posts(minLikes: $n) { edges { cursor } } }`, map[string]any{"n": int64(9223372036854775807)}, false},
		{"minLikes literal 2147483648", `{ posts(minLikes: 2147483648) { edges { cursor } } }`, nil, false},
		{"minLikes literal 2147483647", `{ posts(minLikes: 2147483647) { edges { cursor } } }`, nil, true},
		{"minLikes variable 2147483647", `query($n: Int) { posts(minLikes: $n) { edges { cursor } } }`, map[string]any{"n": 2147483647}, true},
		{"minVersion literal", `{ post(id: "x", minVersion: 2147483648) { id } }`, nil, false},
		{"minVersion variable", `query($v: Int) { post(id: "x", minVersion: $v) { id } }`, map[string]any{"v": int64(2147483648)}, false},
		{"minVersion below -2^31", `{ post(id: "x", minVersion: -2147483649) { id } }`, nil, false},
		{"expectedVersion variable", `mutation($id: ID!, $v: Int) { editPost(id: $id, message: "y", expectedVersion: $v) { id } }`, map[string]any{"id": p.ID, "v": int64(1) << 32}, false},
		{"a non-null Int variable", `query($n: Int!) { posts(first: $n) { edges { cursor } } }`, map[string]any{"n": int64(1) << 31}, false},
	} {
		r := e.do(e.token("alice"), tc.query, tc.vars)
		switch {
		case tc.ok && len(r.Errors) > 0:
			t.Errorf("%s: %s, want no error", tc.name, r.raw)
		case !tc.ok && r.code() != CodeBadUserInput:
			t.Errorf("%s: %s, want BAD_USER_INPUT", tc.name, r.raw)
		case !tc.ok && !strings.Contains(r.Errors[0].Message, "2147483647"):
			t.Errorf("%s: message %q does not name the range", tc.name, r.Errors[0].Message)
		}
	}
}
