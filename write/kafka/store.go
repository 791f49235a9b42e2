package kafka

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/postgate/postgate/internal/telemetry"
	"github.com/postgate/postgate/write"
)

// EventPublisher is what the publishing store and the relay need from a Publisher.
type EventPublisher interface {
	Publish(ctx context.Context, events []write.Event) error
}

// Confirmer is told which stored events the fast path got acknowledged, so that the relay
// does not publish them a second time. *Relay implements it.
type Confirmer interface {
	Confirm(events []write.Event)
}

// PublishingStore decorates a write.EventStore: every successful Append is published right away
// (the fast path). Publishing never fails the mutation: the events are stored, and the Relay
// publishes whatever the fast path did not get acknowledged. The wait for the acknowledgement
// is bounded, and after a failure the fast path stands aside for a cool-down, so that mutations
// stay fast while Kafka is down.
type PublishingStore struct {
	write.EventStore
	pub      EventPublisher
	confirm  Confirmer
	timeout  time.Duration
	cooldown time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu          sync.Mutex
	pausedUntil time.Time
}

var _ write.EventStore = (*PublishingStore)(nil)

// StoreOption configures a PublishingStore.
type StoreOption func(*PublishingStore)

// WithConfirmer tells c about every acknowledged publish (usually the Relay of this process).
func WithConfirmer(c Confirmer) StoreOption { return func(s *PublishingStore) { s.confirm = c } }

// WithPublishTimeout bounds how long Append waits for the acknowledgement (default 1 s).
func WithPublishTimeout(d time.Duration) StoreOption {
	return func(s *PublishingStore) { s.timeout = d }
}

// WithCooldown sets how long the fast path is skipped after a failed publish (default 5 s).
func WithCooldown(d time.Duration) StoreOption { return func(s *PublishingStore) { s.cooldown = d } }

// WithStoreLogger sets where failed publishes are reported (default slog.Default()).
func WithStoreLogger(l *slog.Logger) StoreOption { return func(s *PublishingStore) { s.log = l } }

// NewPublishingStore returns store with a publishing fast path through pub.
func NewPublishingStore(store write.EventStore, pub EventPublisher, opts ...StoreOption) *PublishingStore {
	s := &PublishingStore{EventStore: store, pub: pub, timeout: time.Second, cooldown: 5 * time.Second,
		log: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Append stores events through the wrapped store, then publishes them. Its errors are the
// wrapped store's (ErrConflict among them); a publish failure is only logged.
func (s *PublishingStore) Append(ctx context.Context, stream string, expected int64, events []write.Event) ([]write.Event, error) {
	ctx, span := telemetry.Tracer().Start(ctx, "eventstore.append", trace.WithAttributes(
		attribute.String("postgate.stream", stream), attribute.Int("postgate.events", len(events))))
	stored, err := s.EventStore.Append(ctx, stream, expected, events)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil || len(stored) == 0 {
		return stored, err
	}
	s.publish(ctx, stored)
	return stored, nil
}

func (s *PublishingStore) publish(ctx context.Context, events []write.Event) {
	s.mu.Lock()
	paused := s.now().Before(s.pausedUntil)
	s.mu.Unlock()
	if paused {
		return
	}
	// The request may be cancelled as soon as Append returns; the publish is ours to finish.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	ctx, span := telemetry.Tracer().Start(ctx, "kafka.publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.Int("messaging.batch.message_count", len(events))))
	defer span.End()
	if err := s.pub.Publish(ctx, events); err != nil {
		span.SetStatus(codes.Error, err.Error())
		s.mu.Lock()
		s.pausedUntil = s.now().Add(s.cooldown)
		s.mu.Unlock()
		s.log.Warn("fast-path publish failed; the relay will publish", "events", len(events),
			"from", events[0].Position, "err", err)
		return
	}
	if s.confirm != nil {
		s.confirm.Confirm(events)
	}
}
