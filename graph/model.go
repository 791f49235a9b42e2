package graph

import (
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Post is the GraphQL Post. Comments and likedByMe are resolved lazily through the request's
// dataloaders unless the value is already known (a mutation result knows both from the write side;
// a postUpdated message knows the default page of comments).
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
	// allComments, when non-nil, are all the post's live comments as of Version (the write side's
	// state): every page is cut from them, so a mutation's answer includes its own effect.
	allComments []read.Comment
	// firstComments, when non-nil, is the default page of comments (comments with no arguments) as
	// of Version, read once for every subscriber of an update.
	firstComments *CommentConnection
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
		allComments:  make([]read.Comment, 0, len(p.Comments)),
	}
	if !p.EditedAt.IsZero() {
		t := p.EditedAt.UTC()
		out.EditedAt = &t
	}
	for _, c := range p.Comments {
		out.allComments = append(out.allComments, readComment(c))
	}
	return out
}

// commentConnection is the GraphQL page of a read-model page of comments.
func commentConnection(pg read.CommentPage) *CommentConnection {
	conn := &CommentConnection{Edges: make([]*CommentEdge, len(pg.Comments)), PageInfo: &PageInfo{HasNextPage: pg.HasNext}}
	for i, c := range pg.Comments {
		conn.Edges[i] = &CommentEdge{Cursor: pg.Cursors[i], Node: commentFromRead(c)}
	}
	if n := len(pg.Cursors); n > 0 {
		conn.PageInfo.EndCursor = &pg.Cursors[n-1]
	}
	return conn
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

func commentFromWrite(c write.Comment) *Comment { return commentFromRead(readComment(c)) }

// readComment is the write side's comment as the read model will hold it, so that pages cut from
// the write side's state are the read model's pages (read.PageComments).
func readComment(c write.Comment) read.Comment {
	out := read.Comment{ID: c.ID, PostID: c.PostID, Author: c.Author, Text: c.Text, CreatedAt: c.CreatedAt.UTC()}
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
