package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/kafka"
	"github.com/postgate/postgate/write/sqlite"
)

var quiet = slog.New(slog.DiscardHandler)

// startBroker starts an embedded broker in dir on addr and closes it when the test ends.
func startBroker(tb testing.TB, dir, addr string) *kafka.Broker {
	tb.Helper()
	b, err := kafka.StartBroker(dir, addr, 4)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

func openStore(tb testing.TB) *sqlite.EventStore {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "events.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func newPublisher(tb testing.TB, addrs []string) *kafka.Publisher {
	tb.Helper()
	cfg := kafka.NewSaramaConfig()
	cfg.Producer.Retry.Backoff = 50 * time.Millisecond
	p, err := kafka.NewPublisher(addrs, kafka.WithSaramaConfig(cfg))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// runRelay runs r until the test ends.
func runRelay(tb testing.TB, r *kafka.Relay) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
}

// likes stores n likes by distinct users over posts, returning the store's head.
func likes(tb testing.TB, store write.EventStore, posts, n int) int64 {
	tb.Helper()
	ctx := context.Background()
	h := write.NewHandler(store)
	ids := make([]string, posts)
	for i := range ids {
		p, err := h.CreatePost(ctx, "author", fmt.Sprintf("post %d", i), "")
		if err != nil {
			tb.Fatal(err)
		}
		ids[i] = p.ID
	}
	for i := range n {
		if _, err := h.LikePost(ctx, fmt.Sprintf("user%d", i), ids[i%posts]); err != nil {
			tb.Fatal(err)
		}
	}
	head, err := store.Head(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return head
}

// topicEvents reads every message of topic until want distinct positions are seen or the
// deadline passes, and returns how often each position was seen.
func topicEvents(tb testing.TB, addrs []string, topic string, want int, within time.Duration) map[int64]int {
	tb.Helper()
	consumer, err := sarama.NewConsumer(addrs, kafka.NewSaramaConfig())
	if err != nil {
		tb.Fatal(err)
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(topic)
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int64]int{}
	msgs := make(chan *sarama.ConsumerMessage)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			tb.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				select {
				case msgs <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	keys := map[string]int32{}
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= want {
			// Give duplicates that are already in the topic a moment to show up.
			drain := time.After(200 * time.Millisecond)
			for {
				select {
				case m := <-msgs:
					var e write.Event
					if err := json.Unmarshal(m.Value, &e); err != nil {
						tb.Fatal(err)
					}
					seen[e.Position]++
				case <-drain:
					return seen
				}
			}
		}
		select {
		case m := <-msgs:
			var e write.Event
			if err := json.Unmarshal(m.Value, &e); err != nil {
				tb.Fatalf("message at %d/%d is not an event: %v", m.Partition, m.Offset, err)
			}
			if string(m.Key) != e.PostID {
				tb.Fatalf("event %s has key %q, want its post id %q", e.ID, m.Key, e.PostID)
			}
			if p, ok := keys[e.PostID]; ok && p != m.Partition {
				tb.Fatalf("post %s is on partitions %d and %d", e.PostID, p, m.Partition)
			}
			keys[e.PostID] = m.Partition
			if got := header(m, kafka.HeaderType); got != e.Type {
				tb.Fatalf("event %s: type header %q, want %q", e.ID, got, e.Type)
			}
			if got := header(m, kafka.HeaderSchema); got != fmt.Sprint(e.Schema) {
				tb.Fatalf("event %s: schema header %q, want %d", e.ID, got, e.Schema)
			}
			mu.Lock()
			seen[e.Position]++
			mu.Unlock()
		case <-ctx.Done():
			tb.Fatalf("saw %d of %d events on %s within %v", len(seen), want, topic, within)
		}
	}
}

func header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRelayPublishesEventsTheFastPathNeverSaw(t *testing.T) {
	// A crash between append and publish: the events are only in the store.
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	store := openStore(t)
	head := likes(t, store, 5, 200)
	relay := kafka.NewRelay(store, newPublisher(t, b.Addrs()), kafka.WithRelayLogger(quiet))
	runRelay(t, relay)
	seen := topicEvents(t, b.Addrs(), kafka.DefaultEventsTopic, int(head), 30*time.Second)
	for p := int64(1); p <= head; p++ {
		if seen[p] == 0 {
			t.Fatalf("position %d never published", p)
		}
	}
	waitFor(t, 10*time.Second, "the checkpoint to reach the head", func() bool {
		cp, err := store.Checkpoint(context.Background(), kafka.DefaultCheckpoint)
		return err == nil && cp == head
	})
}

func TestFastPathConfirmationsSpareTheRelayAPublish(t *testing.T) {
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	store := openStore(t)
	pub := newPublisher(t, b.Addrs())
	relay := kafka.NewRelay(store, pub, kafka.WithRelayLogger(quiet), kafka.WithGrace(5*time.Second))
	fast := kafka.NewPublishingStore(store, pub, kafka.WithConfirmer(relay), kafka.WithStoreLogger(quiet))
	runRelay(t, relay)
	head := likes(t, fast, 3, 100)
	waitFor(t, 10*time.Second, "the relay checkpoint to pass confirmed events", func() bool {
		return relay.Position() == head
	})
	seen := topicEvents(t, b.Addrs(), kafka.DefaultEventsTopic, int(head), 30*time.Second)
	for p := int64(1); p <= head; p++ {
		if seen[p] != 1 {
			t.Fatalf("position %d published %d times, want once", p, seen[p])
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(relay)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "postgate_relay_published_events_total" {
			if got := f.GetMetric()[0].GetCounter().GetValue(); got != 0 {
				t.Errorf("the relay published %v events itself, want 0", got)
			}
			return
		}
	}
	t.Error("the relay exports no published counter")
}

// publishedByRelay returns how many events the relay had to publish itself.
func publishedByRelay(tb testing.TB, relay *kafka.Relay) float64 {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(relay)
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "postgate_relay_published_events_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatal("the relay exports no published counter")
	return 0
}

// TestTopicConfirmationsSpareARelayInAnotherProcess: a gateway's fast path and a relay that share
// nothing but the store and Kafka. The relay learns from the topic what the fast path published.
func TestTopicConfirmationsSpareARelayInAnotherProcess(t *testing.T) {
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	store := openStore(t)
	relay := kafka.NewRelay(store, newPublisher(t, b.Addrs()), kafka.WithRelayLogger(quiet), kafka.WithGrace(5*time.Second))
	confirmer := kafka.NewTopicConfirmer(b.Addrs(), kafka.DefaultEventsTopic, relay, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); confirmer.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-confirmer.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the confirmer did not start")
	}
	runRelay(t, relay)
	gateway := kafka.NewPublishingStore(store, newPublisher(t, b.Addrs()), kafka.WithStoreLogger(quiet)) // no in-process confirmer
	head := likes(t, gateway, 3, 60)
	waitFor(t, 15*time.Second, "the relay checkpoint to pass events confirmed on the topic", func() bool {
		return relay.Position() == head
	})
	if got := publishedByRelay(t, relay); got != 0 {
		t.Errorf("the relay published %v events itself, want 0", got)
	}
	seen := topicEvents(t, b.Addrs(), kafka.DefaultEventsTopic, int(head), 30*time.Second)
	for p := int64(1); p <= head; p++ {
		if seen[p] != 1 {
			t.Fatalf("position %d published %d times, want once", p, seen[p])
		}
	}
}

func TestTwoRelaysLoseNothing(t *testing.T) {
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	store := openStore(t)
	for range 2 {
		runRelay(t, kafka.NewRelay(store, newPublisher(t, b.Addrs()), kafka.WithRelayLogger(quiet),
			kafka.WithBatch(7), kafka.WithGrace(0)))
	}
	head := likes(t, store, 4, 150)
	seen := topicEvents(t, b.Addrs(), kafka.DefaultEventsTopic, int(head), 30*time.Second)
	for p := int64(1); p <= head; p++ {
		if seen[p] == 0 {
			t.Fatalf("position %d never published", p)
		}
	}
}

func TestKafkaDownThenUpPublishesEverything(t *testing.T) {
	dir := t.TempDir()
	first, err := kafka.StartBroker(dir, "127.0.0.1:0", 4)
	if err != nil {
		t.Fatal(err)
	}
	addrs := first.Addrs()
	store := openStore(t)
	pub := newPublisher(t, addrs)
	relay := kafka.NewRelay(store, pub, kafka.WithRelayLogger(quiet), kafka.WithGrace(500*time.Millisecond),
		kafka.WithMaxBackoff(500*time.Millisecond))
	fast := kafka.NewPublishingStore(store, pub, kafka.WithConfirmer(relay), kafka.WithStoreLogger(quiet),
		kafka.WithPublishTimeout(300*time.Millisecond))
	runRelay(t, relay)
	before := likes(t, fast, 2, 20)
	waitFor(t, 10*time.Second, "the first events to be relayed", func() bool { return relay.Position() == before })

	first.Close()
	start := time.Now()
	head := likes(t, fast, 2, 30)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("32 mutations took %v with Kafka down: the fast path must not hold them up", took)
	}
	failures := func() float64 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(relay)
		fams, _ := reg.Gather()
		for _, f := range fams {
			if f.GetName() == "postgate_relay_failures_total" {
				return f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	failedBefore := failures()
	waitFor(t, 20*time.Second, "the relay to fail against the closed broker", func() bool { return failures() > failedBefore })
	if relay.Position() == head {
		t.Fatal("relay claims events acknowledged while the broker was down")
	}

	second := startBroker(t, dir, addrs[0])
	waitFor(t, 60*time.Second, "the relay to catch up after the broker came back", func() bool {
		return relay.Position() == head
	})
	seen := topicEvents(t, second.Addrs(), kafka.DefaultEventsTopic, int(head), 30*time.Second)
	for p := int64(1); p <= head; p++ {
		if seen[p] == 0 {
			t.Fatalf("position %d never published", p)
		}
	}
}

func TestBrokerKeepsDataAndOffsetsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := kafka.StartBroker(dir, "127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	head := likes(t, store, 2, 10)
	evs, err := store.ReadAll(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, b.Addrs())
	if err := pub.Publish(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	cfg := kafka.NewSaramaConfig()
	group, err := sarama.NewConsumerGroup(b.Addrs(), "restart-test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	committed := &commitOnce{cancel: cancel}
	if err := group.Consume(ctx, []string{kafka.DefaultEventsTopic}, committed); err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	group.Close()
	if !committed.done {
		t.Fatal("the consumer group never got partition 0")
	}
	b.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0") // a fresh port: the state must come from the directory
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b2 := startBroker(t, dir, addr)
	seen := topicEvents(t, b2.Addrs(), kafka.DefaultEventsTopic, int(head), 20*time.Second)
	if len(seen) != int(head) {
		t.Fatalf("after restart the topic holds %d events, want %d", len(seen), head)
	}
	admin, err := sarama.NewClusterAdmin(b2.Addrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	offs, err := admin.ListConsumerGroupOffsets("restart-test", map[string][]int32{kafka.DefaultEventsTopic: {0}})
	if err != nil {
		t.Fatal(err)
	}
	if got := offs.GetBlock(kafka.DefaultEventsTopic, 0).Offset; got != 3 {
		t.Fatalf("committed offset after restart is %d, want 3", got)
	}
}

func TestEnsureTopicsToleratesExistingTopics(t *testing.T) {
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tc := kafka.TopicsConfig{Events: "custom.events", Changes: "custom.changes", Partitions: 3}
	for range 2 {
		if err := kafka.EnsureTopics(ctx, b.Addrs(), tc); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := sarama.NewClusterAdmin(b.Addrs(), kafka.NewSaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"custom.events", "custom.events.dlq", "custom.changes"} {
		if topics[name].NumPartitions != 3 {
			t.Errorf("topic %s has %d partitions, want 3", name, topics[name].NumPartitions)
		}
	}
}

// commitOnce commits offset 3 of partition 0 of the events topic, then ends the session.
type commitOnce struct {
	cancel context.CancelFunc
	done   bool
}

func (c *commitOnce) Setup(sess sarama.ConsumerGroupSession) error {
	sess.MarkOffset(kafka.DefaultEventsTopic, 0, 3, "")
	sess.Commit()
	c.done = true
	c.cancel()
	return nil
}
func (c *commitOnce) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *commitOnce) ConsumeClaim(sarama.ConsumerGroupSession, sarama.ConsumerGroupClaim) error {
	return nil
}

func TestPublisherStartsWhileKafkaIsDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := kafka.NewSaramaConfig()
	cfg.Net.DialTimeout = time.Second
	pub, err := kafka.NewPublisher([]string{addr}, kafka.WithSaramaConfig(cfg))
	if err != nil {
		t.Fatalf("a publisher must start without Kafka: %v", err)
	}
	defer pub.Close()
	ev, err := write.NewEvent("ev-1", "post-1", "alice", time.Now(), write.PostCreated{Author: "alice", Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	ev.Stream, ev.Version, ev.Position = write.PostStream("post-1"), 1, 1
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = pub.Publish(ctx, []write.Event{ev})
	cancel()
	if err == nil {
		t.Fatal("publish succeeded with no broker")
	}
	b := startBroker(t, t.TempDir(), addr)
	waitFor(t, 30*time.Second, "a publish to succeed once the broker is up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pub.Publish(ctx, []write.Event{ev}) == nil
	})
	if seen := topicEvents(t, b.Addrs(), kafka.DefaultEventsTopic, 1, 10*time.Second); seen[1] == 0 {
		t.Fatal("the event is not on the topic")
	}
}

func TestARestartedRelayResumesFromItsCheckpoint(t *testing.T) {
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	store := openStore(t)
	head := likes(t, store, 2, 20)
	first := kafka.NewRelay(store, newPublisher(t, b.Addrs()), kafka.WithRelayLogger(quiet), kafka.WithGrace(0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); first.Run(ctx) }()
	waitFor(t, 20*time.Second, "the first relay to catch up", func() bool { return first.Position() == head })
	cancel()
	<-done

	second := kafka.NewRelay(store, newPublisher(t, b.Addrs()), kafka.WithRelayLogger(quiet), kafka.WithGrace(0))
	runRelay(t, second)
	waitFor(t, 20*time.Second, "the second relay to load the checkpoint", func() bool { return second.Position() == head })
	more := likes(t, store, 1, 5)
	waitFor(t, 20*time.Second, "the second relay to publish new events", func() bool { return second.Position() == more })
	seen := topicEvents(t, b.Addrs(), kafka.DefaultEventsTopic, int(more), 20*time.Second)
	for p := int64(1); p <= more; p++ {
		if seen[p] != 1 {
			t.Fatalf("position %d published %d times, want once", p, seen[p])
		}
	}
}
