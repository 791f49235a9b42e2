package write

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Handler runs commands: load the aggregate, let it decide, append what it decided. Nothing else
// happens here; publishing is a decorator around the EventStore and metrics wrap the Handler.
type Handler struct {
	store         EventStore
	now           func() time.Time
	newID         func() string
	retries       int
	snapshotEvery int64
	postLocks     [postLockStripes]chan struct{}
	// posts caches recently used posts. A cached post is only a starting point, like a snapshot:
	// every load still reads the events stored after it, so a change made by another process (a
	// deletion, say) is always seen. It saves the snapshot read and its decoding on hot posts.
	posts *lru.Cache[string, cachedPost]
	likes *lru.Cache[string, Like] // by like stream
}

// Option configures a Handler.
type Option func(*Handler)

// WithClock sets the clock that stamps events (default time.Now in UTC).
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// WithIDs sets the generator of event, post and comment ids (default UUIDv7).
func WithIDs(newID func() string) Option { return func(h *Handler) { h.newID = newID } }

// WithSnapshotEvery sets after how many new events a post's snapshot is refreshed (default 64).
func WithSnapshotEvery(n int64) Option { return func(h *Handler) { h.snapshotEvery = n } }

// WithRetries sets how often a commutative command is retried on a version conflict (default 100).
func WithRetries(n int) Option { return func(h *Handler) { h.retries = n } }

// NewHandler returns a Handler that keeps its events in store.
func NewHandler(store EventStore, opts ...Option) *Handler {
	h := &Handler{
		store:         store,
		now:           func() time.Time { return time.Now().UTC() },
		newID:         func() string { return uuid.Must(uuid.NewV7()).String() },
		retries:       100,
		snapshotEvery: 64,
	}
	for _, o := range opts {
		o(h)
	}
	h.posts, _ = lru.New[string, cachedPost](4096)
	h.likes, _ = lru.New[string, Like](65536)
	for i := range h.postLocks {
		h.postLocks[i] = make(chan struct{}, 1)
	}
	return h
}

// clientMutationNS namespaces the post ids derived from (user, clientMutationId).
var clientMutationNS = uuid.MustParse("6f1c1c8e-5a0e-4b5e-9a51-7d2f9b1f0c11")

// CreatePost creates a post by actor. With a clientMutationID, the post id is derived from actor and
// that id, so a retried request collides on the store's unique key and gets the first post back.
// Errors: ErrInvalid, ErrNotFound (the first post was deleted since).
func (h *Handler) CreatePost(ctx context.Context, actor, message, clientMutationID string) (Post, error) {
	if err := checkActor(actor); err != nil {
		return Post{}, err
	}
	id := h.newID()
	if clientMutationID != "" {
		id = uuid.NewSHA1(clientMutationNS, []byte(actor+"\x00"+clientMutationID)).String()
	}
	p := Post{ID: id}
	decided, err := p.Create(actor, message, clientMutationID)
	if err != nil {
		return Post{}, err
	}
	_, err = h.appendPost(ctx, &p, 0, actor, decided)
	if errors.Is(err, ErrConflict) && clientMutationID != "" {
		first, _, lerr := h.loadPost(ctx, id)
		if lerr != nil {
			return Post{}, lerr
		}
		if !first.Exists() {
			return Post{}, Errorf(KindNotFound, "post %s not found", id)
		}
		return first, nil
	}
	if err != nil {
		return Post{}, err
	}
	return p, nil
}

// EditPost replaces the message of post id. With expected, the post must be at that version, or the
// result is ErrConflict; without, a concurrent change is retried. Errors: ErrNotFound, ErrForbidden,
// ErrInvalid, ErrConflict.
func (h *Handler) EditPost(ctx context.Context, actor, id, message string, expected *int64) (Post, error) {
	if err := checkActor(actor); err != nil {
		return Post{}, err
	}
	var out Post
	err := h.onPost(ctx, id, expected == nil, func() error {
		p, snap, err := h.loadPost(ctx, id)
		if err != nil {
			return err
		}
		// Who may edit and what is valid come first: a version is only told to the author.
		decided, err := p.Edit(actor, message)
		if err != nil {
			return err
		}
		if expected != nil && p.Version != *expected {
			return Errorf(KindConflict, "post %s is at version %d, not %d", id, p.Version, *expected)
		}
		if _, err := h.appendPost(ctx, &p, snap, actor, decided); err != nil {
			return err
		}
		out = p
		return nil
	})
	return out, err
}

// DeletePost deletes post id. Errors: ErrNotFound, ErrForbidden.
func (h *Handler) DeletePost(ctx context.Context, actor, id string) error {
	if err := checkActor(actor); err != nil {
		return err
	}
	return h.onPost(ctx, id, true, func() error {
		p, snap, err := h.loadPost(ctx, id)
		if err != nil {
			return err
		}
		decided, err := p.Delete(actor)
		if err != nil {
			return err
		}
		_, err = h.appendPost(ctx, &p, snap, actor, decided)
		return err
	})
}

// LikeResult is the outcome of a like or unlike.
type LikeResult struct {
	Post    Post  // the post as the write side knows it (its likes live in the read model)
	Liked   bool  // whether actor likes the post now
	Changed bool  // false when the command was a repeat and appended nothing
	Version int64 // version of the actor's like stream after the command
}

// LikePost records actor's like of post id; a repeat is a no-op. Errors: ErrNotFound.
func (h *Handler) LikePost(ctx context.Context, actor, id string) (LikeResult, error) {
	return h.like(ctx, actor, id, (*Like).Like)
}

// UnlikePost withdraws actor's like of post id; a repeat is a no-op. Errors: ErrNotFound.
func (h *Handler) UnlikePost(ctx context.Context, actor, id string) (LikeResult, error) {
	return h.like(ctx, actor, id, (*Like).Unlike)
}

func (h *Handler) like(ctx context.Context, actor, id string, decide func(*Like, *Post) ([]Payload, error)) (LikeResult, error) {
	if err := checkActor(actor); err != nil {
		return LikeResult{}, err
	}
	var out LikeResult
	err := h.retry(ctx, true, func() error {
		p, _, err := h.loadPost(ctx, id)
		if err != nil {
			return err
		}
		stream := LikeStream(id, actor)
		// Like the post cache, the like cache is only a starting point: the events stored after
		// it are always read, so a user who toggles a like many times costs one short read.
		l, ok := h.likes.Get(stream)
		if !ok {
			l = Like{PostID: id, User: actor}
		}
		evs, err := h.store.Load(ctx, stream, l.Version)
		if err != nil {
			return fmt.Errorf("load %s: %w", stream, err)
		}
		for _, e := range evs {
			if err := l.Apply(e); err != nil {
				return err
			}
		}
		h.likes.Add(stream, l)
		decided, err := decide(&l, &p)
		if err != nil {
			return err
		}
		out = LikeResult{Post: p, Liked: l.Liked, Version: l.Version}
		if len(decided) == 0 {
			return nil
		}
		stored, err := h.append(ctx, stream, id, l.Version, actor, decided)
		if err != nil {
			return err
		}
		for _, e := range stored {
			if err := l.Apply(e); err != nil {
				return err
			}
		}
		h.likes.Add(stream, l)
		out.Liked, out.Changed, out.Version = l.Liked, true, l.Version
		return nil
	})
	return out, err
}

// AddComment adds a comment by actor to post postID. Errors: ErrNotFound, ErrInvalid.
func (h *Handler) AddComment(ctx context.Context, actor, postID, text string) (Post, Comment, error) {
	if err := checkActor(actor); err != nil {
		return Post{}, Comment{}, err
	}
	commentID := h.newID() // chosen once, so a retry after a conflict cannot add it twice
	return h.changeComment(ctx, actor, postID, commentID, func(p *Post) ([]Payload, error) {
		return p.AddComment(actor, commentID, text)
	})
}

// EditComment replaces the text of a comment. Errors: ErrNotFound, ErrForbidden, ErrInvalid.
func (h *Handler) EditComment(ctx context.Context, actor, postID, commentID, text string) (Post, Comment, error) {
	if err := checkActor(actor); err != nil {
		return Post{}, Comment{}, err
	}
	return h.changeComment(ctx, actor, postID, commentID, func(p *Post) ([]Payload, error) {
		return p.EditComment(actor, commentID, text)
	})
}

// RemoveComment removes a comment. Errors: ErrNotFound, ErrForbidden.
func (h *Handler) RemoveComment(ctx context.Context, actor, postID, commentID string) (Post, error) {
	if err := checkActor(actor); err != nil {
		return Post{}, err
	}
	p, _, err := h.changeComment(ctx, actor, postID, commentID, func(p *Post) ([]Payload, error) {
		return p.RemoveComment(actor, commentID)
	})
	return p, err
}

func (h *Handler) changeComment(ctx context.Context, actor, postID, commentID string, decide func(*Post) ([]Payload, error)) (Post, Comment, error) {
	var out Post
	var c Comment
	err := h.onPost(ctx, postID, true, func() error {
		p, snap, err := h.loadPost(ctx, postID)
		if err != nil {
			return err
		}
		before, _ := p.Comment(commentID)
		decided, err := decide(&p)
		if err != nil {
			return err
		}
		if _, err := h.appendPost(ctx, &p, snap, actor, decided); err != nil {
			return err
		}
		out = p
		if after, ok := p.Comment(commentID); ok {
			c = after
		} else {
			c = before
		}
		return nil
	})
	return out, c, err
}

// Post returns the write side's current state of post id (also when deleted: check Exists).
func (h *Handler) Post(ctx context.Context, id string) (Post, error) {
	p, _, err := h.loadPost(ctx, id)
	return p, err
}

// loadPost folds the post's stream, starting from its snapshot when there is a usable one. It returns
// the version of the snapshot it started from, so that appendPost knows when to refresh it.
func (h *Handler) loadPost(ctx context.Context, id string) (Post, int64, error) {
	if !wellFormedID(id) {
		return Post{ID: id}, 0, nil
	}
	stream := PostStream(id)
	p, from, err := h.startPost(ctx, id)
	if err != nil {
		return Post{}, 0, err
	}
	evs, err := h.store.Load(ctx, stream, p.Version)
	if err != nil {
		return Post{}, 0, fmt.Errorf("load %s: %w", stream, err)
	}
	for _, e := range evs {
		if err := p.Apply(e); err != nil {
			return Post{}, 0, err
		}
	}
	h.remember(p, from)
	return p, from, nil
}

// cachedPost is what the cache keeps: the post and the version of its latest stored snapshot.
type cachedPost struct {
	post       Post
	snapshotAt int64
}

func (h *Handler) remember(p Post, snapshotAt int64) {
	if p.Version > 0 {
		p.Comments = append([]Comment(nil), p.Comments...) // callers may keep and change theirs
		h.posts.Add(p.ID, cachedPost{post: p, snapshotAt: snapshotAt})
	}
}

// startPost returns the state to fold a post's newer events onto: the cached post, else the
// snapshot, else an empty post. from is the version of the stored snapshot it descends from.
func (h *Handler) startPost(ctx context.Context, id string) (p Post, from int64, err error) {
	if c, ok := h.posts.Get(id); ok {
		p = c.post
		p.Comments = append([]Comment(nil), c.post.Comments...) // the cached slice stays untouched
		return p, c.snapshotAt, nil
	}
	stream := PostStream(id)
	p = Post{ID: id}
	snap, ok, err := h.store.LoadSnapshot(ctx, stream)
	if err != nil {
		return Post{}, 0, fmt.Errorf("load snapshot of %s: %w", stream, err)
	}
	if ok && snap.Schema == PostSnapshotSchema {
		var s Post
		if json.Unmarshal(snap.State, &s) == nil && s.Version == snap.Version && s.ID == id {
			p = s
		}
	}
	return p, p.Version, nil
}

// appendPost appends decided to the post's stream at p's version, folds the stored events into p,
// and refreshes the snapshot once the stream has grown far enough past the last one.
func (h *Handler) appendPost(ctx context.Context, p *Post, snapshotAt int64, actor string, decided []Payload) ([]Event, error) {
	if len(decided) == 0 {
		return nil, nil
	}
	stored, err := h.append(ctx, PostStream(p.ID), p.ID, p.Version, actor, decided)
	if err != nil {
		return nil, err
	}
	for _, e := range stored {
		if err := p.Apply(e); err != nil {
			return nil, err
		}
	}
	if p.Version-snapshotAt >= h.snapshotEvery {
		// A failed snapshot only costs time on the next load; the command has succeeded.
		if state, err := json.Marshal(p); err == nil {
			if h.store.SaveSnapshot(ctx, Snapshot{Stream: PostStream(p.ID), Version: p.Version, Schema: PostSnapshotSchema, State: state}) == nil {
				snapshotAt = p.Version
			}
		}
	}
	h.remember(*p, snapshotAt)
	return stored, nil
}

func (h *Handler) append(ctx context.Context, stream, postID string, expected int64, actor string, decided []Payload) ([]Event, error) {
	now := h.now().UTC()
	evs := make([]Event, 0, len(decided))
	for _, d := range decided {
		e, err := NewEvent(h.newID(), postID, actor, now, d)
		if err != nil {
			return nil, err
		}
		evs = append(evs, e)
	}
	stored, err := h.store.Append(ctx, stream, expected, evs)
	if errors.Is(err, ErrConflict) {
		// The store's message names its streams; the user needs only what happened.
		return nil, Errorf(KindConflict, "post %s was changed at the same time; try again", postID)
	}
	if err != nil {
		return nil, fmt.Errorf("append to %s: %w", stream, err)
	}
	return stored, nil
}

// postLocks serialise, within this process, the commands on one post stream (striped by post id,
// so memory stays bounded). A crowd commenting on one post then queues here instead of colliding
// at the store and retrying: with n writers, retries cost O(n²) appends and lose under load.
// Other processes can still conflict; retry handles those.
const postLockStripes = 256

func (h *Handler) onPost(ctx context.Context, postID string, commutes bool, fn func() error) error {
	stripe := h.postLocks[fnv32(postID)%postLockStripes]
	// The stripe is held for one attempt at a time, never across a retry's wait: a post that
	// keeps losing to another process must not hold up the posts that share its stripe.
	return h.retry(ctx, commutes, func() error {
		select {
		case stripe <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-stripe }()
		return fn()
	})
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// retry runs fn again while it fails with a version conflict, when the command commutes with
// concurrent ones (the conflict means only "someone else got there first; decide again"). Retries
// wait a random time that grows with each attempt (up to 20 ms), so that a crowd of writers on one
// post spreads out instead of colliding again in lockstep.
func (h *Handler) retry(ctx context.Context, commutes bool, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !commutes || !errors.Is(err, ErrConflict) || attempt >= h.retries {
			return err
		}
		ceiling := min(time.Millisecond<<min(attempt, 5), 20*time.Millisecond)
		t := time.NewTimer(rand.N(ceiling) + 1)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func checkActor(actor string) error {
	if actor == "" {
		return Errorf(KindForbidden, "an authenticated user is required")
	}
	return CheckUser(actor)
}

// CheckUser tells whether name can be a user: at most MaxUserLen characters of printable text
// without "/", since user names are part of like stream names. Errors: ErrInvalid.
func CheckUser(name string) error {
	if name == "" || !utf8.ValidString(name) {
		return Errorf(KindInvalid, "a user name must be non-empty UTF-8")
	}
	if utf8.RuneCountInString(name) > MaxUserLen {
		return Errorf(KindInvalid, "user names are at most %d characters long", MaxUserLen)
	}
	for _, r := range name {
		if r == '/' || !unicode.IsPrint(r) {
			return Errorf(KindInvalid, "user names may not contain %q", r)
		}
	}
	return nil
}

// maxIDLen bounds post and comment ids; the ids this package makes are 36 characters long.
const maxIDLen = 64

// wellFormedID tells whether id can name a post: ids are part of stream names, so one with "/"
// could name another stream. A malformed id names no post (NOT_FOUND), without a store read.
func wellFormedID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for _, r := range id {
		if r == '/' || !unicode.IsPrint(r) || r == ' ' {
			return false
		}
	}
	return true
}
