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
