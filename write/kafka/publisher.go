package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/internal/telemetry"
	"github.com/postgate/postgate/write"
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("kafka publisher closed")

// ErrUnavailable is returned by Publish while the Publisher has not yet reached any broker.
var ErrUnavailable = errors.New("kafka unavailable")

// Publisher publishes events to the events topic with an idempotent producer: all replicas must
// acknowledge, one request in flight per broker and a key-hashing partitioner, so the events of
// one post land in one partition in the order they were published, and a retried send is not
// written twice.
type Publisher struct {
	brokers []string
	cfg     *sarama.Config
	topic   string

	// producer is set once, before ready is closed; until then no broker has answered.
	producer sarama.AsyncProducer
	ready    chan struct{}

	// sending is held (shared) while a Publish call writes to the producer's input, so that Close
	// can wait for those writes before the producer closes its input channel.
	sending   sync.RWMutex
	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}
}

// PublisherOption configures a Publisher.
type PublisherOption func(*publisherConfig)

type publisherConfig struct {
	topic  string
	sarama *sarama.Config
}

// WithTopic sets the events topic (default DefaultEventsTopic).
func WithTopic(topic string) PublisherOption {
	return func(c *publisherConfig) { c.topic = topic }
}

// WithSaramaConfig replaces the base sarama configuration (default NewSaramaConfig). The
// producer settings that the delivery guarantees depend on are enforced on top of it.
func WithSaramaConfig(cfg *sarama.Config) PublisherOption {
	return func(c *publisherConfig) { c.sarama = cfg }
}

// NewPublisher connects an idempotent producer to brokers. It fails only when the configuration
// is invalid: while no broker answers it keeps trying in the background (so a service can start
// while Kafka is down), and Publish fails with ErrUnavailable meanwhile.
func NewPublisher(brokers []string, opts ...PublisherOption) (*Publisher, error) {
	pc := publisherConfig{topic: DefaultEventsTopic, sarama: NewSaramaConfig()}
	for _, o := range opts {
		o(&pc)
	}
	cfg := pc.sarama
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	if cfg.Producer.Retry.Max < 1 {
		cfg.Producer.Retry.Max = 1
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka producer configuration: %w", err)
	}
	p := &Publisher{brokers: brokers, cfg: cfg, topic: pc.topic, ready: make(chan struct{}),
		closing: make(chan struct{}), done: make(chan struct{})}
	if !p.connect() {
		go p.reconnect()
	}
	return p, nil
}

// connect tries once to create the producer and reports whether the Publisher is ready (or
// closed, when there is nothing left to try).
func (p *Publisher) connect() bool {
	producer, err := sarama.NewAsyncProducer(p.brokers, p.cfg)
	if err != nil {
		return false
	}
	p.sending.Lock()
	defer p.sending.Unlock()
	select {
	case <-p.closing:
		producer.Close()
		close(p.done)
		return true
	default:
	}
	p.producer = producer
	close(p.ready)
	go p.dispatch()
	return true
}

// reconnect retries connect with a growing backoff until it succeeds or Close is called.
func (p *Publisher) reconnect() {
	b := retry.NewBackoff(5 * time.Second)
	for !p.connect() {
		select {
		case <-p.closing:
			p.sending.Lock()
			defer p.sending.Unlock()
			select {
			case <-p.ready: // connected after all; dispatch closes done
			default:
				close(p.done)
			}
			return
		case <-time.After(b.Next()):
		}
	}
}

// Topic returns the events topic this Publisher writes to.
func (p *Publisher) Topic() string { return p.topic }

// ackBatch counts the outstanding acknowledgements of one Publish call.
type ackBatch struct {
	mu   sync.Mutex
	left int
	err  error
	done chan struct{}
}

func (b *ackBatch) ack(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && b.err == nil {
		b.err = err
	}
	b.left--
	if b.left == 0 {
		close(b.done)
	}
}

// dispatch routes the producer's acknowledgements and errors back to the Publish calls waiting
// for them, until the producer has shut down.
func (p *Publisher) dispatch() {
	defer close(p.done)
	successes, errs := p.producer.Successes(), p.producer.Errors()
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			if b, ok := m.Metadata.(*ackBatch); ok {
				b.ack(nil)
			}
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if b, ok := e.Msg.Metadata.(*ackBatch); ok {
				b.ack(e.Err)
			}
		}
	}
}

// Message returns the Kafka message that carries e: the post id as key, the JSON envelope as
// value, and the type, schema version, event id and position as headers.
func Message(topic string, e write.Event) (*sarama.ProducerMessage, error) {
	value, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return &sarama.ProducerMessage{
		Topic: topic,
		Key:   sarama.StringEncoder(e.PostID),
		Value: sarama.ByteEncoder(value),
		Headers: []sarama.RecordHeader{
			{Key: []byte(HeaderType), Value: []byte(e.Type)},
			{Key: []byte(HeaderSchema), Value: []byte(strconv.Itoa(e.Schema))},
			{Key: []byte(HeaderEventID), Value: []byte(e.ID)},
			{Key: []byte(HeaderPosition), Value: []byte(strconv.FormatInt(e.Position, 10))},
		},
	}, nil
}

// Publish sends events in order and returns once every one of them is acknowledged by the
// brokers. It returns ErrUnavailable before the first connection, the first delivery error, ctx's error when ctx ends first (the messages
// may still be delivered later: a duplicate, never a loss, since the relay publishes what was
// not confirmed), or ErrClosed.
func (p *Publisher) Publish(ctx context.Context, events []write.Event) error {
	if len(events) == 0 {
		return nil
	}
	msgs := make([]*sarama.ProducerMessage, len(events))
	b := &ackBatch{left: len(events), done: make(chan struct{})}
	for i, e := range events {
		msg, err := Message(p.topic, e)
		if err != nil {
			return err
		}
		msg.Metadata = b
		telemetry.Inject(ctx, msg) // the events-topic contract allows a W3C traceparent header
		msgs[i] = msg
	}
	if err := p.send(ctx, msgs); err != nil {
		return err
	}
	select {
	case <-b.done:
		if b.err != nil {
			return fmt.Errorf("publish %d events: %w", len(events), b.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish %d events: %w", len(events), ctx.Err())
	}
}

func (p *Publisher) send(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	p.sending.RLock()
	defer p.sending.RUnlock()
	select {
	case <-p.ready:
	default:
		return ErrUnavailable
	}
	for _, msg := range msgs {
		select {
		case <-p.closing:
			return ErrClosed
		default:
		}
		select {
		case p.producer.Input() <- msg:
		case <-ctx.Done():
			return fmt.Errorf("publish: %w", ctx.Err())
		case <-p.closing:
			return ErrClosed
		}
	}
	return nil
}

// Close stops accepting events, waits (at most timeout) for those in flight, and shuts the
// producer down. It returns nil; delivery failures went to the Publish calls.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		close(p.closing)
		p.sending.Lock()
		select {
		case <-p.ready:
			p.producer.AsyncClose()
		default: // reconnect sees closing and closes done
		}
		p.sending.Unlock()
	})
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	return nil
}
