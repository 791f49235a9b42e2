package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/write"
)

// Tailer follows every partition of a topic from its newest offset, without a consumer group,
// and hands each message to a function (from one goroutine per partition). While the brokers
// cannot be reached it retries; after a reconnect it resumes from the newest offset, so messages
// in between are missed: it is for hints that have another way to be made good.
type Tailer struct {
	brokers []string
	topic   string
	fn      func(*sarama.ConsumerMessage)
	log     *slog.Logger
	ready   chan struct{}
	once    sync.Once
	recheck time.Duration // how often the partition count is checked
}

// NewTailer returns a Tailer of topic that calls fn for each message.
func NewTailer(brokers []string, topic string, fn func(*sarama.ConsumerMessage), log *slog.Logger) *Tailer {
	if log == nil {
		log = slog.Default()
	}
	return &Tailer{brokers: brokers, topic: topic, fn: fn, log: log, ready: make(chan struct{}), recheck: 30 * time.Second}
}

// Ready is closed once every partition is being consumed, so that messages produced after it are seen.
func (t *Tailer) Ready() <-chan struct{} { return t.ready }

// Run follows the topic until ctx ends, then returns nil.
func (t *Tailer) Run(ctx context.Context) error {
	wait := retry.NewBackoff(5 * time.Second)
	for ctx.Err() == nil {
		err := t.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		t.log.Warn("kafka tail", "topic", t.topic, "err", err)
		if !retry.Sleep(ctx, wait.Next()) {
			break
		}
	}
	return nil
}

func (t *Tailer) follow(ctx context.Context) error {
	cfg := NewSaramaConfig()
	cfg.Consumer.Return.Errors = true
	client, err := sarama.NewClient(t.brokers, cfg)
	if err != nil {
		return fmt.Errorf("new client of %s: %w", t.topic, err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return fmt.Errorf("new consumer of %s: %w", t.topic, err)
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(t.topic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", t.topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, len(parts))
	var wg sync.WaitGroup
	// Whatever ends follow (a partition that fails to start or closes, or ctx), the partition
	// goroutines already running must stop before it returns: cancel first, then wait.
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(t.topic, p, sarama.OffsetNewest)
		if err != nil {
			return fmt.Errorf("consume %s/%d: %w", t.topic, p, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pc.AsyncClose()
			perrs := pc.Errors()
			for {
				select {
				case <-ctx.Done():
					return
				case m, ok := <-pc.Messages():
					if !ok {
						errs <- fmt.Errorf("partition %d closed", p)
						return
					}
					t.fn(m)
				case err, ok := <-perrs:
					if !ok {
						perrs = nil
						continue
					}
					t.log.Warn("kafka tail partition", "topic", t.topic, "partition", p, "err", err)
				}
			}
		}()
	}
	t.once.Do(func() { close(t.ready) })
	// Partitions added to the topic later are picked up by starting over (from the newest offsets).
	check := time.NewTicker(t.recheck)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case <-check.C:
			if client.RefreshMetadata(t.topic) != nil {
				continue // a broker restart: the partition consumers report it themselves
			}
			if now, err := client.Partitions(t.topic); err == nil && len(now) != len(parts) {
				return fmt.Errorf("%s now has %d partitions, was %d", t.topic, len(now), len(parts))
			}
		}
	}
}

// NewTopicConfirmer returns a Tailer of the events topic that confirms to c every position it
// sees there. It lets a relay in its own process skip what the gateways' fast paths published:
// a message the tailer reads has been acknowledged by every in-sync replica, so the confirmation
// is true; one it misses (before it started, or during a reconnect) only costs a duplicate.
func NewTopicConfirmer(brokers []string, topic string, c Confirmer, log *slog.Logger) *Tailer {
	return NewTailer(brokers, topic, func(m *sarama.ConsumerMessage) {
		for _, h := range m.Headers {
			if string(h.Key) == HeaderPosition {
				if pos, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil && pos > 0 {
					c.Confirm([]write.Event{{Position: pos}})
				}
				return
			}
		}
	}, log)
}
