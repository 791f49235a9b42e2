package graph

import (
	"context"
	"sync"
	"time"

	"github.com/postgate/postgate/read"
)

// postCache keeps recently read posts for post(id), the hottest query. It is exact as long as the
// Hub is fed: Publish runs after the read model commits and evicts every post it names. The TTL
// bounds staleness should the Hub not be fed (a gateway without change notifications).
//
// A read that races with a Publish must not put its older result back after the eviction, so
// every fill is tagged with the generation it started in and dropped if a Publish came between.
type postCache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	gen     uint64
	entries map[string]cachedPost
}

type cachedPost struct {
	post read.Post
	ok   bool
	at   time.Time
}

func newPostCache(ttl time.Duration, max int) *postCache {
	return &postCache{ttl: ttl, max: max, entries: map[string]cachedPost{}}
}

// get returns the post from the cache or reads it from reads.
func (c *postCache) get(ctx context.Context, reads read.Queries, id string) (read.Post, bool, error) {
	if c == nil || c.ttl <= 0 {
		return reads.Post(ctx, id)
	}
	now := time.Now()
	c.mu.Lock()
	e, hit := c.entries[id]
	gen := c.gen
	c.mu.Unlock()
	if hit && now.Sub(e.at) < c.ttl {
		return e.post, e.ok, nil
	}
	p, ok, err := reads.Post(ctx, id)
	if err != nil {
		return p, ok, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.entries) >= c.max {
			clear(c.entries) // crude but bounded; a hot post is back after one read
		}
		c.entries[id] = cachedPost{post: p, ok: ok, at: now}
	}
	c.mu.Unlock()
	return p, ok, nil
}

// evict forgets the posts of changes, and invalidates fills in flight.
func (c *postCache) evict(changes []read.Change) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.gen++
	for _, ch := range changes {
		delete(c.entries, ch.PostID)
	}
	c.mu.Unlock()
}
