package graph

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Hub fans the projector's committed changes out to subscriptions. It reads the read model at most
// once per change (and only when someone subscribes to that post), and hands the same resolved
// value to every subscriber. Each subscriber has a bounded buffer: one that falls behind is dropped
// with an error instead of slowing the others or growing memory.
type Hub struct {
	reads   read.Queries
	buffer  int
	logger  *slog.Logger
	metrics *Metrics

	cache *postCache

	reconcile  time.Duration // how often Run re-reads subscribed posts
	reconciled atomic.Int64  // rounds Run has finished (tests wait on it)

	publishMu sync.Mutex // serialises Publish, so every subscriber sees changes in commit order

	mu      sync.Mutex // guards the subscriber sets and the waits
	likes   map[string]map[*subscriber[*LikeCount]]struct{}
	updates map[string]map[*subscriber[*Post]]struct{}
	created map[*subscriber[*Post]]struct{}
	// waits holds, per post, the channel that the next Publish naming that post closes: a
	// post(minVersion:) waiter wakes only for its own post. waiting counts the waiters of every
	// post, at most maxWaiters.
	waits      map[string]*postWait
	waiting    int
	maxWaiters int
	done       bool // set by Close: every subscription has ended and new ones end at once
	// present holds the followed posts known to be in the read model (found by a reconcile, or by a
	// subscription as it started): only those may be taken for deleted when a later read misses
	// them. A post not projected yet (subscribed to right after its creation) is simply absent.
	present map[string]bool
}

// HubOption configures a Hub.
type HubOption func(*Hub)

// WithBuffer sets how many undelivered messages a subscriber may have before it is dropped
// (default 128).
func WithBuffer(n int) HubOption { return func(h *Hub) { h.buffer = max(n, 1) } }

// WithPostCache sets how long post(id) may answer from memory (default 1 s; 0 turns the cache
// off). Every Publish evicts the posts it names, so the TTL only matters when the Hub is not fed.
func WithPostCache(ttl time.Duration) HubOption {
	return func(h *Hub) { h.cache = newPostCache(ttl, 10000) }
}

// WithMaxWaiters bounds the post(minVersion:) requests waiting at once on this Hub (default 1,000);
// beyond it a wait is refused with LIMIT_EXCEEDED at once.
func WithMaxWaiters(n int) HubOption { return func(h *Hub) { h.maxWaiters = max(n, 1) } }

// WithReconcile sets how often Run re-reads the posts that have subscribers (default 2 s).
func WithReconcile(d time.Duration) HubOption {
	return func(h *Hub) { h.reconcile = max(d, time.Millisecond) }
}

// WithHubLogger sets where read failures during fan-out are logged (default: discarded).
func WithHubLogger(l *slog.Logger) HubOption { return func(h *Hub) { h.logger = l } }

// WithHubMetrics sets the metrics that count subscribers and drops.
func WithHubMetrics(m *Metrics) HubOption { return func(h *Hub) { h.metrics = m } }

// NewHub returns a Hub that resolves changed posts from reads.
func NewHub(reads read.Queries, opts ...HubOption) *Hub {
	h := &Hub{
		reads:   reads,
		buffer:  128,
		logger:  slog.New(slog.DiscardHandler),
		likes:   map[string]map[*subscriber[*LikeCount]]struct{}{},
		updates: map[string]map[*subscriber[*Post]]struct{}{},
		created: map[*subscriber[*Post]]struct{}{},
		present: map[string]bool{},
		waits:   map[string]*postWait{},
		cache:   newPostCache(time.Second, 10000),

		maxWaiters: 1000,

		reconcile: 2 * time.Second,
	}
	for _, o := range opts {
		o(h)
	}
	return h
}

// subscriber is one subscription's mailbox. Its fields other than ch are guarded by Hub.mu.
type subscriber[T any] struct {
	ch          chan T
	field       string
	author      string // postCreated's filter
	likeVersion int64  // the last LikeVersion sent (likeCount and postUpdated dedupe by it)
	version     int64  // the last post Version sent (postUpdated dedupes by it and likeVersion)
	closed      bool
	overflow    *atomic.Bool // set when dropped for overflow; read by the response interceptor
}

// Publish delivers committed changes to subscribers, in order. It must be called after the read
// model has committed them (never before: a subscriber re-reads what the change announces). The
// projector calls it; it blocks only for the read-model reads of posts somebody subscribed to.
func (h *Hub) Publish(changes []read.Change) {
	h.publishMu.Lock()
	defer h.publishMu.Unlock()

	h.cache.evict(changes)
	h.mu.Lock()
	for _, c := range changes {
		if w := h.waits[c.PostID]; w != nil {
			close(w.ch)
			w.ch = make(chan struct{})
		}
	}
	h.mu.Unlock()

	// Publish runs on the change follower's goroutines: a read that hangs must not stall every
	// notification of this gateway for longer than this.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range changes {
		span := pushSpan(c)
		if c.LikesChange {
			h.publishLikes(c)
		}
		if c.Deleted {
			h.endLikes(c.PostID) // nothing more will change: like postUpdated, likeCount ends
		}
		h.publishUpdate(ctx, c)
		if c.Created && !c.Deleted {
			h.publishCreated(ctx, c)
		}
		span.End()
	}
}

// Close ends every subscription (clients get "complete", SSE responses finish) and makes new
// ones end at once. A graceful shutdown calls it before waiting for in-flight requests.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	for id, set := range h.likes {
		for s := range set {
			closeLocked(h, s)
		}
		delete(h.likes, id)
	}
	for id, set := range h.updates {
		for s := range set {
			closeLocked(h, s)
		}
		delete(h.updates, id)
	}
	for s := range h.created {
		closeLocked(h, s)
		delete(h.created, s)
	}
}

// Run reconciles until ctx ends: every interval it re-reads the posts that have likeCount or
// postUpdated subscribers and publishes their current state, which subscribers receive only when
// it is newer than what they were sent. Notifications are at most once (a projector killed between
// its commit and its announcement, or a change follower reconnecting, loses some); this bounds how
// long a subscriber can miss the latest count to one interval. It costs one read per subscribed
// post per interval, whatever the number of subscribers.
func (h *Hub) Run(ctx context.Context) error {
	wait := h.reconcile
	for {
		if !retry.Sleep(ctx, wait) {
			return nil
		}
		h.mu.Lock()
		ids := make([]string, 0, len(h.likes)+len(h.updates))
		for id := range h.likes {
			ids = append(ids, id)
		}
		for id := range h.updates {
			if _, dup := h.likes[id]; !dup {
				ids = append(ids, id)
			}
		}
		for id := range h.present {
			_, likes := h.likes[id]
			_, updates := h.updates[id]
			if !likes && !updates {
				delete(h.present, id) // nobody follows it any more
			}
		}
		h.mu.Unlock()
		var changes []read.Change
		for _, id := range ids {
			p, ok, err := h.reads.Post(ctx, id)
			if err != nil {
				if ctx.Err() == nil {
					h.logger.Warn("hub: reconcile", "post", id, "err", err)
				}
				continue
			}
			if !ok {
				h.mu.Lock()
				seen := h.present[id]
				delete(h.present, id)
				h.mu.Unlock()
				if seen {
					changes = append(changes, read.Change{PostID: id, Deleted: true})
				}
				continue
			}
			h.markPresent(id)
			changes = append(changes, read.Change{PostID: id, Version: p.Version, LikeVersion: p.LikeVersion,
				Likes: p.Likes, LikesChange: true})
		}
		if len(changes) > 0 {
			h.Publish(changes)
		}
		h.reconciled.Add(1)
		// One read per subscribed post: with very many of them, rounds space out so that a
		// gateway spends at most about 1,000 reads a second on reconciling.
		wait = max(h.reconcile, time.Duration(len(ids))*time.Millisecond)
	}
}

// baseline records what a new subscriber has already seen (the read model's state when it
// subscribed), so that the first message it gets is a change, not the state it could read.
func baseline[T any](h *Hub, sets map[string]map[*subscriber[T]]struct{}, postID string, ch <-chan T, version, likeVersion int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range sets[postID] {
		if s.ch == ch {
			s.version, s.likeVersion = max(s.version, version), max(s.likeVersion, likeVersion)
		}
	}
}

// resume sends a resuming subscriber (registered with its after) the current state v when it is
// newer than everything it has seen or been sent, in the same critical section as every other
// send to it, so that it can neither repeat a message nor come out of order. newer compares v with
// what the subscriber has; seen records v as sent.
func resume[T any](h *Hub, sets map[string]map[*subscriber[T]]struct{}, postID string, ch <-chan T, v T, newer func(*subscriber[T]) bool, seen func(*subscriber[T])) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := sets[postID]
	for s := range set {
		if s.ch != ch {
			continue
		}
		if newer(s) {
			sendLocked(h, s, v, func() { delete(set, s) })
		}
		seen(s)
	}
	if set != nil && len(set) == 0 {
		delete(sets, postID)
	}
}

// endLikes ends the likeCount subscriptions of a deleted post.
func (h *Hub) endLikes(postID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.likes[postID] {
		closeLocked(h, s)
	}
	delete(h.likes, postID)
}

// markPresent records that a followed post was found in the read model.
func (h *Hub) markPresent(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.present[id] = true
}

// postWait is the wake-up channel of one post's minVersion waiters, and how many there are.
type postWait struct {
	ch chan struct{}
	n  int
}

// errTooManyWaiters refuses a post(minVersion:) wait beyond the Hub's bound.
var errTooManyWaiters = errLimit("too many post(minVersion:) requests are waiting; retry shortly")

// watch registers a minVersion waiter of post id and returns the function that gives the channel
// the next Publish of that post closes (take it before each read, so a Publish in between is not
// missed) and the one that unregisters. Errors: LIMIT_EXCEEDED beyond the Hub's bound.
func (h *Hub) watch(id string) (changed func() <-chan struct{}, release func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiting >= h.maxWaiters {
		return nil, nil, errTooManyWaiters
	}
	w := h.waits[id]
	if w == nil {
		w = &postWait{ch: make(chan struct{})}
		h.waits[id] = w
	}
	w.n++
	h.waiting++
	changed = func() <-chan struct{} {
		h.mu.Lock()
		defer h.mu.Unlock()
		return w.ch
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.waiting--
			if w.n--; w.n == 0 {
				delete(h.waits, id)
			}
		})
	}
	return changed, release, nil
}

func (h *Hub) publishLikes(c read.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.likes[c.PostID]
	if len(subs) == 0 {
		return
	}
	// The change carries the committed counts, so no read is needed; one value per count serves
	// everyone. Every count the batch passed through is sent, in order.
	steps := c.LikeSteps
	if len(steps) == 0 || steps[len(steps)-1].LikeVersion != c.LikeVersion {
		steps = append(steps, read.LikeStep{Likes: c.Likes, LikeVersion: c.LikeVersion})
	}
	values := make([]*LikeCount, len(steps))
	for i, st := range steps {
		values[i] = &LikeCount{PostID: c.PostID, Likes: st.Likes, Version: st.LikeVersion}
	}
	// A burst longer than half a subscriber's buffer is coalesced to its latest counts, so that
	// one hot batch does not get a healthy subscriber dropped. The cut depends only on the buffer
	// size, so every subscriber sees the same sequence.
	if limit := max(1, h.buffer/2); len(values) > limit {
		values = values[len(values)-limit:]
	}
	for s := range subs {
		for _, v := range values {
			if v.Version <= s.likeVersion {
				continue // already sent (a redelivered or reordered notification)
			}
			s.likeVersion = v.Version
			sendLocked(h, s, v, func() { delete(subs, s) })
		}
	}
	if len(subs) == 0 {
		delete(h.likes, c.PostID)
	}
}

func (h *Hub) publishUpdate(ctx context.Context, c read.Change) {
	h.mu.Lock()
	n := len(h.updates[c.PostID])
	h.mu.Unlock()
	if n == 0 {
		return
	}
	var v *Post
	if !c.Deleted {
		var err error
		if v, err = h.resolve(ctx, c.PostID); err != nil {
			h.logger.Error("hub: resolve changed post", "post", c.PostID, "err", err)
			return
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.updates[c.PostID]
	for s := range subs {
		if v == nil { // deleted (now or already, when the read found nothing): the stream ends
			closeLocked(h, s)
			delete(subs, s)
			continue
		}
		if v.Version <= s.version && v.likeVersion <= s.likeVersion {
			continue // this state was sent already (a redelivered notification or a reconcile)
		}
		s.version, s.likeVersion = max(s.version, v.Version), max(s.likeVersion, v.likeVersion)
		sendLocked(h, s, v, func() { delete(subs, s) })
	}
	if len(subs) == 0 {
		delete(h.updates, c.PostID)
	}
}

func (h *Hub) publishCreated(ctx context.Context, c read.Change) {
	h.mu.Lock()
	n := len(h.created)
	h.mu.Unlock()
	if n == 0 {
		return
	}
	v, err := h.resolve(ctx, c.PostID)
	if err != nil || v == nil {
		if err != nil {
			h.logger.Error("hub: resolve created post", "post", c.PostID, "err", err)
		}
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.created {
		if s.author != "" && s.author != v.Author {
			continue
		}
		sendLocked(h, s, v, func() { delete(h.created, s) })
	}
}

// resolve reads a post and its default page of comments once for all subscribers; nil when it is
// gone. Other comment arguments are read per subscriber, through its response's loaders.
func (h *Hub) resolve(ctx context.Context, id string) (*Post, error) {
	p, ok, err := h.reads.Post(ctx, id)
	if err != nil || !ok {
		return nil, err
	}
	out := postFromRead(p)
	cs, err := h.reads.CommentPages(ctx, []string{id}, defaultCommentPage, "")
	if err != nil {
		return nil, err
	}
	out.firstComments = commentConnection(cs[id])
	return out, nil
}

// sendLocked hands v to s without ever blocking; a full buffer drops s (remove unlinks it).
func sendLocked[T any](h *Hub, s *subscriber[T], v T, remove func()) {
	if s.closed {
		return
	}
	select {
	case s.ch <- v:
	default:
		if s.overflow != nil {
			s.overflow.Store(true)
		}
		h.metrics.droppedOne()
		h.logger.Warn("hub: subscriber dropped: buffer full", "field", s.field, "buffer", h.buffer)
		closeLocked(h, s)
		remove()
	}
}

func closeLocked[T any](h *Hub, s *subscriber[T]) {
	if !s.closed {
		s.closed = true
		close(s.ch)
		h.metrics.subscribed(s.field, -1)
	}
}

// SubscribeLikes registers a likeCount subscription until ctx ends.
func (h *Hub) SubscribeLikes(ctx context.Context, postID string) <-chan *LikeCount {
	return subscribePost(h, ctx, h.likes, postID, "likeCount", 0, 0)
}

// SubscribeUpdates registers a postUpdated subscription until ctx ends or the post is deleted.
func (h *Hub) SubscribeUpdates(ctx context.Context, postID string) <-chan *Post {
	return subscribePost(h, ctx, h.updates, postID, "postUpdated", 0, 0)
}

// subscribePost registers a subscription to one post in sets until ctx ends. version and
// likeVersion are what the subscriber has seen already (a resuming client's after): nothing at or
// below them is sent.
func subscribePost[T any](h *Hub, ctx context.Context, sets map[string]map[*subscriber[T]]struct{}, postID, field string, version, likeVersion int64) <-chan T {
	s := &subscriber[T]{ch: make(chan T, h.buffer), field: field, overflow: overflowFlag(ctx), version: version, likeVersion: likeVersion}
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		close(s.ch)
		return s.ch
	}
	set := sets[postID]
	if set == nil {
		set = map[*subscriber[T]]struct{}{}
		sets[postID] = set
	}
	set[s] = struct{}{}
	h.metrics.subscribed(s.field, 1)
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if set := sets[postID]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(sets, postID)
			}
		}
		closeLocked(h, s)
	})
	return s.ch
}

// SubscribeCreated registers a postCreated subscription (of one author, or all when author is "")
// until ctx ends.
func (h *Hub) SubscribeCreated(ctx context.Context, author string) <-chan *Post {
	s := &subscriber[*Post]{ch: make(chan *Post, h.buffer), field: "postCreated", author: author, overflow: overflowFlag(ctx)}
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		close(s.ch)
		return s.ch
	}
	h.created[s] = struct{}{}
	h.metrics.subscribed(s.field, 1)
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.created, s)
		closeLocked(h, s)
	})
	return s.ch
}

// endUpdates ends the postUpdated subscription whose channel is ch early (used when the post turns out not to exist).
func (h *Hub) endUpdates(postID string, ch <-chan *Post) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.updates[postID]
	for s := range set {
		if s.ch == ch {
			delete(set, s)
			closeLocked(h, s)
		}
	}
	if len(set) == 0 {
		delete(h.updates, postID)
	}
}

// waitVersion waits until the read model holds version min of post id's stream, ctx ends, or limit
// passes (then it returns nil: the caller resolves what there is). It wakes on every Publish of that
// post and, since change notifications are at most once, also polls twice a second.
// Errors: LIMIT_EXCEEDED when the Hub has as many waiters as it allows.
func waitVersion(ctx context.Context, reads read.Queries, hub *Hub, id string, min int64, limit time.Duration) error {
	stream := write.PostStream(id)
	changed := func() <-chan struct{} { return nil }
	if hub != nil {
		c, release, err := hub.watch(id)
		if err != nil {
			return err
		}
		defer release()
		changed = c
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	// The poll only makes up for a lost notification; 1,000 waiters cost 2,000 reads a second.
	const poll = 500 * time.Millisecond
	for {
		wake := changed() // taken before reading, so a Publish in between is not missed
		v, err := reads.StreamVersion(ctx, stream)
		if err != nil {
			return err
		}
		if v >= min {
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-wake:
		case <-t.C:
		case <-deadline.C:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}
