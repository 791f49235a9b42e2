package readtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Run runs the read-model behaviour suite. open must return a fresh, migrated, empty model; the
// suite closes it.
func Run(t *testing.T, open func(t *testing.T) read.Model) {
	tests := []struct {
		name string
		run  func(t *testing.T, m read.Model)
	}{
		{"a created post is returned with every field", testCreate},
		{"an edit replaces the message and sets editedAt", testEdit},
		{"likes count per user and like version counts changes", testLikes},
		{"a batch of likes reports every count it passed through", testLikeSteps},
		{"comments are added, edited and removed", testComments},
		{"a replayed batch changes nothing", testIdempotent},
		{"a missing predecessor fails the whole batch with ErrGap", testGap},
		{"a like before its post is a gap", testLikeBeforePost},
		{"a deleted post is never returned and later events are only recorded", testDelete},
		{"filters select the right posts", testFilters},
		{"orders are total and pages have no duplicates or holes", testPagination},
		{"a foreign cursor is rejected", testBadCursor},
		{"comments and likedBy are batched over many posts", testBatching},
		{"comment pages go oldest first through cursors, per post in one call", testCommentPages},
		{"a foreign comment cursor is rejected", testBadCommentCursor},
		{"dump lists the whole state", testDump},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := open(t)
			t.Cleanup(func() { m.Close() })
			tc.run(t, m)
		})
	}
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// Apply applies events and fails the test on an error.
func Apply(t testing.TB, m read.Model, events ...write.Event) []read.Change {
	t.Helper()
	ch, err := m.Apply(context.Background(), events)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return ch
}

func mustPost(t *testing.T, m read.Model, id string) read.Post {
	t.Helper()
	p, ok, err := m.Post(ctx(t), id)
	if err != nil || !ok {
		t.Fatalf("post %s: ok=%v err=%v", id, ok, err)
	}
	return p
}

func at(i int) time.Time { return Base.Add(time.Duration(i) * time.Second) }

func testCreate(t *testing.T, m read.Model) {
	ch := Apply(t, m, Created(t, "p1", "ann", "hello", at(0)))
	if len(ch) != 1 || !ch[0].Created || ch[0].PostID != "p1" || ch[0].Version != 1 {
		t.Fatalf("changes = %+v, want one creation of p1 at version 1", ch)
	}
	got := mustPost(t, m, "p1")
	want := read.Post{ID: "p1", Author: "ann", Message: "hello", CreatedAt: at(0), Version: 1}
	if !postEqual(got, want) {
		t.Fatalf("post = %+v, want %+v", got, want)
	}
	if _, ok, err := m.Post(ctx(t), "nope"); ok || err != nil {
		t.Fatalf("unknown post: ok=%v err=%v, want absent", ok, err)
	}
	if v, err := m.StreamVersion(ctx(t), write.PostStream("p1")); err != nil || v != 1 {
		t.Fatalf("stream version = %d, %v; want 1", v, err)
	}
	if v, err := m.StreamVersion(ctx(t), "post/unknown"); err != nil || v != 0 {
		t.Fatalf("unknown stream version = %d, %v; want 0", v, err)
	}
	if err := m.Ping(ctx(t)); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func testEdit(t *testing.T, m read.Model) {
	Apply(t, m, Created(t, "p1", "ann", "hello", at(0)))
	ch := Apply(t, m, Post(t, "p1", 2, "ann", at(5), write.PostEdited{Message: "bye"}))
	if len(ch) != 1 || !ch[0].Content || ch[0].Version != 2 || ch[0].Created {
		t.Fatalf("changes = %+v, want a content change at version 2", ch)
	}
	p := mustPost(t, m, "p1")
	if p.Message != "bye" || p.EditedAt == nil || !p.EditedAt.Equal(at(5)) || p.Version != 2 || !p.CreatedAt.Equal(at(0)) {
		t.Fatalf("post = %+v, want message bye edited at %v version 2", p, at(5))
	}
}

func testLikes(t *testing.T, m read.Model) {
	Apply(t, m, Created(t, "p1", "ann", "hello", at(0)))
	ch := Apply(t, m,
		Like(t, "p1", "bob", 1, true, at(1)),
		Like(t, "p1", "cid", 1, true, at(2)),
		Like(t, "p1", "bob", 2, false, at(3)),
		Like(t, "p1", "dan", 1, true, at(4)),
	)
	if len(ch) != 1 || !ch[0].LikesChange || ch[0].Likes != 2 || ch[0].LikeVersion != 4 || ch[0].Version != 1 {
		t.Fatalf("changes = %+v, want likes 2, like version 4, post version 1", ch)
	}
	p := mustPost(t, m, "p1")
	if p.Likes != 2 || p.LikeVersion != 4 || p.Version != 1 {
		t.Fatalf("post = %+v, want 2 likes at like version 4", p)
	}
	liked, err := m.LikedBy(ctx(t), "bob", []string{"p1", "p2"})
	if err != nil || liked["p1"] {
		t.Fatalf("bob likes %v (%v), want none after unlike", liked, err)
	}
	liked, err = m.LikedBy(ctx(t), "cid", []string{"p1", "p2"})
	if err != nil || !liked["p1"] || liked["p2"] {
		t.Fatalf("cid likes %v (%v), want p1 only", liked, err)
	}
	Apply(t, m, Like(t, "p1", "bob", 3, true, at(5)))
	if p := mustPost(t, m, "p1"); p.Likes != 3 || p.LikeVersion != 5 {
		t.Fatalf("after relike: %+v, want 3 likes at like version 5", p)
	}
	if v, err := m.StreamVersion(ctx(t), write.LikeStream("p1", "bob")); err != nil || v != 3 {
		t.Fatalf("like stream version = %d, %v; want 3", v, err)
	}
}

func testComments(t *testing.T, m read.Model) {
	Apply(t, m, Created(t, "p1", "ann", "hello", at(0)))
	ch := Apply(t, m,
		Post(t, "p1", 2, "bob", at(1), write.CommentAdded{CommentID: "c1", Author: "bob", Text: "one"}),
		Post(t, "p1", 3, "cid", at(2), write.CommentAdded{CommentID: "c2", Author: "cid", Text: "two"}),
		Post(t, "p1", 4, "bob", at(3), write.CommentEdited{CommentID: "c1", Text: "uno"}),
	)
	if len(ch) != 1 || !ch[0].Content || ch[0].Version != 4 {
		t.Fatalf("changes = %+v, want a content change at version 4", ch)
	}
	if p := mustPost(t, m, "p1"); p.CommentCount != 2 {
		t.Fatalf("comment count = %d, want 2", p.CommentCount)
	}
	cs, err := m.CommentPages(ctx(t), []string{"p1"}, 100, "")
	if err != nil {
		t.Fatalf("comments: %v", err)
	}
	edited := at(3)
	want := []read.Comment{
		{ID: "c1", PostID: "p1", Author: "bob", Text: "uno", CreatedAt: at(1), EditedAt: &edited},
		{ID: "c2", PostID: "p1", Author: "cid", Text: "two", CreatedAt: at(2)},
	}
	if !commentsEqual(cs["p1"].Comments, want) || cs["p1"].HasNext {
		t.Fatalf("comments = %+v, want %+v", cs["p1"], want)
	}
	Apply(t, m, Post(t, "p1", 5, "ann", at(4), write.CommentRemoved{CommentID: "c1"}))
	cs, err = m.CommentPages(ctx(t), []string{"p1"}, 100, "")
	if err != nil || len(cs["p1"].Comments) != 1 || cs["p1"].Comments[0].ID != "c2" {
		t.Fatalf("after removal: %+v, %v; want c2 only", cs, err)
	}
	if p := mustPost(t, m, "p1"); p.CommentCount != 1 || p.Version != 5 {
		t.Fatalf("after removal: %+v, want 1 comment at version 5", p)
	}
}

func testIdempotent(t *testing.T, m read.Model) {
	batch := []write.Event{
		Created(t, "p1", "ann", "hello", at(0)),
		Like(t, "p1", "bob", 1, true, at(1)),
		Post(t, "p1", 2, "bob", at(2), write.CommentAdded{CommentID: "c1", Author: "bob", Text: "one"}),
	}
	Apply(t, m, batch...)
	before := mustPost(t, m, "p1")
	if ch := Apply(t, m, batch...); len(ch) != 0 {
		t.Fatalf("replay changed %+v, want nothing", ch)
	}
	// A batch that overlaps what was applied applies only the new part.
	ch := Apply(t, m, batch[1], Like(t, "p1", "bob", 2, false, at(3)))
	if len(ch) != 1 || ch[0].Likes != 0 || ch[0].LikeVersion != 2 {
		t.Fatalf("overlapping batch changes = %+v, want likes 0 at like version 2", ch)
	}
	after := mustPost(t, m, "p1")
	if after.CommentCount != before.CommentCount || after.Likes != 0 || after.Version != before.Version {
		t.Fatalf("after replay %+v, before %+v", after, before)
	}
}

func testGap(t *testing.T, m read.Model) {
	Apply(t, m, Created(t, "p1", "ann", "hello", at(0)))
	_, err := m.Apply(ctx(t), []write.Event{
		Like(t, "p1", "bob", 1, true, at(1)),
		Post(t, "p1", 3, "ann", at(2), write.PostEdited{Message: "skipped two"}),
	})
	if !errors.Is(err, read.ErrGap) {
		t.Fatalf("apply with a gap: %v, want ErrGap", err)
	}
	if p := mustPost(t, m, "p1"); p.Likes != 0 || p.Message != "hello" {
		t.Fatalf("a failed batch left %+v, want nothing applied", p)
	}
	if v, _ := m.StreamVersion(ctx(t), write.LikeStream("p1", "bob")); v != 0 {
		t.Fatalf("a failed batch recorded like stream version %d", v)
	}
	_, err = m.Apply(ctx(t), []write.Event{Like(t, "p1", "cid", 2, true, at(3))})
	if !errors.Is(err, read.ErrGap) {
		t.Fatalf("like stream starting at 2: %v, want ErrGap", err)
	}
	Apply(t, m, Post(t, "p1", 2, "ann", at(2), write.PostEdited{Message: "two"}), Post(t, "p1", 3, "ann", at(3), write.PostEdited{Message: "three"}))
	if p := mustPost(t, m, "p1"); p.Message != "three" || p.Version != 3 {
		t.Fatalf("after filling the gap: %+v", p)
	}
}

func testLikeBeforePost(t *testing.T, m read.Model) {
	_, err := m.Apply(ctx(t), []write.Event{Like(t, "p1", "bob", 1, true, at(1))})
	if !errors.Is(err, read.ErrGap) {
		t.Fatalf("like before post: %v, want ErrGap", err)
	}
	_, err = m.Apply(ctx(t), []write.Event{Post(t, "p1", 2, "bob", at(1), write.CommentAdded{CommentID: "c", Author: "bob", Text: "x"})})
	if !errors.Is(err, read.ErrGap) {
		t.Fatalf("comment before post: %v, want ErrGap", err)
	}
	// The post and its like in one batch, in that order, is fine.
	ch := Apply(t, m, Created(t, "p1", "ann", "hello", at(0)), Like(t, "p1", "bob", 1, true, at(1)))
	if len(ch) != 1 || !ch[0].Created || ch[0].Likes != 1 {
		t.Fatalf("changes = %+v, want p1 created with 1 like", ch)
	}
}

func testDelete(t *testing.T, m read.Model) {
	Apply(t, m, Created(t, "p1", "ann", "hello", at(0)), Created(t, "p2", "ann", "other", at(1)),
		Post(t, "p1", 2, "bob", at(2), write.CommentAdded{CommentID: "c1", Author: "bob", Text: "one"}))
	ch := Apply(t, m, Post(t, "p1", 3, "ann", at(3), write.PostDeleted{}))
	if len(ch) != 1 || !ch[0].Deleted || ch[0].Version != 3 {
		t.Fatalf("changes = %+v, want a deletion at version 3", ch)
	}
	if _, ok, err := m.Post(ctx(t), "p1"); ok || err != nil {
		t.Fatalf("deleted post returned: ok=%v err=%v", ok, err)
	}
	for _, f := range []read.PostFilter{{}, {Author: "ann"}, {WithComments: true}, {Order: read.Oldest}, {Order: read.MostLiked}} {
		f.First = 10
		page, err := m.Posts(ctx(t), f)
		if err != nil {
			t.Fatalf("posts %+v: %v", f, err)
		}
		for _, p := range page.Posts {
			if p.ID == "p1" {
				t.Fatalf("posts %+v returned the deleted post", f)
			}
		}
	}
	cs, err := m.CommentPages(ctx(t), []string{"p1"}, 100, "")
	if err != nil || len(cs["p1"].Comments) != 0 {
		t.Fatalf("comments of a deleted post: %+v, %v; want none", cs, err)
	}
	ch = Apply(t, m, Like(t, "p1", "bob", 1, true, at(4)), Post(t, "p1", 4, "ann", at(5), write.PostEdited{Message: "late"}))
	if len(ch) != 0 {
		t.Fatalf("events after deletion changed %+v, want nothing", ch)
	}
	for s, want := range map[string]int64{write.LikeStream("p1", "bob"): 1, write.PostStream("p1"): 4} {
		if v, err := m.StreamVersion(ctx(t), s); err != nil || v != want {
			t.Fatalf("stream %s version = %d, %v; want %d recorded", s, v, err, want)
		}
	}
}

// seed creates n posts: post i by author a<i%3>, created at(i), with i%5 likes and a comment when
// i%4 == 0. It returns the ids in creation order.
func seed(t *testing.T, m read.Model, n int) []string {
	t.Helper()
	var evs []write.Event
	var ids []string
	for i := range n {
		id := fmt.Sprintf("p%03d", i)
		ids = append(ids, id)
		evs = append(evs, Created(t, id, fmt.Sprintf("a%d", i%3), fmt.Sprintf("message %d", i), at(i)))
		for u := range i % 5 {
			evs = append(evs, Like(t, id, fmt.Sprintf("u%d", u), 1, true, at(i)))
		}
		if i%4 == 0 {
			evs = append(evs, Post(t, id, 2, "bob", at(i), write.CommentAdded{CommentID: "c" + id, Author: "bob", Text: "hi"}))
		}
	}
	Apply(t, m, evs...)
	return ids
}

// allPages walks every page of f and returns the posts in order.
func allPages(t *testing.T, m read.Model, f read.PostFilter) []read.Post {
	t.Helper()
	var out []read.Post
	for range 100 {
		page, err := m.Posts(ctx(t), f)
		if err != nil {
			t.Fatalf("posts %+v: %v", f, err)
		}
		if len(page.Cursors) != len(page.Posts) {
			t.Fatalf("%d cursors for %d posts", len(page.Cursors), len(page.Posts))
		}
		out = append(out, page.Posts...)
		if !page.HasNext {
			return out
		}
		if len(page.Posts) == 0 {
			t.Fatalf("empty page claims a next page")
		}
		f.After = page.Cursors[len(page.Cursors)-1]
	}
	t.Fatalf("more than 100 pages")
	return nil
}

func testFilters(t *testing.T, m read.Model) {
	seed(t, m, 30)
	Apply(t, m, Post(t, "p029", 2, "a2", at(40), write.PostDeleted{}))
	check := func(name string, f read.PostFilter, keep func(i int) bool) {
		t.Helper()
		f.First = 100
		got := ids(allPages(t, m, f))
		var want []string
		for i := 28; i >= 0; i-- { // newest first; p029 is deleted
			if keep(i) {
				want = append(want, fmt.Sprintf("p%03d", i))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	check("all", read.PostFilter{}, func(int) bool { return true })
	check("author", read.PostFilter{Author: "a1"}, func(i int) bool { return i%3 == 1 })
	check("with comments", read.PostFilter{WithComments: true}, func(i int) bool { return i%4 == 0 })
	check("min likes", read.PostFilter{MinLikes: 3}, func(i int) bool { return i%5 >= 3 })
	check("all filters", read.PostFilter{Author: "a0", MinLikes: 1, WithComments: true}, func(i int) bool { return i%3 == 0 && i%5 >= 1 && i%4 == 0 })
	check("unknown author", read.PostFilter{Author: "zed"}, func(int) bool { return false })
	page, err := m.Posts(ctx(t), read.PostFilter{First: 1000})
	if err != nil || len(page.Posts) != 29 {
		t.Fatalf("first 1000: %d posts, %v; want all 29 (clamped to 100)", len(page.Posts), err)
	}
	page, err = m.Posts(ctx(t), read.PostFilter{First: 0})
	if err != nil || len(page.Posts) != 1 || !page.HasNext {
		t.Fatalf("first 0: %d posts, %v; want 1 (clamped) with a next page", len(page.Posts), err)
	}
}

func testPagination(t *testing.T, m read.Model) {
	seed(t, m, 40)
	// Posts created at the same instant must still page without duplicates: ties break by id.
	var same []write.Event
	for i := range 6 {
		same = append(same, Created(t, fmt.Sprintf("s%d", i), "a9", "same time", at(20)))
	}
	Apply(t, m, same...)
	for _, o := range []read.PostOrder{read.Newest, read.Oldest, read.MostLiked} {
		for _, f := range []read.PostFilter{{}, {Author: "a9"}, {MinLikes: 2}, {WithComments: true}} {
			f.Order = o
			f.First = 100
			want := allPages(t, m, f)
			if !sorted(want, o) {
				t.Fatalf("order %d filter %+v not sorted: %v", o, f, ids(want))
			}
			for _, size := range []int{1, 3, 7} {
				f.First = size
				got := allPages(t, m, f)
				if !slices.Equal(ids(got), ids(want)) {
					t.Fatalf("order %d filter %+v pages of %d: %v, want %v", o, f, size, ids(got), ids(want))
				}
			}
		}
	}
}

func sorted(ps []read.Post, o read.PostOrder) bool {
	for i := 1; i < len(ps); i++ {
		a, b := ps[i-1], ps[i]
		var ok bool
		switch o {
		case read.Newest:
			ok = a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID > b.ID
		case read.Oldest:
			ok = a.CreatedAt.Before(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID
		case read.MostLiked:
			ok = a.Likes > b.Likes || a.Likes == b.Likes && a.ID < b.ID
		}
		if !ok {
			return false
		}
	}
	return true
}

func testBadCursor(t *testing.T, m read.Model) {
	seed(t, m, 5)
	page, err := m.Posts(ctx(t), read.PostFilter{First: 2})
	if err != nil {
		t.Fatalf("posts: %v", err)
	}
	for name, f := range map[string]read.PostFilter{
		"garbage":       {First: 2, After: "!!not base64"},
		"not json":      {First: 2, After: "bm90IGpzb24"},
		"another order": {First: 2, After: page.Cursors[1], Order: read.MostLiked},
	} {
		if _, err := m.Posts(ctx(t), f); !errors.Is(err, read.ErrBadCursor) {
			t.Errorf("%s: %v, want ErrBadCursor", name, err)
		}
	}
}

func testBatching(t *testing.T, m read.Model) {
	var evs []write.Event
	var all []string
	for i := range 300 {
		id := fmt.Sprintf("b%03d", i)
		all = append(all, id)
		evs = append(evs, Created(t, id, "ann", "x", at(i)),
			Post(t, id, 2, "bob", at(i), write.CommentAdded{CommentID: "c1", Author: "bob", Text: "hi"}))
		if i%2 == 0 {
			evs = append(evs, Like(t, id, "bob", 1, true, at(i)))
		}
	}
	Apply(t, m, evs...)
	cs, err := m.CommentPages(ctx(t), append(all, "absent", all[0]), 20, "")
	if err != nil || len(cs) != 300 {
		t.Fatalf("comments of 300 posts: %d posts, %v", len(cs), err)
	}
	for _, id := range all {
		if len(cs[id].Comments) != 1 || cs[id].HasNext {
			t.Fatalf("comments of %s = %+v, want one", id, cs[id])
		}
	}
	liked, err := m.LikedBy(ctx(t), "bob", all)
	if err != nil || len(liked) != 150 || !liked["b000"] || liked["b001"] {
		t.Fatalf("liked by bob: %d posts, %v; want the 150 even ones", len(liked), err)
	}
}

func testDump(t *testing.T, m read.Model) {
	in, ok := m.(read.Inspector)
	if !ok {
		t.Skip("model has no Dump")
	}
	Apply(t, m, Created(t, "p1", "ann", "hello", at(0)), Like(t, "p1", "bob", 1, true, at(1)),
		Post(t, "p1", 2, "bob", at(2), write.CommentAdded{CommentID: "c1", Author: "bob", Text: "one"}),
		Created(t, "p2", "ann", "bye", at(3)), Post(t, "p2", 2, "ann", at(4), write.PostDeleted{}))
	st, err := in.Dump(ctx(t))
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(st.Posts) != 2 || st.Posts[0].ID != "p1" || st.Posts[0].Likes != 1 || !st.Posts[1].Deleted {
		t.Fatalf("dump posts = %+v", st.Posts)
	}
	if len(st.Comments) != 1 || len(st.Likes) != 1 || st.Likes[0] != (read.Like{PostID: "p1", User: "bob"}) {
		t.Fatalf("dump comments %+v likes %+v", st.Comments, st.Likes)
	}
	want := map[string]int64{write.PostStream("p1"): 2, write.LikeStream("p1", "bob"): 1, write.PostStream("p2"): 2}
	if len(st.Streams) != len(want) {
		t.Fatalf("dump streams = %v, want %v", st.Streams, want)
	}
	for s, v := range want {
		if st.Streams[s] != v {
			t.Fatalf("dump streams = %v, want %v", st.Streams, want)
		}
	}
}

func ids(ps []read.Post) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

func timeEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

func postEqual(a, b read.Post) bool {
	return a.ID == b.ID && a.Author == b.Author && a.Message == b.Message && a.CreatedAt.Equal(b.CreatedAt) &&
		timeEqual(a.EditedAt, b.EditedAt) && a.Likes == b.Likes && a.LikeVersion == b.LikeVersion &&
		a.CommentCount == b.CommentCount && a.Version == b.Version
}

func commentsEqual(a, b []read.Comment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.PostID != y.PostID || x.Author != y.Author || x.Text != y.Text ||
			!x.CreatedAt.Equal(y.CreatedAt) || !timeEqual(x.EditedAt, y.EditedAt) {
			return false
		}
	}
	return true
}

func testLikeSteps(t *testing.T, m read.Model) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	Apply(t, m, Created(t, "p1", "alice", "hi", at))
	ch := Apply(t, m,
		Like(t, "p1", "bob", 1, true, at),
		Like(t, "p1", "carol", 1, true, at),
		Like(t, "p1", "bob", 2, false, at),
		Like(t, "p1", "dave", 1, true, at),
	)
	if len(ch) != 1 {
		t.Fatalf("changes %+v, want one for p1", ch)
	}
	want := []read.LikeStep{{Likes: 1, LikeVersion: 1}, {Likes: 2, LikeVersion: 2}, {Likes: 1, LikeVersion: 3}, {Likes: 2, LikeVersion: 4}}
	if !slices.Equal(ch[0].LikeSteps, want) {
		t.Fatalf("like steps %+v, want %+v", ch[0].LikeSteps, want)
	}
	if ch[0].Likes != 2 || ch[0].LikeVersion != 4 || !ch[0].LikesChange {
		t.Fatalf("change %+v", ch[0])
	}
}

// commentEvents adds n comments c00.. to post id from version 2 on, created at 0, 1, 1, 3, 4, 4 ...
// seconds: some share a time, and their ids break the tie.
func commentEvents(t *testing.T, id string, n int) []write.Event {
	t.Helper()
	var evs []write.Event
	for i := range n {
		when := at(i - i%3/2)
		evs = append(evs, Post(t, id, int64(2+i), "bob", when,
			write.CommentAdded{CommentID: fmt.Sprintf("c%02d", i), Author: "bob", Text: fmt.Sprintf("text %d", i)}))
	}
	return evs
}

func commentIDs(cs []read.Comment) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func testCommentPages(t *testing.T, m read.Model) {
	Apply(t, m, Created(t, "p1", "ann", "one", at(0)), Created(t, "p2", "ann", "two", at(0)),
		Created(t, "p3", "ann", "three", at(0)), Created(t, "p4", "ann", "gone", at(0)))
	Apply(t, m, commentEvents(t, "p1", 45)...)
	Apply(t, m, commentEvents(t, "p2", 3)...)
	Apply(t, m, commentEvents(t, "p4", 2)...)
	// Removed comments leave the pages; so do the comments of a deleted post.
	Apply(t, m, Post(t, "p1", 47, "bob", at(50), write.CommentRemoved{CommentID: "c01"}),
		Post(t, "p2", 5, "bob", at(50), write.CommentRemoved{CommentID: "c02"}),
		Post(t, "p4", 4, "ann", at(50), write.PostDeleted{}))

	var want []string // p1's live comments, oldest first
	for i := range 45 {
		if i != 1 {
			want = append(want, fmt.Sprintf("c%02d", i))
		}
	}
	var got []string
	after, pages := "", 0
	for {
		pg, err := m.CommentPages(ctx(t), []string{"p1"}, 20, after)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		p := pg["p1"]
		pages++
		if len(p.Comments) != len(p.Cursors) || len(p.Comments) == 0 || len(p.Comments) > 20 {
			t.Fatalf("page %d: %d comments, %d cursors", pages, len(p.Comments), len(p.Cursors))
		}
		got = append(got, commentIDs(p.Comments)...)
		if !p.HasNext {
			break
		}
		if len(p.Comments) != 20 {
			t.Fatalf("page %d has %d comments and a next page", pages, len(p.Comments))
		}
		after = p.Cursors[len(p.Cursors)-1]
	}
	if pages != 3 || !slices.Equal(got, want) {
		t.Fatalf("%d pages of %v, want 3 pages of %v", pages, got, want)
	}

	// One call pages several posts at once, each by itself; absent and deleted posts have none.
	pg, err := m.CommentPages(ctx(t), []string{"p1", "p2", "p3", "p4", "absent"}, 2, "")
	if err != nil {
		t.Fatalf("several posts: %v", err)
	}
	if p := pg["p1"]; !slices.Equal(commentIDs(p.Comments), []string{"c00", "c02"}) || !p.HasNext {
		t.Errorf("p1 first page = %v (next %v), want [c00 c02] and a next page", commentIDs(p.Comments), p.HasNext)
	}
	if p := pg["p2"]; !slices.Equal(commentIDs(p.Comments), []string{"c00", "c01"}) || p.HasNext {
		t.Errorf("p2 first page = %v (next %v), want [c00 c01] and no next page", commentIDs(p.Comments), p.HasNext)
	}
	for _, id := range []string{"p3", "p4", "absent"} {
		if p := pg[id]; len(p.Comments) != 0 || p.HasNext {
			t.Errorf("%s has comments %+v, want none", id, p)
		}
	}
	// A cursor is a position in the order of comments, so the same one pages every post of a call.
	pg, err = m.CommentPages(ctx(t), []string{"p1", "p2"}, 100, pg["p2"].Cursors[0])
	if err != nil {
		t.Fatalf("several posts after a cursor: %v", err)
	}
	if p := pg["p2"]; !slices.Equal(commentIDs(p.Comments), []string{"c01"}) || p.HasNext {
		t.Errorf("p2 after c00 = %v, want [c01]", commentIDs(p.Comments))
	}
	if p := pg["p1"]; len(p.Comments) != 43 || p.Comments[0].ID != "c02" {
		t.Errorf("p1 after c00 = %v, want c02 on", commentIDs(p.Comments))
	}

	// A page cut in memory from all the comments is the page the read model returns.
	all, err := m.CommentPages(ctx(t), []string{"p1"}, 100, "")
	if err != nil {
		t.Fatalf("all of p1: %v", err)
	}
	mem, err := read.PageComments(all["p1"].Comments, 20, after)
	if err != nil {
		t.Fatalf("page in memory: %v", err)
	}
	last, _ := m.CommentPages(ctx(t), []string{"p1"}, 20, after)
	if !commentsEqual(mem.Comments, last["p1"].Comments) || !slices.Equal(mem.Cursors, last["p1"].Cursors) || mem.HasNext {
		t.Errorf("page in memory %v, read model %v", commentIDs(mem.Comments), commentIDs(last["p1"].Comments))
	}
}

func testBadCommentCursor(t *testing.T, m read.Model) {
	seed(t, m, 5)
	posts, err := m.Posts(ctx(t), read.PostFilter{First: 2, Order: read.Oldest})
	if err != nil {
		t.Fatalf("posts: %v", err)
	}
	for name, after := range map[string]string{
		"garbage":        "!!not base64",
		"not json":       "bm90IGpzb24",
		"a post cursor":  posts.Cursors[0],
		"empty position": read.CommentCursor(read.Comment{}),
	} {
		if _, err := m.CommentPages(ctx(t), []string{posts.Posts[0].ID}, 20, after); !errors.Is(err, read.ErrBadCursor) {
			t.Errorf("%s: %v, want ErrBadCursor", name, err)
		}
	}
	// Nor do post pages take a comment cursor.
	c := read.CommentCursor(read.Comment{ID: "c1", CreatedAt: at(1)})
	for _, o := range []read.PostOrder{read.Newest, read.Oldest, read.MostLiked} {
		if _, err := m.Posts(ctx(t), read.PostFilter{First: 2, Order: o, After: c}); !errors.Is(err, read.ErrBadCursor) {
			t.Errorf("posts(order %d) after a comment cursor: %v, want ErrBadCursor", o, err)
		}
	}
}
