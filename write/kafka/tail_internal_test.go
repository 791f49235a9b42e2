package kafka

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestTailerRetriesAfterAPartitionFailsToStart: when one partition cannot be consumed yet (a leader
// election, say) after others started, the tailer must stop those and retry, not hang.
func TestTailerRetriesAfterAPartitionFailsToStart(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "tailed"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var faults atomic.Int32
	c.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.ListOffsetsRequest)
		if faults.Load() >= 3 || len(r.Topics) != 1 || len(r.Topics[0].Partitions) != 1 || r.Topics[0].Partitions[0].Partition != 1 {
			return nil, nil, false
		}
		faults.Add(1)
		resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
		rt := kmsg.NewListOffsetsResponseTopic()
		rt.Topic = r.Topics[0].Topic
		rp := kmsg.NewListOffsetsResponseTopicPartition()
		rp.Partition = 1
		rp.ErrorCode = 6 // NOT_LEADER_FOR_PARTITION
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	tl := NewTailer(c.ListenAddrs(), "tailed", func(*sarama.ConsumerMessage) {}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-tl.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("the tailer never became ready (faults injected: %d)", faults.Load())
	}
	if faults.Load() == 0 {
		t.Fatal("no fault was injected: the test proves nothing")
	}
}

// TestTailerFollowsPartitionsAddedLater: partitions added to a topic while a tailer runs are
// followed too.
func TestTailerFollowsPartitionsAddedLater(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "growing"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan int32, 16)
	tl := NewTailer(c.ListenAddrs(), "growing", func(m *sarama.ConsumerMessage) { got <- m.Partition }, slog.New(slog.DiscardHandler))
	tl.recheck = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-tl.Ready()

	admin, err := sarama.NewClusterAdmin(c.ListenAddrs(), NewSaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.CreatePartitions("growing", 2, nil, false); err != nil {
		t.Fatal(err)
	}
	cfg := NewSaramaConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer(c.ListenAddrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	deadline := time.After(20 * time.Second)
	for {
		// Sent again until seen: the tailer starts the new partition from its newest offset.
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "growing", Partition: 1, Value: sarama.StringEncoder("x")}); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if p == 1 {
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("a message on the added partition never reached the tailer")
		}
	}
}
