package graph

import (
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Post is the GraphQL Post. Comments and likedByMe are resolved lazily through the request's
// dataloaders unless the value is already known (a mutation result knows both from the write side).
type Post struct {
	ID           string
	Author       string
	Message      string
	CreatedAt    time.Time
	EditedAt     *time.Time
	Likes        int64
	CommentCount int64
	Version      int64

	// likeVersion orders the read model's like changes; postUpdated dedupes by it and Version.
	likeVersion int64
	// comments, when non-nil, are the post's live comments as of Version.
	comments []*Comment
	// likedByMe, when non-nil, is already known for the acting user.
	likedByMe *bool
	// page, when non-nil, is the connection page the post came in, batched as one.
	page *page
}

// Comment is the GraphQL Comment.
type Comment struct {
	ID        string
	PostID    string
	Author    string
	Text      string
	CreatedAt time.Time
	EditedAt  *time.Time
}

// LikeCount is the GraphQL LikeCount: a post's like count at a like version.
type LikeCount struct {
	PostID  string
	Likes   int64
	Version int64
}

func postFromRead(p read.Post) *Post {
	return &Post{
		ID:           p.ID,
		Author:       p.Author,
		Message:      p.Message,
		CreatedAt:    p.CreatedAt.UTC(),
		EditedAt:     utcPtr(p.EditedAt),
		Likes:        p.Likes,
		CommentCount: p.CommentCount,
		Version:      p.Version,
		likeVersion:  p.LikeVersion,
	}
}

// postFromWrite builds a Post from the write side's state, which already includes the mutation's
// own effect. likes comes from the read model (the write side does not count likes).
func postFromWrite(p write.Post, likes int64) *Post {
	out := &Post{
		ID:           p.ID,
		Author:       p.Author,
		Message:      p.Message,
		CreatedAt:    p.CreatedAt.UTC(),
		Likes:        likes,
		CommentCount: int64(len(p.Comments)),
		Version:      p.Version,
		comments:     make([]*Comment, 0, len(p.Comments)),
	}
	if !p.EditedAt.IsZero() {
		t := p.EditedAt.UTC()
		out.EditedAt = &t
	}
	for _, c := range p.Comments {
		out.comments = append(out.comments, commentFromWrite(c))
	}
	return out
}

func commentFromRead(c read.Comment) *Comment {
	return &Comment{
		ID:        c.ID,
		PostID:    c.PostID,
		Author:    c.Author,
		Text:      c.Text,
		CreatedAt: c.CreatedAt.UTC(),
		EditedAt:  utcPtr(c.EditedAt),
	}
}

func commentFromWrite(c write.Comment) *Comment {
	out := &Comment{ID: c.ID, PostID: c.PostID, Author: c.Author, Text: c.Text, CreatedAt: c.CreatedAt.UTC()}
	if !c.EditedAt.IsZero() {
		t := c.EditedAt.UTC()
		out.EditedAt = &t
	}
	return out
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
