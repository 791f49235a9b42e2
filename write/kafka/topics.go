// Package kafka publishes the event store's events to Kafka: an idempotent Publisher, a
// publishing decorator of write.EventStore (the fast path), a Relay that publishes from the
// store's checkpoint (the safety net against the dual write), topic creation, and an embedded
// single-node broker (kfake) for development and tests.
//
// The wire format is a public contract: one message per event on the events topic, keyed by
// the post id, whose value is the JSON of write.Event and whose headers repeat the event type
// (HeaderType) and schema version (HeaderSchema).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// Default topic names. The dead-letter topic is always the events topic plus DeadLetterSuffix.
const (
	DefaultEventsTopic  = "postgate.post-events"
	DefaultChangesTopic = "postgate.post-changes"
	DeadLetterSuffix    = ".dlq"
	DefaultPartitions   = 8
)

// Header names carried by every event message, so that consumers can route or skip a message
// without decoding its value.
const (
	HeaderType     = "postgate-type"
	HeaderSchema   = "postgate-schema"
	HeaderEventID  = "postgate-event-id"
	HeaderPosition = "postgate-position"
)

// DeadLetterTopic returns the dead-letter topic of an events topic.
func DeadLetterTopic(events string) string { return events + DeadLetterSuffix }

// TopicsConfig names the topics postgate uses and how they are laid out. Zero values mean the
// defaults: DefaultEventsTopic, DefaultChangesTopic, DefaultPartitions and a replication factor of 1.
type TopicsConfig struct {
	Events            string
	Changes           string
	Partitions        int32
	ReplicationFactor int16
}

func (c TopicsConfig) withDefaults() TopicsConfig {
	if c.Events == "" {
		c.Events = DefaultEventsTopic
	}
	if c.Changes == "" {
		c.Changes = DefaultChangesTopic
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor <= 0 {
		c.ReplicationFactor = 1
	}
	return c
}

// NewSaramaConfig returns the sarama configuration postgate's clients share: a protocol version
// every broker we run against supports, a client id that shows up in broker logs, and no topic
// auto-creation from metadata requests.
func NewSaramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.ClientID = "postgate"
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	// Topics are made on purpose (EnsureTopics), with the partition count the projectors scale
	// to; a metadata request must never make one with the broker's defaults instead.
	cfg.Metadata.AllowAutoTopicCreation = false
	return cfg
}

// EnsureTopics creates the events topic, its dead-letter topic and the changes topic, tolerating
// topics that already exist (their partition count is left alone). While the brokers cannot be
// reached it retries until ctx ends. It returns ctx's error, or the first error that is neither
// "already exists" nor a connection failure.
func EnsureTopics(ctx context.Context, brokers []string, tc TopicsConfig) error {
	tc = tc.withDefaults()
	backoff := 100 * time.Millisecond
	for {
		err := ensureTopics(brokers, tc)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sarama.ErrOutOfBrokers) && !errors.Is(err, sarama.ErrNotController) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure topics: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func ensureTopics(brokers []string, tc TopicsConfig) error {
	admin, err := sarama.NewClusterAdmin(brokers, NewSaramaConfig())
	if err != nil {
		return fmt.Errorf("connect cluster admin: %w", err)
	}
	defer admin.Close()
	for _, name := range []string{tc.Events, DeadLetterTopic(tc.Events), tc.Changes} {
		detail := &sarama.TopicDetail{NumPartitions: tc.Partitions, ReplicationFactor: tc.ReplicationFactor}
		if err := admin.CreateTopic(name, detail, false); err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	return nil
}
