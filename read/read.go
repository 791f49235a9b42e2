// Package read is the query side: the views that GraphQL resolves from, and the read-model port
// that the projector keeps up to date. Adapters live in read/sqlite and read/sqlserver and pass the
// shared suite in read/readtest.
package read

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/postgate/postgate/write"
)

// Post is a post as the read model holds it.
type Post struct {
	ID           string
	Author       string
	Message      string
	CreatedAt    time.Time
	EditedAt     *time.Time
	Likes        int64
	LikeVersion  int64 // counts the like changes applied to this post; orders LikeCount messages
	CommentCount int64
	Version      int64 // the version of the post's own stream (write.PostStream) applied so far
}

// Comment is a live comment as the read model holds it.
type Comment struct {
	ID        string
	PostID    string
	Author    string
	Text      string
	CreatedAt time.Time
	EditedAt  *time.Time
}

// PostOrder orders a page of posts.
type PostOrder int

// The orders of Posts. Every order has a total keyset (ties broken by id) so cursors are stable.
const (
	Newest PostOrder = iota
	Oldest
	MostLiked
)

// PostFilter selects a page of posts. Deleted posts never match.
type PostFilter struct {
	Author       string // "" for all authors
	MinLikes     int64  // 0 for no bound
	WithComments bool   // only posts that have at least one comment
	Order        PostOrder
	First        int    // page size, 1..100
	After        string // opaque cursor from a previous page, "" for the first page
}

// PostPage is one page of posts with a cursor per post.
type PostPage struct {
	Posts   []Post
	Cursors []string
	HasNext bool
}

// CommentPage is one page of a post's live comments, oldest first, with a cursor per comment.
type CommentPage struct {
	Comments []Comment
	Cursors  []string
	HasNext  bool
}

// Change tells what a committed projection batch did to one post, after the commit (never before).
type Change struct {
	PostID      string
	Version     int64 // post stream version now in the read model
	LikeVersion int64
	Likes       int64
	Created     bool // the batch created the post
	Deleted     bool // the batch deleted the post
	Content     bool // message or comments changed
	LikesChange bool // the like count changed
	// LikeSteps are the like counts the batch passed through, in order, one per applied like or
	// unlike; the last equals (Likes, LikeVersion). A batch commits them together, but each was a
	// true count in the order of the events, so likeCount subscribers can be sent every one.
	LikeSteps []LikeStep
	// Trace is the span of the projection that made the change when its event was traced (zero
	// otherwise): the subscription push continues that trace.
	Trace trace.SpanContext
}

// LikeStep is the like count of a post after one like change.
type LikeStep struct {
	Likes       int64 `json:"likes"`
	LikeVersion int64 `json:"likeVersion"`
}

// ErrBadCursor is returned by Posts and CommentPages for a cursor they did not issue.
var ErrBadCursor = errors.New("invalid cursor")

// ErrGap is returned by Apply when an event's stream predecessor has not been applied: the caller
// must fetch the missing events from the event store and apply them first.
var ErrGap = errors.New("event stream gap")

// Queries are what the gateway resolves from.
type Queries interface {
	// Post returns a live post; ok is false when it is absent or deleted.
	Post(ctx context.Context, id string) (p Post, ok bool, err error)
	// Posts returns one page. ErrBadCursor for a foreign cursor.
	Posts(ctx context.Context, f PostFilter) (PostPage, error)
	// CommentPages returns a page of the live comments of each post id, oldest first: at most
	// first (1..100) of them, after the comment cursor after ("" for the first page), in one query
	// per call. A post without comments (absent, deleted) has no entry. ErrBadCursor for a cursor
	// that CommentCursor did not make.
	CommentPages(ctx context.Context, postIDs []string, first int, after string) (map[string]CommentPage, error)
	// LikedBy reports which of postIDs user currently likes, in one query per call.
	LikedBy(ctx context.Context, user string, postIDs []string) (map[string]bool, error)
	// StreamVersion returns the version of stream applied to the read model, 0 if none.
	StreamVersion(ctx context.Context, stream string) (int64, error)
}

// Model is the whole read-model port: queries plus what the projector needs.
type Model interface {
	Queries
	// Apply applies events in one transaction, in slice order, and returns what changed per post.
	// Idempotent: an event whose stream version is already applied changes nothing. Events of
	// one stream must arrive in version order; a missing predecessor fails the whole batch with
	// ErrGap and nothing is applied. So does an event of a post whose post.created has not been
	// applied yet (a like can overtake its post when a fast-path publish failed and the relay
	// publishes the post later). Events on a deleted post change nothing but are recorded as applied.
	Apply(ctx context.Context, events []write.Event) ([]Change, error)
	// Ping checks that the database answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// StoredPost is a post row as the read model keeps it, deleted ones included. Only Dump returns it:
// queries never show a deleted post.
type StoredPost struct {
	Post
	Deleted bool
}

// Like is one user's current like of one post.
type Like struct {
	PostID string
	User   string
}

// State is the whole content of the active generation of a read model, as Verify compares it with
// a fold of the event store. Slices are sorted by post id (then comment id, then user).
type State struct {
	Posts    []StoredPost
	Comments []Comment
	Likes    []Like
	Streams  map[string]int64 // applied version per stream
}

// Inspector is implemented by read models that can list their content; Verify needs it.
type Inspector interface {
	// Dump returns the content of the active generation, read in one transaction.
	Dump(ctx context.Context) (State, error)
}

// Generations is implemented by read models that can be rebuilt beside the live data: a new
// generation is filled from the event store while the active one keeps serving queries and Apply,
// then Activate switches every reader and writer, in every process sharing the database, atomically.
type Generations interface {
	// NewGeneration discards every inactive generation left behind (by a crashed rebuild) and
	// returns the number of a new, empty, inactive one.
	NewGeneration(ctx context.Context) (int64, error)
	// ApplyTo is Apply into generation gen, active or not. ErrGap as for Apply.
	ApplyTo(ctx context.Context, gen int64, events []write.Event) ([]Change, error)
	// Activate makes gen the generation that queries and Apply use, and returns the one it replaced.
	Activate(ctx context.Context, gen int64) (old int64, err error)
	// DropGeneration deletes the rows of an inactive generation. It refuses the active one.
	DropGeneration(ctx context.Context, gen int64) error
	// ActiveGeneration returns the generation that queries and Apply use now.
	ActiveGeneration(ctx context.Context) (int64, error)
}

// Positions is implemented by read models that record the event-store position up to which every
// event is known to be applied; the projector's catch-up from the store starts there.
type Positions interface {
	// AppliedPosition returns the recorded position, 0 when none is.
	AppliedPosition(ctx context.Context) (int64, error)
	// SaveAppliedPosition records p. It never moves the position backwards: a smaller p is ignored.
	SaveAppliedPosition(ctx context.Context, p int64) error
}

// Repairer is implemented by read models whose posts can be compared with the event store and
// repaired one at a time (the projector's anti-entropy).
type Repairer interface {
	// DumpPost returns what the active generation holds of one post, as Dump would list it
	// (its row, live comments, current likes, and the applied version of each of its streams).
	DumpPost(ctx context.Context, postID string) (State, error)
	// ReplacePost deletes every row of the post from the active generation and applies the
	// events load returns (all of the post's stored events, in store order) in the same
	// transaction, so that no reader sees the post half repaired. load runs once the transaction
	// holds the apply lock, with the streams of the post that the rows hold at that moment (its
	// post stream and every like stream with a row), so that no concurrent Apply lands between
	// what it reads and the rewrite: the store is written before anything is applied, so what
	// load reads includes whatever any projector applied before. Errors as for Apply, and load's.
	ReplacePost(ctx context.Context, postID string, load func(ctx context.Context, streams []string) ([]write.Event, error)) ([]Change, error)
}
