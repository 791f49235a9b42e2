package write_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postgate/postgate/write"
)

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

// fold builds a post from payloads as if each had been stored in turn.
func fold(tb testing.TB, id string, steps ...struct {
	actor string
	p     write.Payload
}) write.Post {
	tb.Helper()
	post := write.Post{ID: id}
	for i, s := range steps {
		e, err := write.NewEvent("e", id, s.actor, t0.Add(time.Duration(i)*time.Minute), s.p)
		if err != nil {
			tb.Fatal(err)
		}
		e.Stream, e.Version = write.PostStream(id), post.Version+1
		if err := post.Apply(e); err != nil {
			tb.Fatal(err)
		}
	}
	return post
}

type step = struct {
	actor string
	p     write.Payload
}

func TestPostRules(t *testing.T) {
	created := []step{{"alice", write.PostCreated{Author: "alice", Message: "hi"}}}
	withComment := append(created[:1:1], step{"bob", write.CommentAdded{CommentID: "c1", Author: "bob", Text: "nice"}})
	deleted := append(withComment[:2:2], step{"alice", write.PostDeleted{}})
	long := strings.Repeat("é", write.MaxMessageLen)
	cases := []struct {
		name    string
		history []step
		decide  func(p *write.Post) ([]write.Payload, error)
		want    error // nil: allowed
		events  int
	}{
		{"create with a message", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", "hi", "") }, nil, 1},
		{"create with a blank message is invalid", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", " \n\t", "") }, write.ErrInvalid, 0},
		{"a message of invisible characters is blank", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", "\u00a0\u200b", "") }, write.ErrInvalid, 0},
		{"a message with a NUL is invalid", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", "hi\x00there", "") }, write.ErrInvalid, 0},
		{"a message over several lines is fine", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", "line one\r\n\tline two", "") }, nil, 1},
		{"create at exactly the length limit", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", long, "") }, nil, 1},
		{"create over the length limit is invalid", nil, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", long+"x", "") }, write.ErrInvalid, 0},
		{"create an existing post is a conflict", created, func(p *write.Post) ([]write.Payload, error) { return p.Create("alice", "again", "") }, write.ErrConflict, 0},
		{"edit by the author", created, func(p *write.Post) ([]write.Payload, error) { return p.Edit("alice", "new") }, nil, 1},
		{"edit to the same message changes nothing", created, func(p *write.Post) ([]write.Payload, error) { return p.Edit("alice", "hi") }, nil, 0},
		{"edit by someone else is forbidden", created, func(p *write.Post) ([]write.Payload, error) { return p.Edit("bob", "mine now") }, write.ErrForbidden, 0},
		{"edit to a blank message is invalid", created, func(p *write.Post) ([]write.Payload, error) { return p.Edit("alice", "  ") }, write.ErrInvalid, 0},
		{"edit of an unknown post is not found", nil, func(p *write.Post) ([]write.Payload, error) { return p.Edit("alice", "x") }, write.ErrNotFound, 0},
		{"delete by the author", created, func(p *write.Post) ([]write.Payload, error) { return p.Delete("alice") }, nil, 1},
		{"delete by someone else is forbidden", created, func(p *write.Post) ([]write.Payload, error) { return p.Delete("bob") }, write.ErrForbidden, 0},
		{"comment by anyone", created, func(p *write.Post) ([]write.Payload, error) { return p.AddComment("carol", "c2", "hello") }, nil, 1},
		{"a blank comment is invalid", created, func(p *write.Post) ([]write.Payload, error) { return p.AddComment("carol", "c2", "") }, write.ErrInvalid, 0},
		{"a comment over 2000 characters is invalid", created, func(p *write.Post) ([]write.Payload, error) {
			return p.AddComment("carol", "c2", strings.Repeat("a", write.MaxCommentLen+1))
		}, write.ErrInvalid, 0},
		{"re-adding a stored comment id changes nothing", withComment, func(p *write.Post) ([]write.Payload, error) { return p.AddComment("bob", "c1", "nice") }, nil, 0},
		{"edit comment by its author", withComment, func(p *write.Post) ([]write.Payload, error) { return p.EditComment("bob", "c1", "nicer") }, nil, 1},
		{"edit comment by the post's author is forbidden", withComment, func(p *write.Post) ([]write.Payload, error) { return p.EditComment("alice", "c1", "x") }, write.ErrForbidden, 0},
		{"edit an unknown comment is not found", withComment, func(p *write.Post) ([]write.Payload, error) { return p.EditComment("bob", "c9", "x") }, write.ErrNotFound, 0},
		{"remove comment by its author", withComment, func(p *write.Post) ([]write.Payload, error) { return p.RemoveComment("bob", "c1") }, nil, 1},
		{"remove comment by the post's author", withComment, func(p *write.Post) ([]write.Payload, error) { return p.RemoveComment("alice", "c1") }, nil, 1},
		{"remove comment by a third user is forbidden", withComment, func(p *write.Post) ([]write.Payload, error) { return p.RemoveComment("carol", "c1") }, write.ErrForbidden, 0},
		{"edit a deleted post is not found", deleted, func(p *write.Post) ([]write.Payload, error) { return p.Edit("alice", "x") }, write.ErrNotFound, 0},
		{"delete a deleted post is not found", deleted, func(p *write.Post) ([]write.Payload, error) { return p.Delete("alice") }, write.ErrNotFound, 0},
		{"comment on a deleted post is not found", deleted, func(p *write.Post) ([]write.Payload, error) { return p.AddComment("bob", "c3", "x") }, write.ErrNotFound, 0},
		{"edit a comment of a deleted post is not found", deleted, func(p *write.Post) ([]write.Payload, error) { return p.EditComment("bob", "c1", "x") }, write.ErrNotFound, 0},
		{"remove a comment of a deleted post is not found", deleted, func(p *write.Post) ([]write.Payload, error) { return p.RemoveComment("bob", "c1") }, write.ErrNotFound, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := fold(t, "p1", c.history...)
			before := p.Version
			evs, err := c.decide(&p)
			if c.want == nil && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("error %v, want kind %v", err, write.KindOf(c.want))
			}
			if len(evs) != c.events {
				t.Fatalf("%d events, want %d", len(evs), c.events)
			}
			if p.Version != before {
				t.Fatal("deciding changed the state")
			}
		})
	}
}

func TestLikeRules(t *testing.T) {
	live := fold(t, "p1", step{"alice", write.PostCreated{Author: "alice", Message: "hi"}})
	gone := fold(t, "p1", step{"alice", write.PostCreated{Author: "alice", Message: "hi"}}, step{"alice", write.PostDeleted{}})
	cases := []struct {
		name   string
		liked  bool
		post   write.Post
		like   bool
		want   error
		events int
	}{
		{"like a post", false, live, true, nil, 1},
		{"liking again is a no-op", true, live, true, nil, 0},
		{"unlike a liked post", true, live, false, nil, 1},
		{"unliking again is a no-op", false, live, false, nil, 0},
		{"like a deleted post is not found", false, gone, true, write.ErrNotFound, 0},
		{"unlike a deleted post is not found", true, gone, false, write.ErrNotFound, 0},
		{"like an unknown post is not found", false, write.Post{ID: "nope"}, true, write.ErrNotFound, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := write.Like{PostID: "p1", User: "bob", Liked: c.liked}
			var evs []write.Payload
			var err error
			if c.like {
				evs, err = l.Like(&c.post)
			} else {
				evs, err = l.Unlike(&c.post)
			}
			if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if len(evs) != c.events {
				t.Fatalf("%d events, want %d", len(evs), c.events)
			}
		})
	}
}

func TestApplyFoldsState(t *testing.T) {
	p := fold(t, "p1",
		step{"alice", write.PostCreated{Author: "alice", Message: "hi"}},
		step{"alice", write.PostEdited{Message: "hello"}},
		step{"bob", write.CommentAdded{CommentID: "c1", Author: "bob", Text: "a"}},
		step{"carol", write.CommentAdded{CommentID: "c2", Author: "carol", Text: "b"}},
		step{"bob", write.CommentEdited{CommentID: "c1", Text: "a2"}},
		step{"alice", write.CommentRemoved{CommentID: "c2"}},
	)
	if p.Author != "alice" || p.Message != "hello" || p.Version != 6 || !p.CreatedAt.Equal(t0) || !p.EditedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("post %+v", p)
	}
	if len(p.Comments) != 1 || p.Comments[0].Text != "a2" || p.Comments[0].EditedAt.IsZero() {
		t.Fatalf("comments %+v", p.Comments)
	}
	e, _ := write.NewEvent("x", "p1", "alice", t0, write.PostEdited{Message: "skip"})
	e.Version = 9
	if err := p.Apply(e); err == nil {
		t.Fatal("applying version 9 after 6 succeeded")
	}
}
