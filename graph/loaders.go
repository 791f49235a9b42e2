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
	comments *dataloadgen.Loader[string, []*Comment]
	likedBy  *dataloadgen.Loader[string, bool]
}

type loadersKey struct{}

func newLoaders(reads read.Queries, user string) *loaders {
	// The wait is short because a page's resolvers ask for the whole page at once (see page), so
	// the batch is complete as soon as the first one asks.
	opts := []dataloadgen.Option{dataloadgen.WithWait(time.Millisecond), dataloadgen.WithBatchCapacity(maxPageSize)}
	return &loaders{
		comments: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string][]*Comment, error) {
			got, err := reads.Comments(ctx, ids)
			if err != nil {
				return nil, err
			}
			out := make(map[string][]*Comment, len(ids))
			for _, id := range ids {
				cs := make([]*Comment, 0, len(got[id]))
				for _, c := range got[id] {
					cs = append(cs, commentFromRead(c))
				}
				out[id] = cs
			}
			return out, nil
		}, opts...),
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
		}, opts...),
	}
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
