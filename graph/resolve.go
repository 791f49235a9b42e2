package graph

import (
	"context"
	"fmt"
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Page sizes of posts.
const (
	defaultPageSize = 20
	maxPageSize     = 100
	// defaultCommentPage is Post.comments' default first, as the schema declares it.
	defaultCommentPage = 20
)

// MinVersionWait bounds how long post(minVersion:) waits for the read model to catch up.
const MinVersionWait = 5 * time.Second

// postAfterCommand builds a mutation's Post from the write side's state, which already includes the
// command's effect; only the like count, which the write side does not keep, comes from the read model.
func (r *Resolver) postAfterCommand(ctx context.Context, p write.Post) (*Post, error) {
	likes, err := r.likesOf(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	return postFromWrite(p, likes), nil
}

// postAfterLike builds the Post of a like or unlike, with a like count that includes the command's
// effect even when the projector has not applied it yet. A user's like stream alternates like and
// unlike (repeats append nothing), so the read model counts this user's like exactly when the
// version of the stream it applied is odd; the difference to res.Liked is the correction.
func (r *Resolver) postAfterLike(ctx context.Context, user string, res write.LikeResult) (*Post, error) {
	stream := write.LikeStream(res.Post.ID, user)
	var likes, applied int64
	for attempt := 0; ; attempt++ {
		before, err := r.Reads.StreamVersion(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("like stream version: %w", err)
		}
		if likes, err = r.likesOf(ctx, res.Post.ID); err != nil {
			return nil, err
		}
		after, err := r.Reads.StreamVersion(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("like stream version: %w", err)
		}
		// Equal versions around the count mean the count saw exactly that state of this user's like.
		if applied = after; before == after || attempt == 3 {
			break
		}
	}
	if applied < res.Version {
		counted := applied%2 == 1
		switch {
		case res.Liked && !counted:
			likes++
		case !res.Liked && counted:
			likes--
		}
	}
	out := postFromWrite(res.Post, max(likes, 0))
	liked := res.Liked
	out.likedByMe = &liked
	return out, nil
}

func (r *Resolver) likesOf(ctx context.Context, id string) (int64, error) {
	p, ok, err := r.Reads.Post(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("read post %s: %w", id, err)
	}
	if !ok {
		return 0, nil // not projected yet: nobody's like of it is counted either
	}
	return p.Likes, nil
}

func (r *Resolver) post(ctx context.Context, id string, minVersion *int64) (*Post, error) {
	if minVersion != nil && *minVersion > 0 {
		if err := r.waitForVersion(ctx, id, *minVersion); err != nil {
			return nil, fmt.Errorf("wait for post %s version %d: %w", id, *minVersion, err)
		}
	}
	p, ok, err := r.Changes.cache.get(ctx, r.Reads, id)
	if err == nil && minVersion != nil && (!ok || p.Version < *minVersion) {
		// The cache may lag a Publish still on its way (or hold the post's earlier absence);
		// the wait above read the model itself.
		p, ok, err = r.Reads.Post(ctx, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read post %s: %w", id, err)
	}
	if !ok {
		return nil, nil
	}
	return postFromRead(p), nil
}

// waitForVersion waits (at most MinVersionWait) until the read model holds version min of post
// id, but only when there is something to wait for: when the read model is behind, the event store
// decides, and a post it does not hold (unknown, or deleted) or a version it has not reached yet
// answers at once instead of holding a waiter for the whole bound.
func (r *Resolver) waitForVersion(ctx context.Context, id string, min int64) error {
	if p, ok, err := r.Changes.cache.get(ctx, r.Reads, id); err != nil || (ok && p.Version >= min) {
		return err // the cache is evicted by every change notification, so it is never ahead
	}
	p, err := r.Commands.Post(ctx, id)
	if err != nil {
		return err
	}
	if p.Version < min {
		return nil // that version does not exist (yet, or ever): waiting cannot bring it
	}
	return waitVersion(ctx, r.Reads, r.Changes, id, min, MinVersionWait)
}

func (r *Resolver) posts(ctx context.Context, first *int64, after, author *string, minLikes *int64, withComments *bool, orderBy *PostOrder) (*PostConnection, error) {
	f := read.PostFilter{First: defaultPageSize, Author: deref(author), After: deref(after)}
	if first != nil {
		if *first < 1 || *first > maxPageSize {
			return nil, errBadInput("first must be between 1 and %d", maxPageSize)
		}
		f.First = int(*first)
	}
	if minLikes != nil {
		if *minLikes < 0 {
			return nil, errBadInput("minLikes must not be negative")
		}
		f.MinLikes = *minLikes
	}
	if withComments != nil {
		f.WithComments = *withComments
	}
	if orderBy != nil {
		switch *orderBy {
		case PostOrderOldest:
			f.Order = read.Oldest
		case PostOrderMostLiked:
			f.Order = read.MostLiked
		default:
			f.Order = read.Newest
		}
	}
	pg, err := r.Reads.Posts(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("read posts: %w", err)
	}
	batch := &page{ids: make([]string, len(pg.Posts))}
	conn := &PostConnection{Edges: make([]*PostEdge, len(pg.Posts)), PageInfo: &PageInfo{HasNextPage: pg.HasNext}}
	for i, p := range pg.Posts {
		batch.ids[i] = p.ID
		node := postFromRead(p)
		node.page = batch
		conn.Edges[i] = &PostEdge{Cursor: pg.Cursors[i], Node: node}
	}
	if n := len(pg.Cursors); n > 0 {
		conn.PageInfo.EndCursor = &pg.Cursors[n-1]
	}
	return conn, nil
}

func (r *Resolver) likedByMe(ctx context.Context, p *Post) (bool, error) {
	if p.likedByMe != nil {
		return *p.likedByMe, nil
	}
	user := viewer(ctx)
	if user == "" {
		return false, nil
	}
	l := loadersFrom(ctx)
	if l == nil {
		got, err := r.Reads.LikedBy(ctx, user, []string{p.ID})
		return got[p.ID], err
	}
	if p.page != nil {
		l.likedBy.LoadAllThunk(ctx, p.page.ids) // the whole page in one batch
	}
	return l.likedBy.Load(ctx, p.ID)
}

// comments resolves Post.comments: from the post's own state when it carries it (a mutation's
// answer, a postUpdated message with the default arguments), else through the response's loader
// of these arguments, the whole connection page of posts in one batch.
func (r *Resolver) comments(ctx context.Context, p *Post, first *int64, after *string) (*CommentConnection, error) {
	n := defaultCommentPage
	if first != nil {
		if *first < 1 || *first > read.MaxCommentPage {
			return nil, errBadInput("first must be between 1 and %d", read.MaxCommentPage)
		}
		n = int(*first)
	}
	cursor := deref(after)
	if p.allComments != nil {
		pg, err := read.PageComments(p.allComments, n, cursor)
		if err != nil {
			return nil, err
		}
		return commentConnection(pg), nil
	}
	if p.firstComments != nil && n == defaultCommentPage && cursor == "" {
		return p.firstComments, nil
	}
	l := loadersFrom(ctx)
	if l == nil {
		got, err := r.Reads.CommentPages(ctx, []string{p.ID}, n, cursor)
		if err != nil {
			return nil, fmt.Errorf("read comments of %s: %w", p.ID, err)
		}
		return commentConnection(got[p.ID]), nil
	}
	ld := l.commentPages(n, cursor)
	if p.page != nil {
		ld.LoadAllThunk(ctx, p.page.ids) // the whole page in one batch
	}
	conn, err := ld.Load(ctx, p.ID)
	if err != nil {
		return nil, fmt.Errorf("read comments of %s: %w", p.ID, err)
	}
	return conn, nil
}

// subscribeLikes registers first and checks the post afterwards, so that no change committed in
// between is missed. Without after, what the client can read now is not a change: only what comes
// after it is sent. With after (the last LikeCount.version the client saw), the current count is
// sent first when it is newer.
func (r *Resolver) subscribeLikes(ctx context.Context, postID string, after *int64) (<-chan *LikeCount, error) {
	sctx, cancel := context.WithCancel(ctx)
	ch := subscribePost(r.Changes, sctx, r.Changes.likes, postID, "likeCount", 0, max(deref(after), 0))
	p, err := r.mustExist(ctx, postID)
	if err != nil {
		cancel()
		return nil, err
	}
	if after == nil {
		baseline(r.Changes, r.Changes.likes, postID, ch, p.Version, p.LikeVersion)
	} else if p.LikeVersion > 0 {
		v := &LikeCount{PostID: postID, Likes: p.Likes, Version: p.LikeVersion}
		resume(r.Changes, r.Changes.likes, postID, ch, v,
			func(s *subscriber[*LikeCount]) bool { return v.Version > s.likeVersion },
			func(s *subscriber[*LikeCount]) { s.likeVersion = max(s.likeVersion, v.Version) })
	}
	context.AfterFunc(ctx, cancel)
	return ch, nil
}

// subscribeUpdates is subscribeLikes for postUpdated: with after (the last Post.version the client
// saw), the current post is sent first when its version is newer.
func (r *Resolver) subscribeUpdates(ctx context.Context, postID string, after *int64) (<-chan *Post, error) {
	sctx, cancel := context.WithCancel(ctx)
	ch := subscribePost(r.Changes, sctx, r.Changes.updates, postID, "postUpdated", max(deref(after), 0), 0)
	p, err := r.mustExist(ctx, postID)
	if err != nil {
		cancel()
		return nil, err
	}
	if after == nil || p.Version <= *after {
		baseline(r.Changes, r.Changes.updates, postID, ch, p.Version, p.LikeVersion)
	} else {
		v, err := r.Changes.resolve(ctx, postID)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("read post %s: %w", postID, err)
		}
		if v != nil {
			resume(r.Changes, r.Changes.updates, postID, ch, v,
				func(s *subscriber[*Post]) bool { return v.Version > s.version },
				func(s *subscriber[*Post]) {
					s.version, s.likeVersion = max(s.version, v.Version), max(s.likeVersion, v.likeVersion)
				})
		}
	}
	context.AfterFunc(ctx, cancel)
	return ch, nil
}

// mustExist fails with NOT_FOUND unless post id is live. A post the read model does not hold yet
// may just have been created (a client that creates a post and subscribes to it at once races the
// projector), so on a miss the write side decides: only an unknown or deleted post is NOT_FOUND.
// It returns the read model's post, zero when the read model does not hold it yet.
func (r *Resolver) mustExist(ctx context.Context, id string) (read.Post, error) {
	rp, ok, err := r.Reads.Post(ctx, id)
	if err != nil {
		return read.Post{}, fmt.Errorf("read post %s: %w", id, err)
	}
	if ok {
		// Now known to be in the read model: if a later reconcile misses it, it was deleted.
		r.Changes.markPresent(id)
		return rp, nil
	}
	p, err := r.Commands.Post(ctx, id)
	if err != nil {
		return read.Post{}, fmt.Errorf("load post %s: %w", id, err)
	}
	if !p.Exists() {
		return read.Post{}, errNotFound("post %s not found", id)
	}
	return read.Post{}, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
