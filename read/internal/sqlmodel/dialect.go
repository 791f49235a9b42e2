// Package sqlmodel is the read model over database/sql that the SQLite and SQL Server adapters share:
// the projection logic (what an event does to posts, likes, comments and the applied versions) and
// the query plumbing live here once; each adapter supplies only its SQL text through Dialect.
// It imports no driver.
package sqlmodel

import (
	"strings"

	"github.com/postgate/postgate/read"
)

// Column counts of the multi-row statements, so that batches can be cut under a dialect's
// parameter limit.
const (
	PostCols       = 11 // gen, id, author, message, created_at, edited_at, likes, like_version, comment_count, version, deleted
	PostLikeCols   = 4  // gen, id, likes, like_version
	PostUpdateCols = 9  // gen, id, message, edited_at, likes, like_version, comment_count, version, deleted
	LikeCols       = 5  // gen, post_id, user_id, version, liked
	LikeKeyCols    = 2  // post_id, user_id
	LikeUpdateCols = 7  // gen, post_id, user_id, version, liked, previous version, previous liked
)

// Dialect is the SQL text of one database. Every method is pure: the same input gives the same
// statement, which is what the golden tests of the SQL Server adapter pin. Placeholders are the
// dialect's own; argument order is documented per method.
type Dialect interface {
	// Name is the sqlx bind name ("sqlite", "sqlserver").
	Name() string
	// MaxParams is the most parameters one statement may carry.
	MaxParams() int

	// LockApply, when not empty, runs first in every Apply and generation transaction to serialise
	// them across processes (SQLite's IMMEDIATE transactions already do). No arguments.
	LockApply() string
	// ActiveGen returns the active generation. No arguments.
	ActiveGen() string
	// SelectPosts returns what Apply needs of existing posts: (id, version, deleted, likes,
	// like_version, comment_count); no text or times, which cost more to read than the rest.
	// Args: gen, n ids.
	SelectPosts(n int) string
	// SelectLikes returns (post_id, user_id, version, liked) rows: the state of like streams, which
	// the likes table keeps instead of applied (one row per user and post, liked or not, holding
	// the like stream's applied version), so a like costs one row write. Args: gen, n pairs of
	// post_id, user_id.
	SelectLikes(n int) string
	// UpsertPosts inserts (or replaces) n full rows of new posts. Args: PostCols per row.
	UpsertPosts(n int) string
	// UpdatePosts updates n existing posts; a NULL message or edited_at keeps the stored one.
	// Args: PostUpdateCols per row.
	UpdatePosts(n int) string
	// UpdatePostLikes sets the like counters of n existing posts, touching no other column so
	// that only the likes index is maintained. Args: PostLikeCols per row.
	UpdatePostLikes(n int) string
	// UpsertLikes inserts or replaces n like rows. Args: LikeCols per row.
	UpsertLikes(n int) string
	// InsertLikes inserts n like rows and fails if one exists. Args: LikeCols per row.
	InsertLikes(n int) string
	// UpdateLikes updates n like rows that are at the given previous version and state, and no
	// others; the affected row count tells how many were. Args: LikeUpdateCols per row.
	UpdateLikes(n int) string
	// InsertComment adds a comment. Args: gen, post_id, id, author, text, created_at.
	InsertComment() string
	// UpdateComment edits a comment. Args: text, edited_at, gen, post_id, id.
	UpdateComment() string
	// DeleteComment removes a comment. Args: gen, post_id, id.
	DeleteComment() string

	// Post returns one live post of the active generation. Args: id.
	Post() string
	// Posts returns one page (First+1 rows, to tell HasNext) and its arguments.
	Posts(f read.PostFilter, after *Cursor) (string, []any)
	// CommentPages returns, for each of n live posts, its first comments (oldest first, after a
	// position when after is true), numbered from 1 per post so that a limit applies per post:
	// (id, post_id, author, text, created_at, edited_at) rows with number at most the limit,
	// ordered by post_id, created_at, id. Args: n post ids, then the position's created_at and id
	// when after, then the limit.
	CommentPages(n int, after bool) string
	// LikedBy returns the post ids among n that user likes. Args: user, n post ids.
	LikedBy(n int) string
	// StreamVersion returns the applied version of a post stream: the post row's version, deleted
	// or not. Args: post id.
	StreamVersion() string
	// LikeVersion returns the applied version of a like stream. Args: post_id, user_id.
	LikeVersion() string

	// NextGen reserves a generation number and returns it. No arguments; run in a transaction.
	NextGen() []string
	// SetActive makes a generation active. Args: gen.
	SetActive() string
	// DeleteGen deletes rows of one generation from one of Tables, all or a chunk: the caller
	// repeats it until it deletes nothing. Args: gen.
	DeleteGen(table string) string
	// DeleteInactive deletes the rows of every inactive generation from one of Tables. No arguments.
	DeleteInactive(table string) string
	// DumpPosts, DumpComments, DumpLikes (post_id, user_id, version, liked) list the active
	// generation. No arguments.
	DumpPosts() string
	DumpComments() string
	DumpLikes() string

	// AppliedPosition returns the catch-up position (read.Positions): one row, one column. No
	// arguments.
	AppliedPosition() string
	// SaveAppliedPosition moves the catch-up position to a higher one, never back. Args:
	// position, position.
	SaveAppliedPosition() string
	// DumpPost, DumpPostComments and DumpPostLikes list one post of a generation, with the
	// columns and order of DumpPosts, DumpComments and DumpLikes (read.Repairer). Args: gen,
	// post id.
	DumpPost() string
	DumpPostComments() string
	DumpPostLikes() string
	// DeletePost deletes the rows of one post from one of Tables. Args: gen, post id.
	DeletePost(table string) string
}

// Tables are the tables that hold generation rows. What was applied is recorded in them too, in
// the transaction of its effect: a post stream's version is its post row's version, a like
// stream's is its likes row's.
var Tables = []string{"posts", "comments", "likes"}

// Placeholders returns n placeholders from first on, comma separated, made by ph.
func Placeholders(ph func(i int) string, first, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ph(first + i))
	}
	return b.String()
}

// Rows returns n parenthesised rows of cols placeholders each, numbered from first on.
func Rows(ph func(i int) string, first, n, cols int) string {
	var b strings.Builder
	for r := 0; r < n; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		b.WriteString(Placeholders(ph, first+r*cols, cols))
		b.WriteString(")")
	}
	return b.String()
}

// MaxShape bounds the rows (or list values) of one statement on the apply path.
const MaxShape = 256

// Shapes returns the sizes, largest first, of the multi-row statements that Apply sends for items
// of cols parameters each plus extra fixed ones: powers of four up to MaxShape that fit under the
// dialect's parameter limit. A fixed, small set of statement texts can be prepared once and
// reused (and keeps SQL Server's plan cache small); compiling a fresh 500-row statement per batch
// cost more than executing it.
func Shapes(d Dialect, cols, extra int) []int {
	var out []int
	for n := 1; n <= MaxShape && n*cols+extra <= d.MaxParams(); n *= 4 {
		out = append([]int{n}, out...)
	}
	return out
}

// InListSize is how many values Model puts in one IN list besides one other parameter.
func InListSize(d Dialect) int { return d.MaxParams() - 1 }

// CommentPagesSize is how many post ids Model puts in one CommentPages statement: the other three
// parameters are the position (two) and the limit.
func CommentPagesSize(d Dialect) int { return d.MaxParams() - 3 }

// RowsPerStatement is how many rows of cols parameters Model puts in one multi-row statement.
func RowsPerStatement(d Dialect, cols int) int { return d.MaxParams() / cols }
