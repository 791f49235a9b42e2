package kafka

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/write"
)

// DefaultCheckpoint is the name under which the relay keeps its progress in the event store.
const DefaultCheckpoint = "kafka-relay"

// maxConfirmed bounds the memory of fast-path confirmations; beyond it they are dropped, which
// only costs duplicates.
const maxConfirmed = 1 << 20

// Relay publishes everything the event store holds, in position order, from its checkpoint: the
// safety net behind the fast path (PITFALLS 1, the dual write). Its checkpoint is saved only after
// the events up to it are acknowledged, so stored-but-unpublished is never a resting state.
//
// In one process the fast path tells the relay (Confirm) which positions it got acknowledged;
// fast paths in other processes confirm through the topic (NewTopicConfirmer). The relay then
// publishes only positions that stay unconfirmed for a grace period, and still moves its
// checkpoint past the confirmed ones. Confirmations missed (around a restart) or two relays at
// once cause duplicates, which the projector absorbs; nothing is ever skipped.
//
// A Relay is a prometheus.Collector: register it to export its checkpoint, how many events it
// had to publish itself, and its failures.
type Relay struct {
	store      write.EventStore
	pub        EventPublisher
	name       string
	batch      int
	grace      time.Duration
	poll       time.Duration
	maxBackoff time.Duration
	log        *slog.Logger
	now        func() time.Time

	position  atomic.Int64 // the checkpoint, for Position
	published atomic.Int64
	failures  atomic.Int64

	mu        sync.Mutex
	floor     int64              // confirmations at or below it are not needed any more
	confirmed map[int64]struct{} // positions above floor that the fast path got acknowledged
	seen      map[int64]time.Time
}

var _ Confirmer = (*Relay)(nil)

// RelayOption configures a Relay.
type RelayOption func(*Relay)

// WithCheckpointName sets the checkpoint's name in the store (default DefaultCheckpoint).
func WithCheckpointName(name string) RelayOption { return func(r *Relay) { r.name = name } }

// WithBatch sets how many events are read and published at a time (default 500).
func WithBatch(n int) RelayOption { return func(r *Relay) { r.batch = max(n, 1) } }

// WithGrace sets how long an event may wait for a fast-path confirmation before the relay
// publishes it itself (default 2 s). Zero publishes everything the relay reads.
func WithGrace(d time.Duration) RelayOption { return func(r *Relay) { r.grace = d } }

// WithPoll sets how often the relay looks for new events when it has caught up (default 100 ms).
func WithPoll(d time.Duration) RelayOption { return func(r *Relay) { r.poll = d } }

// WithMaxBackoff caps the wait between retries while the store or Kafka fails (default 5 s).
func WithMaxBackoff(d time.Duration) RelayOption { return func(r *Relay) { r.maxBackoff = d } }

// WithRelayLogger sets where failures are reported (default slog.Default()).
func WithRelayLogger(l *slog.Logger) RelayOption { return func(r *Relay) { r.log = l } }

// NewRelay returns a relay that publishes the events of store through pub.
func NewRelay(store write.EventStore, pub EventPublisher, opts ...RelayOption) *Relay {
	r := &Relay{store: store, pub: pub, name: DefaultCheckpoint, batch: 500, grace: 2 * time.Second,
		poll: 100 * time.Millisecond, maxBackoff: 5 * time.Second, log: slog.Default(), now: time.Now,
		confirmed: make(map[int64]struct{}), seen: make(map[int64]time.Time)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Confirm records that events were acknowledged by Kafka, so the relay need not publish them.
func (r *Relay) Confirm(events []write.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if e.Position > r.floor && len(r.confirmed) < maxConfirmed {
			r.confirmed[e.Position] = struct{}{}
		}
	}
}

// Position returns the relay's checkpoint: every event at or below it has been acknowledged.
func (r *Relay) Position() int64 { return r.position.Load() }

// Run publishes until ctx ends, then returns nil. Failures of the store or of Kafka are logged
// and retried with a growing backoff; they never end Run.
func (r *Relay) Run(ctx context.Context) error {
	backoff := retry.NewBackoff(r.maxBackoff)
	var cp int64
	for {
		var err error
		if cp, err = r.store.Checkpoint(ctx, r.name); err == nil {
			break
		}
		r.log.Warn("relay: read checkpoint", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return nil
		}
	}
	r.advance(cp)
	backoff.Reset()
	for {
		evs, err := r.store.ReadAll(ctx, cp, r.batch)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.failures.Add(1)
			r.log.Warn("relay: read events", "after", cp, "err", err)
			if !retry.Sleep(ctx, backoff.Next()) {
				return nil
			}
			continue
		}
		publish, upto, wait := r.plan(cp, evs)
		if len(publish) > 0 {
			if err := r.pub.Publish(ctx, publish); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.failures.Add(1)
				r.log.Warn("relay: publish", "events", len(publish), "from", publish[0].Position, "err", err)
				if !retry.Sleep(ctx, backoff.Next()) {
					return nil
				}
				continue
			}
		}
		r.published.Add(int64(len(publish)))
		backoff.Reset()
		if upto > cp {
			// A checkpoint that fails to save only causes duplicates after a restart, so the
			// relay goes on from what it knows is acknowledged.
			if err := r.store.SaveCheckpoint(ctx, r.name, upto); err != nil && ctx.Err() == nil {
				r.log.Warn("relay: save checkpoint", "position", upto, "err", err)
			}
			cp = upto
			r.advance(cp)
		}
		if len(evs) == r.batch && wait == 0 {
			continue // more is waiting
		}
		d := r.poll
		if wait > 0 && wait < d {
			d = wait
		}
		if !retry.Sleep(ctx, d) {
			return nil
		}
	}
}

// plan walks evs (the events after cp) and returns those the relay must publish now, the
// position the checkpoint may move to once they are acknowledged, and, when it stopped at an
// event still within its grace period, how long until that period ends.
func (r *Relay) plan(cp int64, evs []write.Event) (publish []write.Event, upto int64, wait time.Duration) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	upto = cp
	for _, e := range evs {
		if _, ok := r.confirmed[e.Position]; ok {
			upto = e.Position
			continue
		}
		first, ok := r.seen[e.Position]
		if !ok {
			first = now
			r.seen[e.Position] = now
		}
		if e.At.Before(first) {
			first = e.At
		}
		if due := first.Add(r.grace); now.Before(due) {
			return publish, upto, due.Sub(now)
		}
		publish = append(publish, e)
		upto = e.Position
	}
	return publish, upto, 0
}

// advance forgets confirmations and sightings at or below the checkpoint.
func (r *Relay) advance(cp int64) {
	r.position.Store(cp)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.floor = cp
	for p := range r.confirmed {
		if p <= cp {
			delete(r.confirmed, p)
		}
	}
	for p := range r.seen {
		if p <= cp {
			delete(r.seen, p)
		}
	}
}

var (
	relayCheckpointDesc = prometheus.NewDesc("postgate_relay_checkpoint_position",
		"Event-store position up to which every event is acknowledged by Kafka.", nil, nil)
	relayPublishedDesc = prometheus.NewDesc("postgate_relay_published_events_total",
		"Events the relay published itself (not confirmed by the fast path in time).", nil, nil)
	relayFailuresDesc = prometheus.NewDesc("postgate_relay_failures_total",
		"Failed attempts of the relay to read the store or publish.", nil, nil)
)

var _ prometheus.Collector = (*Relay)(nil)

// Describe implements prometheus.Collector, so that a Relay can be registered on a registry.
func (r *Relay) Describe(ch chan<- *prometheus.Desc) {
	ch <- relayCheckpointDesc
	ch <- relayPublishedDesc
	ch <- relayFailuresDesc
}

// Collect implements prometheus.Collector.
func (r *Relay) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(relayCheckpointDesc, prometheus.GaugeValue, float64(r.position.Load()))
	ch <- prometheus.MustNewConstMetric(relayPublishedDesc, prometheus.CounterValue, float64(r.published.Load()))
	ch <- prometheus.MustNewConstMetric(relayFailuresDesc, prometheus.CounterValue, float64(r.failures.Load()))
}
