package write

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on user text, in characters (runes).
const (
	MaxMessageLen = 5000
	MaxCommentLen = 2000
	MaxUserLen    = 128 // a user name (a token's subject)

	MaxClientMutationIDLen = 256
)

// PostStream is the stream that holds a post's own life: creation, edits, comments, deletion.
// Likes are not in it: each user's likes of a post live in a stream of their own (LikeStream), so
// that liking a hot post neither loads every other like nor races with every other liker.
func PostStream(postID string) string { return "post/" + postID }

// LikeStream is the stream of one user's likes and unlikes of one post.
func LikeStream(postID, user string) string { return "post/" + postID + "/likes/" + user }

// Post is the aggregate that decides every command on a post except likes. It is pure: no I/O,
// no clock; the time of a change comes from its event.
type Post struct {
	ID               string    `json:"id"`
	Author           string    `json:"author"`
	Message          string    `json:"message"`
	ClientMutationID string    `json:"clientMutationId,omitempty"`
	CreatedAt        time.Time `json:"createdAt"`
	EditedAt         time.Time `json:"editedAt,omitzero"`
	Deleted          bool      `json:"deleted,omitempty"`
	Version          int64     `json:"version"` // version of PostStream(ID)
	Comments         []Comment `json:"comments,omitempty"`
}

// Comment is a live comment of a post.
type Comment struct {
	ID        string    `json:"id"`
	PostID    string    `json:"postId"`
	Author    string    `json:"author"`
	Text      string    `json:"text"`
	CreatedAt time.Time `json:"createdAt"`
	EditedAt  time.Time `json:"editedAt,omitzero"`
}

// PostSnapshotSchema versions the JSON shape of Post in snapshots. Bump it whenever Post's fields or
// their meaning change: a snapshot of another schema is ignored and the stream is folded from scratch.
const PostSnapshotSchema = 1

// Exists reports whether the post was created and not deleted.
func (p *Post) Exists() bool { return p.Version > 0 && !p.Deleted }

// Comment returns the live comment with the given id.
func (p *Post) Comment(id string) (Comment, bool) {
	for _, c := range p.Comments {
		if c.ID == id {
			return c, true
		}
	}
	return Comment{}, false
}

// Create decides the creation of a new post. ErrInvalid for a blank or oversized message,
// ErrConflict when the post already exists.
func (p *Post) Create(author, message, clientMutationID string) ([]Payload, error) {
	if p.Version > 0 {
		return nil, Errorf(KindConflict, "post %s already exists", p.ID)
	}
	if err := checkText("message", message, MaxMessageLen); err != nil {
		return nil, err
	}
	if utf8.RuneCountInString(clientMutationID) > MaxClientMutationIDLen {
		return nil, Errorf(KindInvalid, "clientMutationId is at most %d characters long", MaxClientMutationIDLen)
	}
	return []Payload{PostCreated{Author: author, Message: message, ClientMutationID: clientMutationID}}, nil
}

// Edit decides a new message. ErrNotFound, ErrForbidden unless by is the author, ErrInvalid.
func (p *Post) Edit(by, message string) ([]Payload, error) {
	if err := p.mustExist(); err != nil {
		return nil, err
	}
	if by != p.Author {
		return nil, Errorf(KindForbidden, "only the author can edit this post")
	}
	if err := checkText("message", message, MaxMessageLen); err != nil {
		return nil, err
	}
	if message == p.Message {
		return nil, nil
	}
	return []Payload{PostEdited{Message: message}}, nil
}

// Delete decides the deletion. ErrNotFound, ErrForbidden unless by is the author.
func (p *Post) Delete(by string) ([]Payload, error) {
	if err := p.mustExist(); err != nil {
		return nil, err
	}
	if by != p.Author {
		return nil, Errorf(KindForbidden, "only the author can delete this post")
	}
	return []Payload{PostDeleted{}}, nil
}

// AddComment decides a new comment with the given id. ErrNotFound, ErrInvalid.
func (p *Post) AddComment(by, commentID, text string) ([]Payload, error) {
	if err := p.mustExist(); err != nil {
		return nil, err
	}
	if err := checkText("text", text, MaxCommentLen); err != nil {
		return nil, err
	}
	if _, ok := p.Comment(commentID); ok {
		return nil, nil // a retried command that already took effect
	}
	return []Payload{CommentAdded{CommentID: commentID, Author: by, Text: text}}, nil
}

// EditComment decides a comment's new text. ErrNotFound (post or comment), ErrForbidden unless by
// wrote the comment, ErrInvalid.
func (p *Post) EditComment(by, commentID, text string) ([]Payload, error) {
	c, err := p.mustComment(commentID)
	if err != nil {
		return nil, err
	}
	if by != c.Author {
		return nil, Errorf(KindForbidden, "only the comment's author can edit it")
	}
	if err := checkText("text", text, MaxCommentLen); err != nil {
		return nil, err
	}
	if text == c.Text {
		return nil, nil
	}
	return []Payload{CommentEdited{CommentID: commentID, Text: text}}, nil
}

// RemoveComment decides a comment's removal. ErrNotFound, ErrForbidden unless by wrote the comment
// or the post.
func (p *Post) RemoveComment(by, commentID string) ([]Payload, error) {
	c, err := p.mustComment(commentID)
	if err != nil {
		return nil, err
	}
	if by != c.Author && by != p.Author {
		return nil, Errorf(KindForbidden, "only the comment's author or the post's author can remove it")
	}
	return []Payload{CommentRemoved{CommentID: commentID}}, nil
}

// Apply folds one event of the post's stream into the state. It fails for an event of another stream
// position or an undecodable one; state is unchanged then.
func (p *Post) Apply(e Event) error {
	if e.Version != p.Version+1 {
		return fmt.Errorf("apply %s to post %s: version %d after %d", e.Type, p.ID, e.Version, p.Version)
	}
	pl, err := Decode(e)
	if err != nil {
		return err
	}
	at := e.At.UTC()
	switch v := pl.(type) {
	case PostCreated:
		p.ID, p.Author, p.Message, p.ClientMutationID, p.CreatedAt = e.PostID, v.Author, v.Message, v.ClientMutationID, at
	case PostEdited:
		p.Message, p.EditedAt = v.Message, at
	case PostDeleted:
		p.Deleted = true
	case CommentAdded:
		p.Comments = append(p.Comments, Comment{ID: v.CommentID, PostID: e.PostID, Author: v.Author, Text: v.Text, CreatedAt: at})
	case CommentEdited:
		for i := range p.Comments {
			if p.Comments[i].ID == v.CommentID {
				p.Comments[i].Text, p.Comments[i].EditedAt = v.Text, at
			}
		}
	case CommentRemoved:
		for i := range p.Comments {
			if p.Comments[i].ID == v.CommentID {
				p.Comments = append(p.Comments[:i:i], p.Comments[i+1:]...)
				break
			}
		}
	default:
		return fmt.Errorf("apply %s to post %s: not a post stream event", e.Type, p.ID)
	}
	p.Version = e.Version
	return nil
}

func (p *Post) mustExist() error {
	if !p.Exists() {
		return Errorf(KindNotFound, "post %s not found", p.ID)
	}
	return nil
}

func (p *Post) mustComment(id string) (Comment, error) {
	if err := p.mustExist(); err != nil {
		return Comment{}, err
	}
	c, ok := p.Comment(id)
	if !ok {
		return Comment{}, Errorf(KindNotFound, "comment %s not found", id)
	}
	return c, nil
}

// Like is the aggregate of one user's like of one post (stream LikeStream(PostID, User)).
type Like struct {
	PostID  string
	User    string
	Liked   bool
	Version int64
}

// Like decides a like by l.User of post. Repeating it is a no-op (no events). ErrNotFound.
func (l *Like) Like(post *Post) ([]Payload, error) {
	if err := post.mustExist(); err != nil {
		return nil, err
	}
	if l.Liked {
		return nil, nil
	}
	return []Payload{PostLiked{User: l.User}}, nil
}

// Unlike decides the withdrawal of l.User's like. Repeating it is a no-op. ErrNotFound.
func (l *Like) Unlike(post *Post) ([]Payload, error) {
	if err := post.mustExist(); err != nil {
		return nil, err
	}
	if !l.Liked {
		return nil, nil
	}
	return []Payload{PostUnliked{User: l.User}}, nil
}

// Apply folds one event of the like stream into the state.
func (l *Like) Apply(e Event) error {
	if e.Version != l.Version+1 {
		return fmt.Errorf("apply %s to like %s/%s: version %d after %d", e.Type, l.PostID, l.User, e.Version, l.Version)
	}
	switch e.Type {
	case TypePostLiked:
		l.Liked = true
	case TypePostUnliked:
		l.Liked = false
	default:
		return fmt.Errorf("apply %s to like %s/%s: not a like stream event", e.Type, l.PostID, l.User)
	}
	l.Version = e.Version
	return nil
}

func checkText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return Errorf(KindInvalid, "%s is not valid UTF-8", field)
	}
	visible := false
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return Errorf(KindInvalid, "%s must not contain control characters", field)
		}
		if unicode.IsGraphic(r) && !unicode.IsSpace(r) {
			visible = true
		}
	}
	if !visible { // spaces, and invisible characters such as U+200B, are blank too
		return Errorf(KindInvalid, "%s must not be blank", field)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return Errorf(KindInvalid, "%s is %d characters long; at most %d are allowed", field, n, max)
	}
	return nil
}
