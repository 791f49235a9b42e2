// Package kafka feeds the projector from Kafka: a consumer group that applies batches of events
// and marks their offsets only after the read model has committed them, a dead-letter topic for
// poison events, and change notifications (in process and on the changes topic) after each
// committed batch.
package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/internal/telemetry"
	"github.com/postgate/postgate/projector"
	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
	wkafka "github.com/postgate/postgate/write/kafka"
)

// Applier applies a batch of events to the read model and returns the per-post changes once
// they are committed. projector.Projector implements it.
type Applier interface {
	Apply(ctx context.Context, events []write.Event) ([]read.Change, error)
}

// ErrPoison marks an event that can never be applied: an Applier error matching it sends the
// event to the dead-letter topic without retries. It is the projector's own ErrPoison.
var ErrPoison = projector.ErrPoison

// DefaultGroup is the consumer group id of the projector.
const DefaultGroup = "postgate-projector"

// Headers added to a dead-lettered message, next to the original ones.
const (
	HeaderDeadReason    = "postgate-dlq-reason"
	HeaderDeadTopic     = "postgate-dlq-topic"
	HeaderDeadPartition = "postgate-dlq-partition"
	HeaderDeadOffset    = "postgate-dlq-offset"
)

// Consumer reads the events topic in a consumer group and applies it through an Applier.
type Consumer struct {
	brokers      []string
	applier      Applier
	group        string
	topic        string
	deadTopic    string
	changesTopic string
	batchSize    int
	batchWait    time.Duration
	retries      int
	retryWait    time.Duration
	isPoison     func(error) bool
	onChanges    func([]read.Change)
	sarama       *sarama.Config
	log          *slog.Logger
	registry     prometheus.Registerer
	metrics      *metrics

	// beforeMark, when set (tests only), runs after a batch is applied and before its offsets are
	// marked; returning false abandons the session as a crash would.
	beforeMark func(n int) bool

	mu       sync.Mutex           // guards changes and changeQueue against Announce before connect
	producer sarama.SyncProducer  // dead letters: each must be acknowledged before moving on
	changes  sarama.AsyncProducer // change notifications: hints, sent without waiting
	// changeQueue buffers change notifications for one goroutine that feeds the producer: its
	// input channel is unbuffered, so a send that must not wait would mostly find it busy.
	changeQueue chan *sarama.ProducerMessage
	stopChanges chan struct{}
	changesDone chan struct{}
}

// Option configures a Consumer.
type Option func(*Consumer)

// WithGroup sets the consumer group id (default DefaultGroup).
func WithGroup(id string) Option { return func(c *Consumer) { c.group = id } }

// WithTopics sets the events topic (default wkafka.DefaultEventsTopic; its dead-letter topic
// follows it) and the changes topic (default wkafka.DefaultChangesTopic; "" publishes no changes).
func WithTopics(events, changes string) Option {
	return func(c *Consumer) {
		c.topic, c.deadTopic, c.changesTopic = events, wkafka.DeadLetterTopic(events), changes
	}
}

// WithBatch sets the largest batch and how long to wait for it to fill after its first message
// (default 500 and 2 ms: longer waits build bigger batches at low rates, and add their length to
// every event's latency).
func WithBatch(n int, wait time.Duration) Option {
	return func(c *Consumer) { c.batchSize, c.batchWait = max(n, 1), wait }
}

// WithRetries sets how often a failing apply is retried, and the first wait between tries,
// which doubles (default 3 and 100 ms).
func WithRetries(n int, wait time.Duration) Option {
	return func(c *Consumer) { c.retries, c.retryWait = max(n, 0), wait }
}

// WithPoison sets how an Applier error is recognised as poison (default errors.Is(err, ErrPoison)).
func WithPoison(isPoison func(error) bool) Option { return func(c *Consumer) { c.isPoison = isPoison } }

// WithOnChanges sets a hook called with the changes of every committed batch, in the consuming
// goroutine: it must not block for long.
func WithOnChanges(fn func([]read.Change)) Option { return func(c *Consumer) { c.onChanges = fn } }

// WithRegistry registers the consumer's metrics on reg (default: none are registered).
func WithRegistry(reg prometheus.Registerer) Option {
	return func(c *Consumer) { c.registry = reg }
}

// WithLogger sets where failures and dead letters are reported (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *Consumer) { c.log = l } }

// WithConfig replaces the base sarama configuration (default wkafka.NewSaramaConfig()).
func WithConfig(cfg *sarama.Config) Option { return func(c *Consumer) { c.sarama = cfg } }

// NewConsumer returns a consumer of brokers that applies events through applier. It connects
// nothing yet (Run does); it fails when the metrics cannot be registered (already registered by
// another consumer on the same registry).
func NewConsumer(brokers []string, applier Applier, opts ...Option) (*Consumer, error) {
	c := &Consumer{brokers: brokers, applier: applier, group: DefaultGroup,
		topic: wkafka.DefaultEventsTopic, deadTopic: wkafka.DeadLetterTopic(wkafka.DefaultEventsTopic),
		changesTopic: wkafka.DefaultChangesTopic, batchSize: 500, batchWait: 2 * time.Millisecond,
		retries: 3, retryWait: 100 * time.Millisecond, log: slog.Default(), sarama: wkafka.NewSaramaConfig()}
	c.isPoison = func(err error) bool { return errors.Is(err, ErrPoison) }
	for _, o := range opts {
		o(c)
	}
	c.metrics = newMetrics()
	if c.registry != nil {
		if err := c.metrics.register(c.registry); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// connect creates the producer of dead letters and changes, and the consumer group.
func (c *Consumer) connect() (sarama.ConsumerGroup, error) {
	if c.producer == nil {
		pcfg := *c.sarama
		pcfg.Producer.RequiredAcks = sarama.WaitForAll
		pcfg.Producer.Idempotent = true
		pcfg.Net.MaxOpenRequests = 1
		pcfg.Producer.Partitioner = sarama.NewHashPartitioner
		pcfg.Producer.Return.Successes = true
		producer, err := sarama.NewSyncProducer(c.brokers, &pcfg)
		if err != nil {
			return nil, fmt.Errorf("new dead-letter producer: %w", err)
		}
		c.producer = producer
	}
	if c.changes == nil && c.changesTopic != "" {
		ccfg := *c.sarama
		ccfg.Producer.Partitioner = sarama.NewHashPartitioner
		ccfg.Producer.Return.Successes = false
		ccfg.Producer.Return.Errors = true
		changes, err := sarama.NewAsyncProducer(c.brokers, &ccfg)
		if err != nil {
			return nil, fmt.Errorf("new change producer: %w", err)
		}
		go func() {
			for err := range changes.Errors() {
				c.metrics.changeErrors.Inc()
				c.log.Warn("publish change", "err", err)
			}
		}()
		c.mu.Lock()
		c.changes = changes
		c.changeQueue = make(chan *sarama.ProducerMessage, 8192)
		c.mu.Unlock()
		c.stopChanges, c.changesDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(c.changesDone)
			for {
				select {
				case msg := <-c.changeQueue:
					select {
					case changes.Input() <- msg:
					case <-c.stopChanges:
						return
					}
				case <-c.stopChanges:
					return
				}
			}
		}()
	}
	cfg := *c.sarama
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	group, err := sarama.NewConsumerGroup(c.brokers, c.group, &cfg)
	if err != nil {
		return nil, fmt.Errorf("new consumer group %s: %w", c.group, err)
	}
	return group, nil
}

// Close releases the producers. Call it after Run has returned. It returns the dead-letter
// producer's error on closing.
func (c *Consumer) Close() error {
	if c.changes != nil {
		close(c.stopChanges)
		<-c.changesDone
		c.changes.AsyncClose()
	}
	if c.producer == nil {
		return nil
	}
	if err := c.producer.Close(); err != nil {
		return fmt.Errorf("close dead-letter producer: %w", err)
	}
	return nil
}

// Run consumes until ctx ends, then returns nil. Failures (no broker yet, a broker restart, a
// rebalance) are logged and retried with a growing backoff; they never end Run.
func (c *Consumer) Run(ctx context.Context) error {
	var group sarama.ConsumerGroup
	connecting := retry.NewBackoff(5 * time.Second)
	for {
		var err error
		if group, err = c.connect(); err == nil {
			break
		}
		c.log.Warn("projector consumer: connect", "err", err)
		if !retry.Sleep(ctx, connecting.Next()) {
			return nil
		}
	}
	defer group.Close()
	go func() {
		for err := range group.Errors() {
			c.log.Warn("projector consumer", "err", err)
		}
	}()
	handler := &groupHandler{c: c}
	wait := retry.NewBackoff(5 * time.Second)
	for ctx.Err() == nil {
		if err := group.Consume(ctx, []string{c.topic}, handler); err != nil {
			if ctx.Err() != nil || errors.Is(err, sarama.ErrClosedConsumerGroup) {
				break
			}
			c.log.Warn("projector consumer session", "err", err)
			if !retry.Sleep(ctx, wait.Next()) {
				break
			}
			continue
		}
		wait.Reset()
	}
	return nil
}

type groupHandler struct{ c *Consumer }

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim gathers batches from one partition, applies them, and marks each batch's offsets
// only after the read model committed it, so a crash or rebalance redelivers, never skips.
func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	c := h.c
	ctx := sess.Context()
	lag := c.metrics.lag.WithLabelValues(strconv.Itoa(int(claim.Partition())))
	for {
		batch, open := gather(ctx, claim.Messages(), c.batchSize, c.batchWait)
		if len(batch) > 0 {
			if err := c.process(ctx, batch); err != nil {
				return nil // the session is ending; what was not marked is redelivered
			}
			if c.beforeMark != nil && !c.beforeMark(len(batch)) {
				return nil
			}
			last := batch[len(batch)-1]
			sess.MarkMessage(last, "")
			lag.Set(float64(max(claim.HighWaterMarkOffset()-last.Offset-1, 0)))
		}
		if !open || ctx.Err() != nil {
			return nil
		}
	}
}

// gather waits for a first message, then takes more until the batch is full or wait has passed.
// open is false once the claim's channel is closed.
func gather(ctx context.Context, in <-chan *sarama.ConsumerMessage, n int, wait time.Duration) (batch []*sarama.ConsumerMessage, open bool) {
	select {
	case m, ok := <-in:
		if !ok {
			return nil, false
		}
		batch = append(batch, m)
	case <-ctx.Done():
		return nil, true
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(batch) < n {
		select {
		case m, ok := <-in:
			if !ok {
				return batch, false
			}
			batch = append(batch, m)
		case <-timer.C:
			return batch, true
		case <-ctx.Done():
			return batch, true
		}
	}
	return batch, true
}

// item is one message of a batch with its decoded event.
type item struct {
	msg *sarama.ConsumerMessage
	ev  write.Event
}

// process applies a batch: as a whole with bounded retries, then, if that keeps failing, one
// event at a time, parking what cannot be applied in the dead-letter topic. It returns an error
// only when ctx ended before the batch was settled.
func (c *Consumer) process(ctx context.Context, msgs []*sarama.ConsumerMessage) error {
	start := time.Now()
	items := make([]item, 0, len(msgs))
	for _, m := range msgs {
		var ev write.Event
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			if err := c.deadLetter(ctx, m, fmt.Errorf("decode envelope: %w", err)); err != nil {
				return err
			}
			continue
		}
		if ev.ID == "" || ev.Type == "" || ev.Stream == "" || ev.Version < 1 {
			if err := c.deadLetter(ctx, m, errors.New("envelope lacks id, type, stream or version")); err != nil {
				return err
			}
			continue
		}
		items = append(items, item{msg: m, ev: ev})
	}
	if len(items) == 0 {
		return nil
	}
	outage := retry.NewBackoff(10 * time.Second)
	for {
		changes, err := c.applyRetry(ctx, events(items))
		if err == nil {
			c.committed(items, changes, start)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Warn("projector batch failed; applying one by one", "events", len(items), "err", err)
		settled, ierr := c.isolate(ctx, items, start)
		if ierr != nil || settled {
			return ierr
		}
		// Nothing in the batch could be applied and nothing was poison: the read model is
		// down, not the events. Wait for it rather than dead-letter everything.
		c.log.Warn("projector read model unavailable; waiting", "err", err)
		if !retry.Sleep(ctx, outage.Next()) {
			return ctx.Err()
		}
	}
}

// isolate applies items one by one, in two rounds, parking poison events in the dead-letter
// topic. An event that fails in both rounds is parked too, but only if the read model applied
// some other event after its first failure: then the model works and the event is at fault.
// Otherwise the failures look like an outage (the model went down during the batch), and settled
// is false: the caller retries the whole batch later, which the projector's idempotency absorbs
// for the events applied here.
func (c *Consumer) isolate(ctx context.Context, items []item, start time.Time) (settled bool, err error) {
	type failure struct {
		it  item
		err error
		at  int // sequence number of the first failed attempt
	}
	seq, lastSuccess := 0, -1
	// try reports whether it is settled (applied or parked); err is the failure otherwise, or
	// the error that kept a poison event from being parked.
	try := func(it item) (done bool, err error) {
		seq++
		changes, err := c.applyRetry(ctx, []write.Event{it.ev})
		if err == nil {
			lastSuccess = seq
			c.committed([]item{it}, changes, start)
			return true, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if c.isPoison(err) {
			return true, c.deadLetter(ctx, it.msg, err)
		}
		return false, err
	}
	var failed []failure
	for _, it := range items {
		done, err := try(it)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if !done {
			failed = append(failed, failure{it: it, err: err, at: seq})
		} else if err != nil {
			return false, err
		}
	}
	var still []failure
	for _, f := range failed {
		done, err := try(f.it)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if !done {
			f.err = err
			still = append(still, f)
		} else if err != nil {
			return false, err
		}
	}
	for _, f := range still {
		// An event is at fault only if the model applied others after its failure, and the
		// failure was not the event store's (a gap fill that could not read it).
		if lastSuccess < f.at || errors.Is(f.err, projector.ErrStoreUnavailable) {
			return false, nil
		}
	}
	for _, f := range still {
		if err := c.deadLetter(ctx, f.it.msg, fmt.Errorf("failed after %d retries, twice: %w", c.retries, f.err)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// applyRetry applies events, retrying a failure that is not poison up to c.retries times.
func (c *Consumer) applyRetry(ctx context.Context, evs []write.Event) ([]read.Change, error) {
	wait := c.retryWait
	for attempt := 0; ; attempt++ {
		changes, err := c.applier.Apply(ctx, evs)
		if err == nil || attempt >= c.retries || c.isPoison(err) || ctx.Err() != nil {
			return changes, err
		}
		if !retry.Sleep(ctx, wait) {
			return nil, ctx.Err()
		}
		wait *= 2
	}
}

// committed records an applied batch and announces its changes.
func (c *Consumer) committed(items []item, changes []read.Change, start time.Time) {
	c.metrics.applied.Add(float64(len(items)))
	c.metrics.batch.Observe(time.Since(start).Seconds())
	traceApplied(items, changes, start)
	c.Announce(changes)
}

// traceApplied records a projector.apply span for each traced event of a committed batch, a
// child of the span that published it, and hands the span of a post's last traced event to the
// post's change, so that the subscription push joins the same trace.
func traceApplied(items []item, changes []read.Change, start time.Time) {
	var spans map[string]trace.SpanContext
	for _, it := range items {
		remote := telemetry.Extract(it.msg)
		if !remote.IsValid() {
			continue
		}
		_, span := telemetry.Tracer().Start(trace.ContextWithRemoteSpanContext(context.Background(), remote),
			"projector.apply", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start),
			trace.WithAttributes(attribute.String("messaging.system", "kafka"),
				attribute.String("messaging.destination.name", it.msg.Topic),
				attribute.Int64("messaging.kafka.offset", it.msg.Offset),
				attribute.Int("messaging.destination.partition.id", int(it.msg.Partition)),
				attribute.String("postgate.event.type", it.ev.Type),
				attribute.Int("postgate.batch.events", len(items))))
		span.End()
		if spans == nil {
			spans = map[string]trace.SpanContext{}
		}
		spans[it.ev.PostID] = span.SpanContext()
	}
	for i := range changes {
		if sc, ok := spans[changes[i].PostID]; ok {
			changes[i].Trace = sc
		}
	}
}

// Announce tells about changes that were committed to the read model outside the consumer (the
// projector's catch-up from the event store, a dead-letter replay) as it tells about its own: the
// WithOnChanges hook, then the changes topic. Safe for concurrent use, also before Run connects
// (the changes topic then misses them; gateways reconcile with the read model).
func (c *Consumer) Announce(changes []read.Change) {
	if len(changes) == 0 {
		return
	}
	if c.onChanges != nil {
		c.onChanges(changes)
	}
	c.mu.Lock()
	queue := c.changeQueue
	c.mu.Unlock()
	if queue == nil {
		return
	}
	for _, ch := range changes {
		value, err := json.Marshal(fromChange(ch))
		if err != nil {
			continue
		}
		msg := &sarama.ProducerMessage{Topic: c.changesTopic, Key: sarama.StringEncoder(ch.PostID),
			Value: sarama.ByteEncoder(value)}
		telemetry.InjectSpan(ch.Trace, msg)
		// Change notifications are hints for gateways (they also reconcile with the read
		// model): the projection must not wait for them, so one that finds the queue full
		// (Kafka down for a while) is dropped and counted.
		select {
		case queue <- msg:
		default:
			c.metrics.changeErrors.Inc()
		}
	}
}

// deadLetter parks m in the dead-letter topic with the reason and its original headers, retrying
// until it is acknowledged or ctx ends (a message must not be skipped without being parked).
func (c *Consumer) deadLetter(ctx context.Context, m *sarama.ConsumerMessage, reason error) error {
	headers := make([]sarama.RecordHeader, 0, len(m.Headers)+4)
	for _, h := range m.Headers {
		if h != nil {
			headers = append(headers, *h)
		}
	}
	headers = append(headers,
		sarama.RecordHeader{Key: []byte(HeaderDeadReason), Value: []byte(reason.Error())},
		sarama.RecordHeader{Key: []byte(HeaderDeadTopic), Value: []byte(m.Topic)},
		sarama.RecordHeader{Key: []byte(HeaderDeadPartition), Value: []byte(strconv.Itoa(int(m.Partition)))},
		sarama.RecordHeader{Key: []byte(HeaderDeadOffset), Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)
	msg := &sarama.ProducerMessage{Topic: c.deadTopic, Key: sarama.ByteEncoder(m.Key),
		Value: sarama.ByteEncoder(m.Value), Headers: headers}
	wait := retry.NewBackoff(5 * time.Second)
	for {
		_, _, err := c.producer.SendMessage(msg)
		if err == nil {
			break
		}
		c.log.Warn("dead-letter publish failed; retrying", "offset", m.Offset, "err", err)
		if !retry.Sleep(ctx, wait.Next()) {
			return ctx.Err()
		}
	}
	c.metrics.dead.Inc()
	c.log.Error("event dead-lettered", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
		"reason", reason)
	return nil
}

func events(items []item) []write.Event {
	evs := make([]write.Event, len(items))
	for i, it := range items {
		evs[i] = it.ev
	}
	return evs
}

// metrics are the consumer's Prometheus instruments.
type metrics struct {
	applied      prometheus.Counter
	dead         prometheus.Counter
	changeErrors prometheus.Counter
	batch        prometheus.Histogram
	lag          *prometheus.GaugeVec
}

func newMetrics() *metrics {
	return &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "postgate_projector_events_applied_total",
			Help: "Events applied to the read model from Kafka (duplicates included)."}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{Name: "postgate_projector_dead_letters_total",
			Help: "Events parked in the dead-letter topic."}),
		changeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "postgate_projector_change_publish_errors_total",
			Help: "Failed publishes of change notifications."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "postgate_projector_batch_duration_seconds",
			Help:    "Time from receiving a batch to its commit in the read model.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "postgate_projector_lag_messages",
			Help: "Messages behind the partition's high-water mark after the last batch."}, []string{"partition"}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, col := range []prometheus.Collector{m.applied, m.dead, m.changeErrors, m.batch, m.lag} {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("register projector metrics: %w", err)
		}
	}
	return nil
}
