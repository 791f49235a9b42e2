package sqlmodel

import (
	"fmt"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// postState is a post row as loaded, plus what the batch did to it.
type postState struct {
	read.StoredPost
	loaded     bool // the row exists in the database (only its counters were read)
	messageSet bool // the batch edited the message
	dirty      bool // the row must be written
	likesDirty bool // only the like counters changed
	change     read.Change
}

// likeState is one like stream's row: its applied version and whether the user likes the post.
type likeState struct {
	version int64
	liked   bool
}

type commentOpKind int

const (
	opAdd commentOpKind = iota
	opEdit
	opRemove
)

type commentOp struct {
	kind commentOpKind
	c    read.Comment
}

// batch is the in-memory working set of one Apply: loaded rows, then the effects of the events,
// decided in Go so that both dialects share one projection and the writes can go out as a few
// multi-row statements instead of several round trips per event.
type batch struct {
	posts      map[string]*postState
	order      []string // changed post ids in first-touch order, for a stable change list
	touched    map[string]bool
	writeOrder []string // post ids whose row must be written
	written    map[string]bool
	likes      map[read.Like]*likeState
	assumed    map[read.Like]likeState // inferred states before the batch, when not read
	likeOrder  []read.Like             // like streams whose row moved, in first-touch order
	likeDirty  map[read.Like]bool
	commentOps []commentOp
}

func newBatch() *batch {
	return &batch{posts: map[string]*postState{}, written: map[string]bool{},
		touched: map[string]bool{}, likes: map[read.Like]*likeState{}, likeDirty: map[read.Like]bool{}}
}

// fold applies the events to the working set in slice order. read.ErrGap when an event's stream
// predecessor is missing or its post was never created; the caller then rolls back.
func (b *batch) fold(events []write.Event, payloads []write.Payload) error {
	for i, e := range events {
		pl := payloads[i]
		if user, liked, ok := likeOf(pl); ok {
			if err := b.foldLike(e, user, liked); err != nil {
				return err
			}
			continue
		}
		p := b.posts[e.PostID]
		var have int64
		if p != nil {
			have = p.Version
		}
		if e.Version <= have {
			continue // already applied: a redelivery
		}
		if e.Version != have+1 {
			return fmt.Errorf("apply %s %s: stream %s at version %d, event is %d: %w", e.Type, e.ID, write.PostStream(e.PostID), have, e.Version, read.ErrGap)
		}
		if _, created := pl.(write.PostCreated); !created && p == nil {
			return fmt.Errorf("apply %s %s: post %s not created yet: %w", e.Type, e.ID, e.PostID, read.ErrGap)
		}
		if p != nil && p.Deleted {
			p.Version, p.dirty = e.Version, true // recorded as applied, changes nothing
			b.write(e.PostID)
			continue
		}
		at := e.At.UTC()
		switch v := pl.(type) {
		case write.PostCreated:
			if p == nil {
				p = &postState{}
				b.posts[e.PostID] = p
			}
			p.ID, p.Author, p.Message, p.CreatedAt = e.PostID, v.Author, v.Message, at
			p.change.Created = true
		case write.PostEdited:
			p.Message, p.EditedAt, p.messageSet = v.Message, utc(at), true
			p.change.Content = true
		case write.PostDeleted:
			p.Deleted = true
			p.change.Deleted = true
		case write.CommentAdded:
			b.commentOps = append(b.commentOps, commentOp{kind: opAdd, c: read.Comment{ID: v.CommentID, PostID: e.PostID, Author: v.Author, Text: v.Text, CreatedAt: at}})
			p.CommentCount++
			p.change.Content = true
		case write.CommentEdited:
			b.commentOps = append(b.commentOps, commentOp{kind: opEdit, c: read.Comment{ID: v.CommentID, PostID: e.PostID, Text: v.Text, EditedAt: utc(at)}})
			p.change.Content = true
		case write.CommentRemoved:
			b.commentOps = append(b.commentOps, commentOp{kind: opRemove, c: read.Comment{ID: v.CommentID, PostID: e.PostID}})
			p.CommentCount = max(p.CommentCount-1, 0)
			p.change.Content = true
		default:
			return fmt.Errorf("apply %s %s: no projection for this type", e.Type, e.ID)
		}
		p.Version = e.Version
		p.dirty = true
		b.touch(e.PostID)
	}
	return nil
}

// likeOf tells whether a payload belongs to a like stream, whose user, and whether it likes.
func likeOf(p write.Payload) (user string, liked, ok bool) {
	switch v := p.(type) {
	case write.PostLiked:
		return v.User, true, true
	case write.PostUnliked:
		return v.User, false, true
	}
	return "", false, false
}

// foldLike applies one event of a like stream. The stream's version lives in its likes row.
func (b *batch) foldLike(e write.Event, user string, liked bool) error {
	key := read.Like{PostID: e.PostID, User: user}
	ls := b.likes[key]
	if ls == nil {
		ls = &likeState{}
		b.likes[key] = ls
	}
	if e.Version <= ls.version {
		return nil // already applied: a redelivery
	}
	if e.Version != ls.version+1 {
		return fmt.Errorf("apply %s %s: stream %s at version %d, event is %d: %w", e.Type, e.ID, write.LikeStream(e.PostID, user), ls.version, e.Version, read.ErrGap)
	}
	p := b.posts[e.PostID]
	if p == nil || p.Version == 0 {
		return fmt.Errorf("apply %s %s: post %s not created yet: %w", e.Type, e.ID, e.PostID, read.ErrGap)
	}
	ls.version = e.Version
	if !b.likeDirty[key] {
		b.likeDirty[key] = true
		b.likeOrder = append(b.likeOrder, key)
	}
	if p.Deleted {
		return nil // recorded as applied, changes nothing
	}
	p.LikeVersion++
	if liked != ls.liked {
		ls.liked = liked
		if liked {
			p.Likes++
		} else {
			p.Likes--
		}
	}
	p.change.LikesChange = true
	p.change.LikeSteps = append(p.change.LikeSteps, read.LikeStep{Likes: p.Likes, LikeVersion: p.LikeVersion})
	p.likesDirty = true
	b.touch(e.PostID)
	return nil
}

// touch marks a post changed (it gets a Change) and its row due for writing.
func (b *batch) touch(postID string) {
	if !b.touched[postID] {
		b.touched[postID] = true
		b.order = append(b.order, postID)
	}
	b.write(postID)
}

// write marks a post's row due for writing.
func (b *batch) write(postID string) {
	if !b.written[postID] {
		b.written[postID] = true
		b.writeOrder = append(b.writeOrder, postID)
	}
}

// changes returns one Change per post the batch changed, in first-touch order.
func (b *batch) changes() []read.Change {
	out := make([]read.Change, 0, len(b.order))
	for _, id := range b.order {
		p := b.posts[id]
		c := p.change
		c.PostID, c.Version, c.LikeVersion, c.Likes = id, p.Version, p.LikeVersion, p.Likes
		out = append(out, c)
	}
	return out
}
