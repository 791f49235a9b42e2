package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// ErrNotInspectable is returned by Verify for a read model that cannot list its content.
var ErrNotInspectable = errors.New("read model cannot be inspected")

// Diff is one difference between the event store's fold and the read model.
type Diff struct {
	PostID string
	Field  string // "post", "message", "likes", "comment c1 text", "stream post/x version" ...
	Want   string
	Got    string
}

func (d Diff) String() string {
	return fmt.Sprintf("post %s: %s: want %s, got %s", d.PostID, d.Field, d.Want, d.Got)
}

// verifyPage is how many events Verify reads per ReadAll call.
const verifyPage = 1000

// expected is the read state that the event store implies, folded with the write side's own
// aggregates, so that Verify does not share the projection code it checks.
type expected struct {
	posts       map[string]*write.Post
	likes       map[string]map[string]*write.Like // post id, user
	likeVersion map[string]int64
	streams     map[string]int64
	postOrder   []string
}

// Verify folds the whole event store in memory and compares it with the read model's active
// generation: every post (deleted flag, fields, likes, like version, comment count, version), every
// live comment and like of live posts, and the applied version of every stream. Deleted posts are
// compared by flag and version only. It returns every difference, sorted by post id. A stored
// event that cannot be decoded or folded is reported as a difference of its own, and the rest of
// its stream is left out of the fold (the live projector parks such an event, so the read model
// stops there too). Errors: ErrNotInspectable when model has no Dump; the store's or the model's
// errors.
func Verify(ctx context.Context, store write.EventStore, model read.Model) ([]Diff, error) {
	in, ok := model.(read.Inspector)
	if !ok {
		return nil, ErrNotInspectable
	}
	exp, unfoldable, err := fold(ctx, store)
	if err != nil {
		return nil, err
	}
	got, err := in.Dump(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	diffs := append(unfoldable, compare(exp, got)...)
	sort.SliceStable(diffs, func(i, j int) bool { return diffs[i].PostID < diffs[j].PostID })
	return diffs, nil
}

func fold(ctx context.Context, store write.EventStore) (*expected, []Diff, error) {
	exp := &expected{posts: map[string]*write.Post{}, likes: map[string]map[string]*write.Like{},
		likeVersion: map[string]int64{}, streams: map[string]int64{}}
	broken := map[string]bool{}      // streams with an event that could not be folded
	brokenPosts := map[string]bool{} // posts whose creation could not be folded: their likes are parked too
	var unfoldable []Diff
	var after int64
	for {
		page, err := store.ReadAll(ctx, after, verifyPage)
		if err != nil {
			return nil, nil, fmt.Errorf("verify: read events after %d: %w", after, err)
		}
		if len(page) == 0 {
			return exp, unfoldable, nil
		}
		for _, e := range page {
			if broken[e.Stream] || brokenPosts[e.PostID] {
				continue
			}
			if err := exp.apply(e); err != nil {
				broken[e.Stream] = true
				if e.Stream == write.PostStream(e.PostID) && e.Version == 1 {
					// The post never exists for the projector either (its likes' gap fills hit
					// this event), so it is expected nowhere.
					brokenPosts[e.PostID] = true
					delete(exp.posts, e.PostID)
					exp.postOrder = slices.DeleteFunc(exp.postOrder, func(id string) bool { return id == e.PostID })
				}
				if e.Version > 1 { // apply recorded the version before it failed
					exp.streams[e.Stream] = e.Version - 1
				} else {
					delete(exp.streams, e.Stream)
				}
				unfoldable = append(unfoldable, Diff{PostID: e.PostID,
					Field: fmt.Sprintf("event %s (%s version %d)", e.ID, e.Stream, e.Version),
					Want:  "an event this binary can fold", Got: err.Error()})
			}
		}
		after = page[len(page)-1].Position
	}
}

func (x *expected) apply(e write.Event) error {
	x.streams[e.Stream] = e.Version
	p := x.posts[e.PostID]
	switch e.Type {
	case write.TypePostLiked, write.TypePostUnliked:
		pl, err := write.Decode(e)
		if err != nil {
			return err
		}
		user := ""
		switch v := pl.(type) {
		case write.PostLiked:
			user = v.User
		case write.PostUnliked:
			user = v.User
		}
		if x.likes[e.PostID] == nil {
			x.likes[e.PostID] = map[string]*write.Like{}
		}
		l := x.likes[e.PostID][user]
		if l == nil {
			l = &write.Like{PostID: e.PostID, User: user}
			x.likes[e.PostID][user] = l
		}
		if p != nil && p.Deleted {
			l.Version = e.Version // the read model records it but changes nothing
			return nil
		}
		if err := l.Apply(e); err != nil {
			return err
		}
		x.likeVersion[e.PostID]++
		return nil
	default:
		if p == nil {
			p = &write.Post{ID: e.PostID}
			x.posts[e.PostID] = p
			x.postOrder = append(x.postOrder, e.PostID)
		}
		return p.Apply(e)
	}
}

func compare(x *expected, got read.State) []Diff {
	var diffs []Diff
	add := func(post, field string, want, have any) {
		diffs = append(diffs, Diff{PostID: post, Field: field, Want: fmt.Sprint(want), Got: fmt.Sprint(have)})
	}
	gotPosts := map[string]read.StoredPost{}
	for _, p := range got.Posts {
		gotPosts[p.ID] = p
	}
	gotComments := map[string]map[string]read.Comment{}
	for _, c := range got.Comments {
		if gotComments[c.PostID] == nil {
			gotComments[c.PostID] = map[string]read.Comment{}
		}
		gotComments[c.PostID][c.ID] = c
	}
	gotLikes := map[string]map[string]bool{}
	for _, l := range got.Likes {
		if gotLikes[l.PostID] == nil {
			gotLikes[l.PostID] = map[string]bool{}
		}
		gotLikes[l.PostID][l.User] = true
	}
	for _, id := range x.postOrder {
		w := x.posts[id]
		g, ok := gotPosts[id]
		if !ok {
			add(id, "post", "present", "absent")
			continue
		}
		if w.Deleted != g.Deleted {
			add(id, "deleted", w.Deleted, g.Deleted)
		}
		if w.Version != g.Version {
			add(id, "version", w.Version, g.Version)
		}
		if w.Deleted || g.Deleted {
			continue
		}
		if w.Author != g.Author {
			add(id, "author", strconv.Quote(w.Author), strconv.Quote(g.Author))
		}
		if w.Message != g.Message {
			add(id, "message", strconv.Quote(w.Message), strconv.Quote(g.Message))
		}
		if !sameTime(w.CreatedAt, g.CreatedAt) {
			add(id, "createdAt", w.CreatedAt, g.CreatedAt)
		}
		if !sameOptTime(w.EditedAt, g.EditedAt) {
			add(id, "editedAt", optTime(w.EditedAt), g.EditedAt)
		}
		var likes int64
		users := map[string]bool{}
		for u, l := range x.likes[id] {
			if l.Liked {
				likes++
				users[u] = true
			}
		}
		if likes != g.Likes {
			add(id, "likes", likes, g.Likes)
		}
		if x.likeVersion[id] != g.LikeVersion {
			add(id, "likeVersion", x.likeVersion[id], g.LikeVersion)
		}
		if int64(len(w.Comments)) != g.CommentCount {
			add(id, "commentCount", len(w.Comments), g.CommentCount)
		}
		for u := range users {
			if !gotLikes[id][u] {
				add(id, "like by "+u, "present", "absent")
			}
		}
		for u := range gotLikes[id] {
			if !users[u] {
				add(id, "like by "+u, "absent", "present")
			}
		}
		wantComments := map[string]bool{}
		for _, c := range w.Comments {
			wantComments[c.ID] = true
			gc, ok := gotComments[id][c.ID]
			if !ok {
				add(id, "comment "+c.ID, "present", "absent")
				continue
			}
			if c.Text != gc.Text {
				add(id, "comment "+c.ID+" text", strconv.Quote(c.Text), strconv.Quote(gc.Text))
			}
			if c.Author != gc.Author {
				add(id, "comment "+c.ID+" author", strconv.Quote(c.Author), strconv.Quote(gc.Author))
			}
			if !sameTime(c.CreatedAt, gc.CreatedAt) {
				add(id, "comment "+c.ID+" createdAt", c.CreatedAt, gc.CreatedAt)
			}
			if !sameOptTime(c.EditedAt, gc.EditedAt) {
				add(id, "comment "+c.ID+" editedAt", optTime(c.EditedAt), gc.EditedAt)
			}
		}
		for cid := range gotComments[id] {
			if !wantComments[cid] {
				add(id, "comment "+cid, "absent", "present")
			}
		}
	}
	for id := range gotPosts {
		if x.posts[id] == nil {
			add(id, "post", "absent", "present")
		}
	}
	for s, v := range x.streams {
		if got.Streams[s] != v {
			add(postOfStream(x, s), "stream "+s+" version", v, got.Streams[s])
		}
	}
	for s, v := range got.Streams {
		if _, ok := x.streams[s]; !ok {
			add("?", "stream "+s+" version", 0, v)
		}
	}
	sort.SliceStable(diffs, func(i, j int) bool {
		if diffs[i].PostID != diffs[j].PostID {
			return diffs[i].PostID < diffs[j].PostID
		}
		return diffs[i].Field < diffs[j].Field
	})
	return diffs
}

// postOfStream finds the post a stream belongs to, for the report.
func postOfStream(x *expected, stream string) string {
	for id := range x.posts {
		if stream == write.PostStream(id) {
			return id
		}
	}
	for id, users := range x.likes {
		for u := range users {
			if stream == write.LikeStream(id, u) {
				return id
			}
		}
	}
	return "?"
}

// sameTime compares instants to SQL Server's datetime2 precision (100 ns).
func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -100*time.Nanosecond && d < 100*time.Nanosecond
}

func sameOptTime(want time.Time, got *time.Time) bool {
	if want.IsZero() || got == nil {
		return want.IsZero() && got == nil
	}
	return sameTime(want, *got)
}

func optTime(t time.Time) any {
	if t.IsZero() {
		return "<nil>"
	}
	return t
}
