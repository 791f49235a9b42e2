package sqlmodel

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/postgate/postgate/read"
)

// Cursor is the keyset position after which a page starts: the order key of the last post of the
// previous page. It is opaque to clients (base64 of JSON) and carries its order, so a cursor of
// one order cannot be used with another.
type Cursor struct {
	Order read.PostOrder `json:"o"`
	At    time.Time      `json:"t,omitzero"`
	Likes int64          `json:"l,omitempty"`
	ID    string         `json:"i"`
}

// CursorOf returns the cursor that points just after p in order o.
func CursorOf(o read.PostOrder, p read.Post) Cursor {
	c := Cursor{Order: o, ID: p.ID}
	if o == read.MostLiked {
		c.Likes = p.Likes
	} else {
		c.At = p.CreatedAt.UTC()
	}
	return c
}

// Encode returns the opaque form of c.
func (c Cursor) Encode() string {
	b, _ := json.Marshal(c) // a struct of plain fields always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor parses a cursor issued for order o. read.ErrBadCursor for anything else.
func DecodeCursor(s string, o read.PostOrder) (*Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decode cursor: %w", read.ErrBadCursor)
	}
	var c Cursor
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		return nil, fmt.Errorf("decode cursor: %w", read.ErrBadCursor)
	}
	if c.Order != o {
		return nil, fmt.Errorf("cursor of another order: %w", read.ErrBadCursor)
	}
	return &c, nil
}

// ClampFirst bounds a page size to 1..100.
func ClampFirst(n int) int {
	return min(max(n, 1), 100)
}
