package graph

import (
	"context"
	"sync"
	"time"

	"github.com/vikstrous/dataloadgen"

	"github.com/postgate/postgate/read"
)

// loaders batch the per-post fields of a page (comments, likedByMe) into one read-model query
// each. They live for one response: one query result, or one subscription event, so a cached
// value never outlives the response it was loaded for.
type loaders struct {
	reads   read.Queries
	likedBy *dataloadgen.Loader[string, bool]

	mu       sync.Mutex
	comments map[commentArgs]*dataloadgen.Loader[string, *CommentConnection]
}

// commentArgs are the arguments of one Post.comments selection: each distinct pair in a response
// has its own loader, since one read-model query answers one pair for many posts.
type commentArgs struct {
	first int
	after string
}

// loaderOptions keep batches short: a page's resolvers ask for the whole page at once (see page),
// so the batch is complete as soon as the first one asks.
var loaderOptions = []dataloadgen.Option{dataloadgen.WithWait(time.Millisecond), dataloadgen.WithBatchCapacity(maxPageSize)}

type loadersKey struct{}

func newLoaders(reads read.Queries, user string) *loaders {
	return &loaders{
		reads:    reads,
		comments: map[commentArgs]*dataloadgen.Loader[string, *CommentConnection]{},
		likedBy: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string]bool, error) {
			got, err := reads.LikedBy(ctx, user, ids)
			if err != nil {
				return nil, err
			}
			out := make(map[string]bool, len(ids))
			for _, id := range ids {
				out[id] = got[id]
			}
			return out, nil
		}, loaderOptions...),
	}
}

// commentPages returns the loader of the comment pages for one pair of arguments, made on first use.
func (l *loaders) commentPages(first int, after string) *dataloadgen.Loader[string, *CommentConnection] {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := commentArgs{first, after}
	if ld := l.comments[key]; ld != nil {
		return ld
	}
	ld := dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string]*CommentConnection, error) {
		got, err := l.reads.CommentPages(ctx, ids, first, after)
		if err != nil {
			return nil, err
		}
		out := make(map[string]*CommentConnection, len(ids))
		for _, id := range ids {
			out[id] = commentConnection(got[id])
		}
		return out, nil
	}, loaderOptions...)
	l.comments[key] = ld
	return ld
}

// lazyLoaders creates a response's loaders on first use: most subscription events never need them,
// and fan-out to many subscribers should not pay for them.
type lazyLoaders struct {
	reads read.Queries
	user  string
	once  sync.Once
	l     *loaders
}

func loadersFrom(ctx context.Context) *loaders {
	z, _ := ctx.Value(loadersKey{}).(*lazyLoaders)
	if z == nil {
		return nil
	}
	z.once.Do(func() { z.l = newLoaders(z.reads, z.user) })
	return z.l
}

// page links the posts of one connection page, so that the first post asking for a batched field
// puts the whole page into a single batch.
type page struct{ ids []string }
