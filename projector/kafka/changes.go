package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/read"
	wkafka "github.com/postgate/postgate/write/kafka"
)

// changeMessage is the JSON of a read.Change on the changes topic.
type changeMessage struct {
	PostID      string `json:"postId"`
	Version     int64  `json:"version"`
	LikeVersion int64  `json:"likeVersion"`
	Likes       int64  `json:"likes"`
	Created     bool   `json:"created,omitempty"`
	Deleted     bool   `json:"deleted,omitempty"`
	Content     bool   `json:"content,omitempty"`
	LikesChange bool   `json:"likesChange,omitempty"`

	LikeSteps []read.LikeStep `json:"likeSteps,omitempty"`
}

func fromChange(c read.Change) changeMessage {
	return changeMessage{PostID: c.PostID, Version: c.Version, LikeVersion: c.LikeVersion, Likes: c.Likes,
		Created: c.Created, Deleted: c.Deleted, Content: c.Content, LikesChange: c.LikesChange, LikeSteps: c.LikeSteps}
}

func (m changeMessage) change() read.Change {
	return read.Change{PostID: m.PostID, Version: m.Version, LikeVersion: m.LikeVersion, Likes: m.Likes,
		Created: m.Created, Deleted: m.Deleted, Content: m.Content, LikesChange: m.LikesChange, LikeSteps: m.LikeSteps}
}

// ChangeFollower follows the changes topic from its newest offset on every partition, without a
// consumer group, so that every gateway instance sees every change committed from now on. It is
// for gateways that run without a projector in their process.
type ChangeFollower struct {
	brokers []string
	topic   string
	fn      func([]read.Change)
	log     *slog.Logger
	ready   chan struct{}
}

// NewChangeFollower returns a follower of topic (wkafka.DefaultChangesTopic when "") that calls
// fn with the changes of each message, from one goroutine per partition.
func NewChangeFollower(brokers []string, topic string, fn func([]read.Change)) *ChangeFollower {
	if topic == "" {
		topic = wkafka.DefaultChangesTopic
	}
	return &ChangeFollower{brokers: brokers, topic: topic, fn: fn, log: slog.Default(), ready: make(chan struct{})}
}

// Ready is closed once the follower consumes every partition, so that changes committed after
// it are seen.
func (f *ChangeFollower) Ready() <-chan struct{} { return f.ready }

// Run follows the topic until ctx ends, then returns nil. While the brokers cannot be reached
// it retries; a broker restart resumes from the newest offset (changes in between are missed,
// which a gateway treats like a reconnect: it re-reads the read model).
func (f *ChangeFollower) Run(ctx context.Context) error {
	wait := retry.NewBackoff(5 * time.Second)
	var once sync.Once
	for ctx.Err() == nil {
		err := f.follow(ctx, func() { once.Do(func() { close(f.ready) }) })
		if ctx.Err() != nil {
			break
		}
		f.log.Warn("change follower", "err", err)
		if !retry.Sleep(ctx, wait.Next()) {
			break
		}
	}
	return nil
}

func (f *ChangeFollower) follow(ctx context.Context, ready func()) error {
	cfg := wkafka.NewSaramaConfig()
	cfg.Consumer.Return.Errors = true
	consumer, err := sarama.NewConsumer(f.brokers, cfg)
	if err != nil {
		return fmt.Errorf("new change consumer: %w", err)
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(f.topic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", f.topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(parts))
	var wg sync.WaitGroup
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(f.topic, p, sarama.OffsetNewest)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("consume %s/%d: %w", f.topic, p, err)
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
					var cm changeMessage
					if err := json.Unmarshal(m.Value, &cm); err != nil {
						f.log.Warn("undecodable change", "partition", p, "offset", m.Offset, "err", err)
						continue
					}
					f.fn([]read.Change{cm.change()})
				case err, ok := <-perrs:
					if !ok {
						perrs = nil
						continue
					}
					f.log.Warn("change follower partition", "partition", p, "err", err)
				}
			}
		}()
	}
	ready()
	var ferr error
	select {
	case <-ctx.Done():
	case ferr = <-errs:
	}
	cancel()
	wg.Wait()
	return ferr
}
