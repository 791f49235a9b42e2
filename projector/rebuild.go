package projector

import (
	"context"
	"fmt"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// rebuildPage is how many events Rebuild reads and applies per transaction.
const rebuildPage = 1000

// RebuildStats tells what a rebuild did.
type RebuildStats struct {
	Generation int64 // the generation now active
	Replaced   int64 // the generation that was dropped
	Events     int64 // events applied into the new generation
	Position   int64 // store position the new generation had reached at the end
	// Skipped lists the stored events left out because this binary cannot decode them, or
	// because they follow such an event in its stream (or belong to a post whose creation is
	// one), as the live projector leaves them out; verify reports them.
	Skipped []write.Event
}

// Rebuild builds a fresh generation of the read model from the whole event store while the live
// generation keeps serving queries and taking Apply (from this process or another sharing the
// database), then switches atomically and drops the old generation:
//
//  1. fold the store page by page into a new, inactive generation until a page comes back empty;
//  2. activate it: from then on every query and Apply, in every process, uses it;
//  3. catch up once more from where step 1 ended, because the live projector may have applied
//     events to the old generation between the last page and the switch. Apply is idempotent,
//     so events the live projector also delivers later change nothing;
//  4. drop the old generation's rows.
//
// progress, if not nil, is called after every page with the position reached and the store's
// head (which may grow while the rebuild runs). Only one rebuild may run at a time: a second one
// discards the first one's unfinished generation. An event this binary cannot decode is skipped
// with the rest of its stream (see RebuildStats.Skipped) rather than failing the rebuild. Errors
// are the store's or the model's, wrapped; a failure before the switch leaves the live generation
// untouched.
func Rebuild(ctx context.Context, store write.EventStore, model read.Generations, progress func(done, total int64)) (RebuildStats, error) {
	var st RebuildStats
	gen, err := model.NewGeneration(ctx)
	if err != nil {
		return st, fmt.Errorf("rebuild: %w", err)
	}
	st.Generation = gen
	head, err := store.Head(ctx)
	if err != nil {
		return st, fmt.Errorf("rebuild: %w", err)
	}
	brokenStreams, brokenPosts := map[string]bool{}, map[string]bool{}
	usable := func(page []write.Event) []write.Event {
		out := page[:0:0]
		for _, e := range page {
			if brokenStreams[e.Stream] || brokenPosts[e.PostID] {
				st.Skipped = append(st.Skipped, e)
				continue
			}
			if _, err := write.Decode(e); err != nil {
				brokenStreams[e.Stream] = true
				if e.Stream == write.PostStream(e.PostID) && e.Version == 1 {
					// Without its creation the post does not exist, and the live projector parks
					// its likes too (their gap fills hit this event). A later event of the post
					// stream only stops that stream, as it does for the live projector.
					brokenPosts[e.PostID] = true
				}
				st.Skipped = append(st.Skipped, e)
				continue
			}
			out = append(out, e)
		}
		return out
	}
	catchUp := func() error {
		for {
			page, err := store.ReadAll(ctx, st.Position, rebuildPage)
			if err != nil {
				return fmt.Errorf("rebuild: read events after %d: %w", st.Position, err)
			}
			if len(page) == 0 {
				return nil
			}
			apply := usable(page)
			if _, err := model.ApplyTo(ctx, gen, apply); err != nil {
				return fmt.Errorf("rebuild: apply events after %d: %w", st.Position, err)
			}
			st.Events += int64(len(apply))
			st.Position = page[len(page)-1].Position
			if st.Position > head {
				head = st.Position
			}
			if progress != nil {
				progress(st.Position, head)
			}
		}
	}
	if err := catchUp(); err != nil {
		return st, err
	}
	if st.Replaced, err = model.Activate(ctx, gen); err != nil {
		return st, fmt.Errorf("rebuild: %w", err)
	}
	if err := catchUp(); err != nil {
		return st, err
	}
	if err := model.DropGeneration(ctx, st.Replaced); err != nil {
		return st, fmt.Errorf("rebuild: %w", err)
	}
	return st, nil
}
