package graph

import (
	"testing"
	"time"
)

// like makes user like post id and projects it.
func (e *env) like(user, id string) {
	e.tb.Helper()
	e.mustData(e.do(e.token(user), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": id}), new(any))
	e.project()
}

func TestLikeCountAfterSendsTheCurrentCountFirstWhenNewer(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "hot")
	e.project()
	e.like("u1", p.ID)
	e.like("u2", p.ID)
	e.like("u3", p.ID)
	const q = `subscription($id: ID!, $after: Int) { likeCount(postId: $id, after: $after) { likes version } }`

	// An old after: the current count at once, then every change.
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "old", q, map[string]any{"id": p.ID, "after": 1})
	var d struct{ LikeCount LikeCount }
	c.nextData(ctx, &d)
	if d.LikeCount.Likes != 3 || d.LikeCount.Version != 3 {
		t.Fatalf("first message %+v, want the current 3 likes at version 3", d.LikeCount)
	}
	current := d.LikeCount.Version

	// The current version: nothing until the next change (the first message is that change).
	c2, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c2.subscribe(ctx, "cur", q, map[string]any{"id": p.ID, "after": current})
	e.waitSubscribers(2)
	time.Sleep(200 * time.Millisecond) // anything sent now would come before the change below

	// Without after: as before, changes only.
	c3, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c3.subscribe(ctx, "none", q, map[string]any{"id": p.ID})
	e.waitSubscribers(3)

	e.like("u4", p.ID)
	for _, c := range []*wsClient{c, c2, c3} {
		var d struct{ LikeCount LikeCount }
		c.nextData(ctx, &d)
		if d.LikeCount.Likes != 4 || d.LikeCount.Version <= current {
			t.Fatalf("after a like: %+v, want 4 likes after version %d", d.LikeCount, current)
		}
	}
}

func TestPostUpdatedAfterSendsTheCurrentPostFirstWhenNewer(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "v1")
	e.project()
	alice := e.token("alice")
	e.mustData(e.do(alice, `mutation($id: ID!) { editPost(id: $id, message: "v2") { id } }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	const q = `subscription($id: ID!, $after: Int) { postUpdated(id: $id, after: $after) { message version } }`
	type msg struct {
		PostUpdated struct {
			Message string
			Version int64
		}
	}

	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "old", q, map[string]any{"id": p.ID, "after": 1})
	var d msg
	c.nextData(ctx, &d)
	if d.PostUpdated.Message != "v2" || d.PostUpdated.Version != 2 {
		t.Fatalf("first message %+v, want v2 at version 2", d.PostUpdated)
	}

	c2, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c2.subscribe(ctx, "cur", q, map[string]any{"id": p.ID, "after": 2})
	e.waitSubscribers(2)
	time.Sleep(200 * time.Millisecond) // anything sent now would come before the change below

	e.mustData(e.do(alice, `mutation($id: ID!) { editPost(id: $id, message: "v3") { id } }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	for _, c := range []*wsClient{c, c2} {
		var d msg
		c.nextData(ctx, &d)
		if d.PostUpdated.Message != "v3" || d.PostUpdated.Version != 3 {
			t.Fatalf("after an edit: %+v, want v3 at version 3", d.PostUpdated)
		}
	}
}
