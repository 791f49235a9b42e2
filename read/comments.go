package read

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxCommentPage is the most comments one page may hold.
const MaxCommentPage = 100

// CommentPosition is the keyset of the order of comments, oldest first: creation time, then id.
// A cursor holds the position of the last comment of a page; the next page starts after it.
type CommentPosition struct {
	At time.Time
	ID string
}

// commentCursor is the JSON inside a comment cursor. Its one field "c" makes a post cursor (whose
// fields are o, t, l, i) and a comment cursor refuse each other.
type commentCursor struct {
	C struct {
		T time.Time `json:"t"`
		I string    `json:"i"`
	} `json:"c"`
}

// CommentCursor returns the opaque cursor just after c. It depends on c alone, so a page cut from
// comments in memory (a mutation's result) has the cursors the read model issues.
func CommentCursor(c Comment) string {
	var cc commentCursor
	cc.C.T, cc.C.I = c.CreatedAt.UTC(), c.ID
	b, _ := json.Marshal(cc) // plain fields always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseCommentCursor returns the position a cursor of CommentCursor holds; ErrBadCursor for
// anything else.
func ParseCommentCursor(s string) (CommentPosition, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return CommentPosition{}, fmt.Errorf("decode comment cursor: %w", ErrBadCursor)
	}
	var cc commentCursor
	if err := json.Unmarshal(b, &cc); err != nil || cc.C.I == "" || cc.C.T.IsZero() {
		return CommentPosition{}, fmt.Errorf("decode comment cursor: %w", ErrBadCursor)
	}
	return CommentPosition{At: cc.C.T.UTC(), ID: cc.C.I}, nil
}

// compareComments orders comments oldest first, ties broken by id: the order of every page.
func compareComments(a, b Comment) int {
	return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
}

// PageComments cuts the page that CommentPages would return from all of one post's live
// comments, in any order; first is clamped to 1..MaxCommentPage. ErrBadCursor for a foreign
// cursor.
func PageComments(all []Comment, first int, after string) (CommentPage, error) {
	first = min(max(first, 1), MaxCommentPage)
	cs := slices.SortedStableFunc(slices.Values(all), compareComments)
	if after != "" {
		pos, err := ParseCommentCursor(after)
		if err != nil {
			return CommentPage{}, err
		}
		from, _ := slices.BinarySearchFunc(cs, pos, func(c Comment, p CommentPosition) int {
			if compareComments(c, Comment{CreatedAt: p.At, ID: p.ID}) <= 0 {
				return -1
			}
			return 1
		})
		cs = cs[from:]
	}
	var page CommentPage
	if len(cs) > first {
		cs, page.HasNext = cs[:first], true
	}
	page.Comments = cs
	for _, c := range cs {
		page.Cursors = append(page.Cursors, CommentCursor(c))
	}
	return page, nil
}
