// Package projector turns events into read-model state: it applies batches through read.Model,
// fills stream gaps from the event store, verifies the read model against a fold of the store, and
// rebuilds the read model beside the live one. It imports no driver and no Kafka client; the Kafka
// consumer in projector/kafka calls Apply per batch.
//
// Kafka is the fast path, the event store the complete one. Two background loops make the read
// model converge to the fold of the store after any fault, without a person running anything:
//
//   - CatchUp knows what is missing from the applied position P that the read model records
//     (read.Positions): every event at or below P is in the read model. Each round reads the store
//     after P in store order, looks up each event's stream version in the read model, applies
//     (idempotently, through Apply) the events that have been missing for the delay, and saves
//     the new P only after that commit. P never passes an event still missing and not yet due;
//     the store makes positions visible in order, so no later commit can land below P. So events Kafka lost (its log deleted, a topic recreated,
//     a group's offsets reset or gone, retention passed) reach the read model within the delay
//     plus a round, and honest traffic costs one store read and one version lookup per event.
//   - AntiEntropy walks the whole store at a bounded rate and compares each post's rows with the
//     fold of its streams, repairing a post that differs in one transaction (read.Repairer); it
//     catches what no position can: rows changed or lost behind the projector's back.
//
// Verify stays the full proof; these make a clean verify the normal state.
package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// ErrPoison matches an error caused by an event that can never be applied, whatever is retried: an
// unknown type, a schema version newer than this binary knows, or malformed data. The Kafka
// consumer dead-letters such an event and moves on.
var ErrPoison = errors.New("poison event")

// ErrStoreUnavailable marks a failure to read the event store while filling a gap: the event is
// fine and must be retried, never parked.
var ErrStoreUnavailable = errors.New("event store unavailable")

// PoisonError names the event that cannot be decoded. errors.Is(err, ErrPoison) matches it and
// errors.Is/As also see the decoding cause.
type PoisonError struct {
	Event write.Event
	Err   error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("poison event %s (%s schema %d, stream %s v%d): %v", e.Event.ID, e.Event.Type, e.Event.Schema, e.Event.Stream, e.Event.Version, e.Err)
}

// Unwrap returns ErrPoison and the decoding cause.
func (e *PoisonError) Unwrap() []error { return []error{ErrPoison, e.Err} }

// Projector applies event batches to a read model, fetching missing predecessors from the store.
type Projector struct {
	model    read.Model
	store    write.EventStore
	maxFills int
}

// Option configures a Projector.
type Option func(*Projector)

// WithMaxGapFills sets how many times one Apply fetches missing events and retries before it gives
// up with an error matching read.ErrGap (default 3). A gap that outlives the fills means the store
// does not hold the predecessor yet; the caller retries later.
func WithMaxGapFills(n int) Option { return func(p *Projector) { p.maxFills = max(n, 0) } }

// New returns a Projector that applies to model and fills gaps from store.
func New(model read.Model, store write.EventStore, opts ...Option) *Projector {
	p := &Projector{model: model, store: store, maxFills: 3}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Apply applies events in one read-model transaction and returns the changes after commit. When
// the model reports a gap (a missing stream predecessor, or a post not created yet), Apply loads
// the missing events from the store, merges them in stream order and retries, at most the
// configured number of times. Errors: a *PoisonError (matching ErrPoison) for the first event that
// cannot be decoded, with nothing applied; read.ErrGap when fills did not close the gap; otherwise
// the model's or the store's error.
func (p *Projector) Apply(ctx context.Context, events []write.Event) ([]read.Change, error) {
	batch := events
	for fill := 0; ; fill++ {
		changes, err := p.model.Apply(ctx, batch)
		if err == nil {
			return changes, nil
		}
		if !errors.Is(err, read.ErrGap) {
			// Decoding is checked only after a failure: the model decodes every event anyway,
			// and decoding twice on the happy path costs throughput.
			if perr := checkDecodable(batch); perr != nil {
				return nil, perr
			}
			return nil, fmt.Errorf("project %d events: %w", len(batch), err)
		}
		if fill >= p.maxFills {
			return nil, fmt.Errorf("project %d events after %d gap fills: %w", len(batch), fill, err)
		}
		if batch, err = p.fillGaps(ctx, batch); err != nil {
			return nil, err
		}
	}
}

func checkDecodable(events []write.Event) error {
	for _, e := range events {
		if _, err := write.Decode(e); err != nil {
			return &PoisonError{Event: e, Err: err}
		}
	}
	return nil
}

// fillGaps returns batch with every event the read model lacks before it: for each stream, the
// stored events after the applied version, and the post stream of every post the model does not
// know yet.
func (p *Projector) fillGaps(ctx context.Context, batch []write.Event) ([]write.Event, error) {
	type key struct {
		stream  string
		version int64
	}
	seen := map[key]bool{}
	var merged []write.Event
	add := func(evs ...write.Event) {
		for _, e := range evs {
			k := key{e.Stream, e.Version}
			if !seen[k] {
				seen[k] = true
				merged = append(merged, e)
			}
		}
	}
	versions := map[string][]int64{} // the versions of each stream in the batch
	posts := map[string]bool{}
	for _, e := range batch {
		versions[e.Stream] = append(versions[e.Stream], e.Version)
		posts[e.PostID] = true
	}
	for id := range posts {
		if _, ok := versions[write.PostStream(id)]; !ok {
			versions[write.PostStream(id)] = nil // only fetched when the model lacks the post
		}
	}
	for stream, vs := range versions {
		applied, err := p.model.StreamVersion(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("fill gap in %s: %w", stream, err)
		}
		if len(vs) == 0 && applied > 0 || len(vs) > 0 && contiguous(vs, applied) {
			continue
		}
		missing, err := p.store.Load(ctx, stream, applied)
		if err != nil {
			return nil, fmt.Errorf("fill gap in %s: %w: %w", stream, ErrStoreUnavailable, err)
		}
		if err := checkDecodable(missing); err != nil {
			return nil, err
		}
		add(missing...)
	}
	add(batch...)
	return inStreamOrder(merged), nil
}

// contiguous reports whether versions, with those up to applied already in the model, leave no
// hole: a batch holding v1 and v3 of a stream lacks v2 even though it starts right after applied.
func contiguous(versions []int64, applied int64) bool {
	vs := slices.Clone(versions)
	slices.Sort(vs)
	next := applied + 1
	for _, v := range vs {
		switch {
		case v < next:
			continue // already applied, or a duplicate within the batch
		case v == next:
			next++
		default:
			return false
		}
	}
	return true
}

// inStreamOrder orders events so that every stream's events are in version order and a post's own
// stream comes before the other streams of that post (a like needs its post created). Store
// positions give exactly that order when every event has one.
func inStreamOrder(evs []write.Event) []write.Event {
	positioned := true
	for _, e := range evs {
		if e.Position <= 0 {
			positioned = false
			break
		}
	}
	if positioned {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Position < evs[j].Position })
		return evs
	}
	var order []string
	groups := map[string][]write.Event{}
	for _, e := range evs {
		if _, ok := groups[e.Stream]; !ok {
			order = append(order, e.Stream)
		}
		groups[e.Stream] = append(groups[e.Stream], e)
	}
	out := make([]write.Event, 0, len(evs))
	emit := func(postStreams bool) {
		for _, s := range order {
			g := groups[s]
			if (s == write.PostStream(g[0].PostID)) != postStreams {
				continue
			}
			sort.SliceStable(g, func(i, j int) bool { return g[i].Version < g[j].Version })
			out = append(out, g...)
		}
	}
	emit(true)
	emit(false)
	return out
}
