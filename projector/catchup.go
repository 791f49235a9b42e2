package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// ErrNoPositions is returned by NewCatchUp for a read model that cannot record a position.
var ErrNoPositions = errors.New("read model records no applied position")

// CatchUp completes the read model from the event store, behind the Kafka consumer: whatever Kafka
// cannot deliver (its log lost or emptied, a topic recreated, a group's offsets reset past unread
// events, retention passed) is read from the store, in store order, and applied through the same
// idempotent Projector.Apply.
//
// How it knows what is missing: the read model records the applied position P (read.Positions),
// the store position up to which every event is known to be in the read model. Each round reads
// the events after P (write.EventStore.ReadAll, position order) and compares each event's stream
// version with the one the read model has applied (read.Queries.StreamVersion). An event already
// applied costs nothing more. An event not applied yet is Kafka's to deliver for the delay
// (counted from the earlier of its time and when a round first found it missing); after that it
// is applied from the store (with its stream's predecessors, which Apply fills), and P moves past
// it. A round never moves P past an event that is missing and not yet due, and positions become
// visible in order (write.EventStore.ReadAll: a concurrent writer cannot commit below P later),
// so nothing is ever skipped, as write/kafka's relay never moves its checkpoint past an event it
// has not published (PITFALLS 2). P is saved only after the transaction
// that applied everything up to it has committed, so a crash in between repeats idempotent work
// and never skips. P lives in the read model: a read model made anew starts from 0 and is completed
// from the whole store. Kafka's duplicates of what catch-up applied change nothing.
//
// A stored event this binary cannot decode is skipped, with what follows it in its stream, as the
// live projector parks it; verify reports it.
//
// A CatchUp is a prometheus.Collector.
type CatchUp struct {
	proj      *Projector
	store     write.EventStore
	model     read.Model
	positions read.Positions
	delay     time.Duration
	interval  time.Duration
	page      int
	log       *slog.Logger
	onChanges func([]read.Change)
	now       func() time.Time

	// seen holds when a round first found each missing event, by position: an event is due from
	// the earlier of its own time and that moment, as the relay's grace period is, so that a
	// writer's clock running ahead cannot hold catch-up back. Only Round touches it; entries at or
	// below the applied position are dropped.
	seen map[int64]time.Time

	position   atomic.Int64
	caughtUp   atomic.Int64 // events read from the store and applied by catch-up
	unapplied  atomic.Int64 // events skipped because they cannot be applied
	rounds     atomic.Int64
	failures   atomic.Int64
	lastBehind atomic.Int64 // events the last round found missing
}

// CatchUpOption configures a CatchUp.
type CatchUpOption func(*CatchUp)

// WithDelay sets how old an event missing from the read model must be before catch-up reads it
// from the store rather than wait for Kafka (default 10 s).
func WithDelay(d time.Duration) CatchUpOption { return func(c *CatchUp) { c.delay = max(d, 0) } }

// WithInterval sets the pause between rounds (default 1 s).
func WithInterval(d time.Duration) CatchUpOption {
	return func(c *CatchUp) { c.interval = max(d, time.Millisecond) }
}

// WithPage sets how many events one round reads and applies per transaction (default 1000).
func WithPage(n int) CatchUpOption { return func(c *CatchUp) { c.page = max(n, 1) } }

// WithCatchUpLogger sets where repairs and failures are reported (default slog.Default()).
func WithCatchUpLogger(l *slog.Logger) CatchUpOption { return func(c *CatchUp) { c.log = l } }

// WithChanges sets a hook called with the changes of every batch catch-up applied (to announce
// them to subscribers as the Kafka consumer does).
func WithChanges(fn func([]read.Change)) CatchUpOption { return func(c *CatchUp) { c.onChanges = fn } }

// NewCatchUp returns a catch-up over model from store, applying through proj. Errors:
// ErrNoPositions when model does not implement read.Positions.
func NewCatchUp(proj *Projector, store write.EventStore, model read.Model, opts ...CatchUpOption) (*CatchUp, error) {
	pos, ok := model.(read.Positions)
	if !ok {
		return nil, ErrNoPositions
	}
	c := &CatchUp{proj: proj, store: store, model: model, positions: pos, delay: 10 * time.Second,
		interval: time.Second, page: 1000, log: slog.Default(), now: time.Now, seen: map[int64]time.Time{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Position returns the applied position as of the last round.
func (c *CatchUp) Position() int64 { return c.position.Load() }

// Run runs rounds until ctx ends, then returns nil. A failing round (store or read model down) is
// logged and retried with a growing backoff.
func (c *CatchUp) Run(ctx context.Context) error {
	backoff := retry.NewBackoff(30 * time.Second)
	for {
		if _, err := c.Round(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.failures.Add(1)
			c.log.Warn("catch-up from the event store", "err", err)
			if !retry.Sleep(ctx, backoff.Next()) {
				return nil
			}
			continue
		}
		backoff.Reset()
		if !retry.Sleep(ctx, c.interval) {
			return nil
		}
	}
}

// Round reads the store after the applied position until it reaches an event that is missing
// and not yet due (or the store's end), applies what is missing, and saves the new position. It
// returns how many events it applied. Errors are the store's or the model's. Rounds must not run
// concurrently (Run runs them one after another); several processes may each run their own.
func (c *CatchUp) Round(ctx context.Context) (applied int, err error) {
	c.rounds.Add(1)
	pos, err := c.positions.AppliedPosition(ctx)
	if err != nil {
		return 0, err
	}
	c.position.Store(pos)
	now := c.now()
	behind := 0
	defer func() { c.lastBehind.Store(int64(behind)) }()
	for {
		page, err := c.store.ReadAll(ctx, pos, c.page)
		if err != nil {
			return applied, fmt.Errorf("catch-up: read events after %d: %w", pos, err)
		}
		if len(page) == 0 {
			return applied, nil
		}
		missing, upto, stopped, err := c.missing(ctx, page, now)
		if err != nil {
			return applied, err
		}
		behind += len(missing)
		if len(missing) > 0 {
			n, err := c.apply(ctx, missing)
			applied += n
			if err != nil {
				return applied, err
			}
		}
		if upto > pos {
			if err := c.positions.SaveAppliedPosition(ctx, upto); err != nil {
				return applied, err
			}
			pos = upto
			c.position.Store(pos)
			for p := range c.seen {
				if p <= pos {
					delete(c.seen, p)
				}
			}
		}
		if stopped || len(page) < c.page {
			return applied, nil
		}
	}
}

// missing returns the events of page that the read model lacks and that are due (missing for
// the delay), the position up to which the page is settled once they are applied, and whether it
// stopped at a missing event not yet due. It never settles past such an event: positions become
// visible in order (write.EventStore.ReadAll), so everything below upto has been seen, and an
// event still in flight is waited for, never skipped (PITFALLS 2; write/kafka's relay does the
// same with its checkpoint).
func (c *CatchUp) missing(ctx context.Context, page []write.Event, now time.Time) (missing []write.Event, upto int64, stopped bool, err error) {
	versions := map[string]int64{}
	for _, e := range page {
		v, ok := versions[e.Stream]
		if !ok {
			if v, err = c.model.StreamVersion(ctx, e.Stream); err != nil {
				return nil, 0, false, fmt.Errorf("catch-up: %w", err)
			}
			versions[e.Stream] = v
		}
		if e.Version > v {
			first, ok := c.seen[e.Position]
			if !ok {
				first = now
				c.seen[e.Position] = now
			}
			if e.At.Before(first) {
				first = e.At
			}
			if now.Before(first.Add(c.delay)) {
				return missing, upto, true, nil
			}
			missing = append(missing, e)
		}
		upto = e.Position
	}
	return missing, upto, false, nil
}

// apply applies missing events in one batch, or, when that fails for a reason the events carry
// (poison, or a gap behind a poison event), one by one, skipping those that cannot be applied.
func (c *CatchUp) apply(ctx context.Context, missing []write.Event) (int, error) {
	changes, err := c.proj.Apply(ctx, missing)
	if err == nil {
		c.done(missing, changes)
		return len(missing), nil
	}
	if !errors.Is(err, ErrPoison) && !errors.Is(err, read.ErrGap) {
		return 0, err
	}
	applied := 0
	for _, e := range missing {
		changes, err := c.proj.Apply(ctx, []write.Event{e})
		switch {
		case err == nil:
			applied++
			c.done([]write.Event{e}, changes)
		case errors.Is(err, ErrPoison) || errors.Is(err, read.ErrGap):
			c.unapplied.Add(1)
			c.log.Error("catch-up: stored event cannot be applied; skipped (verify reports it)",
				"event", e.ID, "stream", e.Stream, "version", e.Version, "type", e.Type, "schema", e.Schema, "err", err)
		default:
			return applied, err
		}
	}
	return applied, nil
}

func (c *CatchUp) done(evs []write.Event, changes []read.Change) {
	c.caughtUp.Add(int64(len(evs)))
	c.log.Warn("caught up from the event store: events Kafka did not deliver in time",
		"events", len(evs), "from", evs[0].Position, "to", evs[len(evs)-1].Position)
	if c.onChanges != nil && len(changes) > 0 {
		c.onChanges(changes)
	}
}

var (
	catchUpPositionDesc = prometheus.NewDesc("postgate_projector_applied_position",
		"Event-store position up to which every event is known to be in the read model.", nil, nil)
	catchUpAppliedDesc = prometheus.NewDesc("postgate_projector_catchup_events_total",
		"Events read from the event store and applied by catch-up because Kafka had not delivered them.", nil, nil)
	catchUpUnappliedDesc = prometheus.NewDesc("postgate_projector_catchup_unappliable_total",
		"Stored events catch-up skipped because this binary cannot apply them.", nil, nil)
	catchUpBehindDesc = prometheus.NewDesc("postgate_projector_catchup_missing_events",
		"Events the last catch-up round found missing from the read model.", nil, nil)
	catchUpFailuresDesc = prometheus.NewDesc("postgate_projector_catchup_failures_total",
		"Catch-up rounds that failed (event store or read model unavailable).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *CatchUp) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{catchUpPositionDesc, catchUpAppliedDesc, catchUpUnappliedDesc, catchUpBehindDesc, catchUpFailuresDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *CatchUp) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(catchUpPositionDesc, prometheus.GaugeValue, float64(c.position.Load()))
	ch <- prometheus.MustNewConstMetric(catchUpAppliedDesc, prometheus.CounterValue, float64(c.caughtUp.Load()))
	ch <- prometheus.MustNewConstMetric(catchUpUnappliedDesc, prometheus.CounterValue, float64(c.unapplied.Load()))
	ch <- prometheus.MustNewConstMetric(catchUpBehindDesc, prometheus.GaugeValue, float64(c.lastBehind.Load()))
	ch <- prometheus.MustNewConstMetric(catchUpFailuresDesc, prometheus.CounterValue, float64(c.failures.Load()))
}
