package kafka

import (
	"encoding/json"
	"log/slog"

	"github.com/IBM/sarama"

	"github.com/postgate/postgate/internal/telemetry"
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
// consumer group, so that every gateway instance sees every change committed from now on. A
// broker restart resumes from the newest offset (changes in between are missed; gateways
// reconcile subscribed posts with the read model).
type ChangeFollower struct {
	*wkafka.Tailer
}

// NewChangeFollower returns a follower of topic (wkafka.DefaultChangesTopic when "") that calls
// fn with the changes of each message, from one goroutine per partition.
func NewChangeFollower(brokers []string, topic string, fn func([]read.Change)) *ChangeFollower {
	if topic == "" {
		topic = wkafka.DefaultChangesTopic
	}
	log := slog.Default()
	return &ChangeFollower{Tailer: wkafka.NewTailer(brokers, topic, func(m *sarama.ConsumerMessage) {
		var cm changeMessage
		if err := json.Unmarshal(m.Value, &cm); err != nil {
			log.Warn("undecodable change", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
		ch := cm.change()
		ch.Trace = telemetry.Extract(m)
		fn([]read.Change{ch})
	}, log)}
}
