package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/IBM/sarama"

	"github.com/postgate/postgate/write"
	wkafka "github.com/postgate/postgate/write/kafka"
)

// DeadLetter is one parked message of a dead-letter topic.
type DeadLetter struct {
	Partition int32
	Offset    int64
	Reason    string // HeaderDeadReason
	From      string // topic, partition and offset it was parked from
	Event     write.Event
	Decoded   bool   // the value is an event envelope; Event holds it
	Raw       []byte // the value as parked
}

// ReadDeadLetters returns every message of the dead-letter topic of events (wkafka's default
// when ""), partition by partition from the oldest offset to the high-water mark as of the call,
// in partition and offset order. It reads without a consumer group and commits nothing. Errors:
// the broker's (an unknown topic among them).
func ReadDeadLetters(ctx context.Context, brokers []string, events string) ([]DeadLetter, error) {
	if events == "" {
		events = wkafka.DefaultEventsTopic
	}
	topic := wkafka.DeadLetterTopic(events)
	client, err := sarama.NewClient(brokers, wkafka.NewSaramaConfig())
	if err != nil {
		return nil, fmt.Errorf("dead letters: connect: %w", err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("dead letters: partitions of %s: %w", topic, err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	defer consumer.Close()
	var out []DeadLetter
	for _, p := range parts {
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("dead letters: partition %d: %w", p, err)
		}
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("dead letters: partition %d: %w", p, err)
		}
		if newest <= oldest {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, oldest)
		if err != nil {
			return nil, fmt.Errorf("dead letters: partition %d: %w", p, err)
		}
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				out = append(out, deadLetter(m))
				done = m.Offset >= newest-1
			case err := <-pc.Errors():
				pc.Close()
				return nil, fmt.Errorf("dead letters: partition %d: %w", p, err)
			case <-ctx.Done():
				pc.Close()
				return nil, ctx.Err()
			}
		}
		pc.Close()
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Partition < out[j].Partition || out[i].Partition == out[j].Partition && out[i].Offset < out[j].Offset
	})
	return out, nil
}

func deadLetter(m *sarama.ConsumerMessage) DeadLetter {
	d := DeadLetter{Partition: m.Partition, Offset: m.Offset, Raw: m.Value}
	var topic, part, off string
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		switch string(h.Key) {
		case HeaderDeadReason:
			d.Reason = string(h.Value)
		case HeaderDeadTopic:
			topic = string(h.Value)
		case HeaderDeadPartition:
			part = string(h.Value)
		case HeaderDeadOffset:
			off = string(h.Value)
		}
	}
	if topic != "" {
		d.From = topic + "/" + part + "@" + off
	}
	if err := json.Unmarshal(m.Value, &d.Event); err == nil && d.Event.ID != "" && d.Event.Stream != "" && d.Event.Version > 0 {
		d.Decoded = true
	}
	return d
}

// String is one line for `postgate dlq list`.
func (d DeadLetter) String() string {
	what := "undecodable message (" + strconv.Itoa(len(d.Raw)) + " bytes)"
	if d.Decoded {
		e := d.Event
		what = fmt.Sprintf("event %s %s schema %d, post %s, stream %s v%d", e.ID, e.Type, e.Schema, e.PostID, e.Stream, e.Version)
	}
	return fmt.Sprintf("%d@%d %s; from %s; reason: %s", d.Partition, d.Offset, what, d.From, d.Reason)
}
