package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/postgate/postgate/projector"
	"github.com/postgate/postgate/read"
	rsqlite "github.com/postgate/postgate/read/sqlite"
	"github.com/postgate/postgate/write"
	wkafka "github.com/postgate/postgate/write/kafka"
	wsqlite "github.com/postgate/postgate/write/sqlite"
)

var quiet = slog.New(slog.DiscardHandler)

// stack is the embedded pipeline: SQLite event store, fast path and relay into kfake, and a
// SQLite read model behind the projector.
type stack struct {
	dir    string
	addr   string
	broker *wkafka.Broker
	store  *wsqlite.EventStore
	model  *rsqlite.Model
	proj   *projector.Projector
	pub    *wkafka.Publisher
	relay  *wkafka.Relay
	fast   *wkafka.PublishingStore
	h      *write.Handler // appends through the fast path
	raw    *write.Handler // appends to the store only, as if the process died before publishing
}

func newStack(tb testing.TB) *stack {
	tb.Helper()
	ctx := context.Background()
	s := &stack{dir: tb.TempDir()}
	b, err := wkafka.StartBroker(s.dir, "127.0.0.1:0", 4)
	if err != nil {
		tb.Fatal(err)
	}
	s.broker, s.addr = b, b.Addrs()[0]
	tb.Cleanup(func() { s.broker.Close() })
	if s.store, err = wsqlite.Open(ctx, filepath.Join(s.dir, "events.db")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.store.Close() })
	if s.model, err = rsqlite.Open(ctx, filepath.Join(s.dir, "read.db")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.model.Close() })
	if err := s.model.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	s.proj = projector.New(s.model, s.store)
	cfg := wkafka.NewSaramaConfig()
	cfg.Producer.Retry.Backoff = 50 * time.Millisecond
	if s.pub, err = wkafka.NewPublisher(s.addrs(), wkafka.WithSaramaConfig(cfg)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.pub.Close() })
	s.relay = wkafka.NewRelay(s.store, s.pub, wkafka.WithRelayLogger(quiet), wkafka.WithGrace(time.Second),
		wkafka.WithMaxBackoff(500*time.Millisecond))
	fast := wkafka.NewPublishingStore(s.store, s.pub, wkafka.WithConfirmer(s.relay), wkafka.WithStoreLogger(quiet),
		wkafka.WithPublishTimeout(500*time.Millisecond), wkafka.WithCooldown(time.Second))
	s.fast = fast
	s.h = write.NewHandler(fast)
	s.raw = write.NewHandler(s.store)
	run(tb, s.relay.Run)
	return s
}

func (s *stack) addrs() []string { return []string{s.addr} }

// restartBroker closes the broker and starts it again on the same address and data.
func (s *stack) restartBroker(tb testing.TB) {
	tb.Helper()
	s.broker.Close()
	b, err := wkafka.StartBroker(s.dir, s.addr, 4)
	if err != nil {
		tb.Fatal(err)
	}
	s.broker = b
}

func (s *stack) consumer(tb testing.TB, opts ...Option) *Consumer {
	tb.Helper()
	cfg := wkafka.NewSaramaConfig()
	cfg.Consumer.Group.Rebalance.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.Retry.Backoff = 50 * time.Millisecond
	base := []Option{WithLogger(quiet), WithBatch(200, 5*time.Millisecond), WithRetries(2, 20*time.Millisecond),
		WithConfig(cfg)}
	c, err := NewConsumer(s.addrs(), s.proj, append(base, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// run runs fn in the background; the returned stop cancels it and waits. The test's cleanup
// stops it too.
func run(tb testing.TB, fn func(context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	tb.Cleanup(stop)
	return stop
}

// waitConsistent waits until the read model equals the fold of the event store.
func (s *stack) waitConsistent(tb testing.TB, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		diffs, err := projector.Verify(ctx, s.store, s.model)
		cancel()
		if err == nil && len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				tb.Fatalf("verify: %v", err)
			}
			for i, d := range diffs {
				if i == 10 {
					tb.Errorf("... and %d more", len(diffs)-10)
					break
				}
				tb.Errorf("diff: %s", d)
			}
			tb.Fatalf("read model still differs from the event store after %v", within)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (s *stack) createPosts(tb testing.TB, h *write.Handler, n int) []string {
	tb.Helper()
	ids := make([]string, n)
	for i := range ids {
		p, err := h.CreatePost(context.Background(), "author", fmt.Sprintf("post %d", i), "")
		if err != nil {
			tb.Fatal(err)
		}
		ids[i] = p.ID
	}
	return ids
}

// likeAll has users user<from>..user<to-1> like posts round robin, with workers in parallel.
func likeAll(tb testing.TB, h *write.Handler, posts []string, from, to, workers int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < to; i += workers {
				if _, err := h.LikePost(context.Background(), fmt.Sprintf("user%d", i), posts[i%len(posts)]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// appendLikes appends one post.liked event for each of users user<from>..user<to-1> (round robin
// over posts) straight through the fast-path store, with workers in parallel: the same events as
// likeAll, without the command's reads, so that a long stream stays quick to produce.
func (s *stack) appendLikes(tb testing.TB, posts []string, from, to, workers int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < to; i += workers {
				user, post := fmt.Sprintf("user%d", i), posts[i%len(posts)]
				ev, err := write.NewEvent(fmt.Sprintf("like-%d", i), post, user, time.Now(), write.PostLiked{User: user})
				if err == nil {
					_, err = s.fast.Append(context.Background(), write.LikeStream(post, user), 0, []write.Event{ev})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func (s *stack) likes(tb testing.TB, id string) int64 {
	tb.Helper()
	p, ok, err := s.model.Post(context.Background(), id)
	if err != nil || !ok {
		tb.Fatalf("post %s: ok=%v err=%v", id, ok, err)
	}
	return p.Likes
}

func TestEventsStoredButNeverPublishedReachTheReadModel(t *testing.T) {
	s := newStack(t)
	var mu sync.Mutex
	var changes []read.Change
	run(t, s.consumer(t, WithOnChanges(func(cs []read.Change) {
		mu.Lock()
		changes = append(changes, cs...)
		mu.Unlock()
	})).Run)
	posts := s.createPosts(t, s.raw, 3)
	likeAll(t, s.raw, posts, 0, 30, 3)
	s.waitConsistent(t, 30*time.Second)
	for _, id := range posts {
		if got := s.likes(t, id); got != 10 {
			t.Errorf("post %s has %d likes, want 10", id, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) == 0 {
		t.Error("OnChanges was never called")
	}
}

func TestRedeliveryAfterACrashBeforeTheOffsetCommitCountsNoLikeTwice(t *testing.T) {
	s := newStack(t)
	posts := s.createPosts(t, s.h, 2)
	likeAll(t, s.h, posts, 0, 40, 4)

	// The first consumer applies batches and dies before marking any offset.
	var crashed atomic.Int64
	first := s.consumer(t)
	first.beforeMark = func(n int) bool { crashed.Add(int64(n)); return false }
	stop := run(t, first.Run)
	s.waitConsistent(t, 30*time.Second)
	stop()
	if crashed.Load() == 0 {
		t.Fatal("the first consumer applied nothing")
	}

	reg := prometheus.NewRegistry()
	second := s.consumer(t, WithRegistry(reg))
	run(t, second.Run)
	waitUntil(t, 30*time.Second, "the redelivered events to be applied again", func() bool {
		return counter(t, reg, "postgate_projector_events_applied_total") >= float64(crashed.Load())
	})
	s.waitConsistent(t, 10*time.Second)
	for _, id := range posts {
		if got := s.likes(t, id); got != 20 {
			t.Errorf("post %s has %d likes after redelivery, want 20", id, got)
		}
	}
}

func TestBrokerAndProjectorRestartsMidStreamLeaveTheReadModelExact(t *testing.T) {
	const total, workers = 10_000, 32
	s := newStack(t)
	stop := run(t, s.consumer(t).Run)
	posts := s.createPosts(t, s.h, 25)

	start := time.Now()
	s.appendLikes(t, posts, 0, 3_000, workers)
	s.restartBroker(t)
	s.appendLikes(t, posts, 3_000, 6_000, workers)
	stop()
	run(t, s.consumer(t).Run)
	s.appendLikes(t, posts, 6_000, total, workers)
	t.Logf("appended %d likes in %v", total, time.Since(start))

	// Wait cheaply for the counts, then compare the whole model with the fold of the store once.
	want := int64(total / len(posts))
	waitUntil(t, 90*time.Second, "every like to reach the read model", func() bool {
		for _, id := range posts {
			if p, ok, err := s.model.Post(context.Background(), id); err != nil || !ok || p.Likes < want {
				return false
			}
		}
		return true
	})
	t.Logf("projected after %v", time.Since(start))
	s.waitConsistent(t, 30*time.Second)
	t.Logf("verified after %v", time.Since(start))
	for _, id := range posts {
		if got := s.likes(t, id); got != want {
			t.Errorf("post %s has %d likes, want %d", id, got, total/len(posts))
		}
	}
}

func TestPoisonGoesToTheDeadLetterTopicAndThePartitionMovesOn(t *testing.T) {
	s := newStack(t)
	reg := prometheus.NewRegistry()
	c := s.consumer(t, WithRegistry(reg))
	run(t, c.Run)
	posts := s.createPosts(t, s.h, 1)
	post := posts[0]

	cfg := wkafka.NewSaramaConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	producer, err := sarama.NewSyncProducer(s.addrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	garbage := &sarama.ProducerMessage{Topic: wkafka.DefaultEventsTopic, Key: sarama.StringEncoder(post),
		Value:   sarama.StringEncoder("{not json"),
		Headers: []sarama.RecordHeader{{Key: []byte(wkafka.HeaderType), Value: []byte("garbage")}}}
	unknown, err := wkafka.Message(wkafka.DefaultEventsTopic, write.Event{ID: "ev-unknown", Type: "post.teleported",
		Schema: 1, PostID: post, Stream: write.PostStream(post), Version: 99, Position: 1 << 40, Actor: "mallory",
		At: time.Now().UTC(), Data: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.SendMessages([]*sarama.ProducerMessage{garbage, unknown}); err != nil {
		t.Fatal(err)
	}
	likeAll(t, s.h, posts, 0, 5, 1)

	waitUntil(t, 30*time.Second, "later likes of the same post to be applied", func() bool {
		p, ok, err := s.model.Post(context.Background(), post)
		return err == nil && ok && p.Likes == 5
	})
	dead := deadLetters(t, s.addrs(), 2)
	reasons := map[string]string{}
	for _, m := range dead {
		if string(m.Key) != post {
			t.Errorf("dead letter key %q, want %q", m.Key, post)
		}
		if header(m, HeaderDeadReason) == "" {
			t.Errorf("dead letter at %d has no reason", m.Offset)
		}
		reasons[header(m, wkafka.HeaderType)] = header(m, HeaderDeadReason)
	}
	if reasons["garbage"] == "" || reasons["post.teleported"] == "" {
		t.Errorf("dead letters lack the original headers or reasons: %v", reasons)
	}
	if got := counter(t, reg, "postgate_projector_dead_letters_total"); got != 2 {
		t.Errorf("dead-letter counter is %v, want 2", got)
	}
	s.waitConsistent(t, 10*time.Second)
}

func TestChangeFollowerSeesCommittedChanges(t *testing.T) {
	s := newStack(t)
	run(t, s.consumer(t).Run)
	got := make(chan read.Change, 100)
	f := NewChangeFollower(s.addrs(), "", func(cs []read.Change) {
		for _, c := range cs {
			got <- c
		}
	})
	run(t, f.Run)
	select {
	case <-f.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("change follower never became ready")
	}
	posts := s.createPosts(t, s.h, 1)
	likeAll(t, s.h, posts, 0, 1, 1)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case c := <-got:
			if c.PostID == posts[0] && c.Likes == 1 {
				return
			}
		case <-deadline:
			t.Fatal("no change with the like arrived")
		}
	}
}

// TestEveryChangeOfABigBatchIsAnnounced: a batch that changes many posts announces each of them on
// the changes topic (the producer's input is unbuffered: a send that must not wait needs a queue).
func TestEveryChangeOfABigBatchIsAnnounced(t *testing.T) {
	s := newStack(t)
	seen := make(chan string, 1000)
	f := NewChangeFollower(s.addrs(), "", func(cs []read.Change) {
		for _, c := range cs {
			if c.Created {
				seen <- c.PostID
			}
		}
	})
	run(t, f.Run)
	select {
	case <-f.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("change follower never became ready")
	}
	posts := s.createPosts(t, s.h, 100) // published before the consumer starts: one big batch
	run(t, s.consumer(t).Run)
	want := map[string]bool{}
	for _, id := range posts {
		want[id] = true
	}
	deadline := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case id := <-seen:
			delete(want, id)
		case <-deadline:
			t.Fatalf("%d of 100 created posts were never announced", len(want))
		}
	}
}

// deadLetters reads n messages from the dead-letter topic.
func deadLetters(tb testing.TB, addrs []string, n int) []*sarama.ConsumerMessage {
	tb.Helper()
	consumer, err := sarama.NewConsumer(addrs, wkafka.NewSaramaConfig())
	if err != nil {
		tb.Fatal(err)
	}
	defer consumer.Close()
	topic := wkafka.DeadLetterTopic(wkafka.DefaultEventsTopic)
	parts, err := consumer.Partitions(topic)
	if err != nil {
		tb.Fatal(err)
	}
	msgs := make(chan *sarama.ConsumerMessage, n)
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			tb.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				msgs <- m
			}
		}()
	}
	var out []*sarama.ConsumerMessage
	deadline := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case m := <-msgs:
			out = append(out, m)
		case <-deadline:
			tb.Fatalf("got %d of %d dead letters", len(out), n)
		}
	}
	return out
}

func header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

func waitUntil(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counter returns the value of a counter registered on reg.
func counter(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatalf("counter %s is not registered", name)
	return 0
}

// faulty wraps the real projector and fails the batches that fail says to fail, as a read
// model outage or a persistently failing event would.
type faulty struct {
	Applier
	calls atomic.Int64
	fail  func([]write.Event) error
}

func (f *faulty) Apply(ctx context.Context, evs []write.Event) ([]read.Change, error) {
	f.calls.Add(1)
	if err := f.fail(evs); err != nil {
		return nil, err
	}
	return f.Applier.Apply(ctx, evs)
}

func TestAReadModelOutageDeadLettersNothing(t *testing.T) {
	s := newStack(t)
	var down atomic.Bool
	down.Store(true)
	f := &faulty{fail: func([]write.Event) error {
		if down.Load() {
			return errors.New("database is locked")
		}
		return nil
	}}
	reg := prometheus.NewRegistry()
	c := s.consumer(t, WithRegistry(reg))
	f.Applier, c.applier = c.applier, f
	run(t, c.Run)
	posts := s.createPosts(t, s.h, 2)
	likeAll(t, s.h, posts, 0, 10, 2)
	waitUntil(t, 30*time.Second, "the consumer to retry through the outage", func() bool { return f.calls.Load() >= 20 })
	down.Store(false)
	s.waitConsistent(t, 60*time.Second)
	if got := counter(t, reg, "postgate_projector_dead_letters_total"); got != 0 {
		t.Fatalf("%v events dead-lettered during an outage, want none", got)
	}
}

func TestAnEventThatKeepsFailingIsParkedAndOthersApplied(t *testing.T) {
	s := newStack(t)
	f := &faulty{fail: func(evs []write.Event) error {
		for _, e := range evs {
			if e.Actor == "user3" {
				return errors.New("constraint failed")
			}
		}
		return nil
	}}
	reg := prometheus.NewRegistry()
	c := s.consumer(t, WithRegistry(reg))
	f.Applier, c.applier = c.applier, f
	run(t, c.Run)
	posts := s.createPosts(t, s.h, 1)
	likeAll(t, s.h, posts, 0, 10, 1)
	waitUntil(t, 30*time.Second, "the other nine likes to be applied", func() bool {
		p, ok, err := s.model.Post(context.Background(), posts[0])
		return err == nil && ok && p.Likes == 9
	})
	dead := deadLetters(t, s.addrs(), 1)
	if reason := header(dead[0], HeaderDeadReason); !strings.Contains(reason, "constraint failed") {
		t.Errorf("dead letter reason %q does not carry the cause", reason)
	}
	if got := counter(t, reg, "postgate_projector_dead_letters_total"); got != 1 {
		t.Errorf("dead-letter counter is %v, want 1", got)
	}
}

func TestTwoProjectorsInOneGroupShareTheWork(t *testing.T) {
	s := newStack(t)
	run(t, s.consumer(t).Run)
	run(t, s.consumer(t).Run)
	posts := s.createPosts(t, s.h, 8)
	s.appendLikes(t, posts, 0, 800, 8)
	s.waitConsistent(t, 60*time.Second)
	for _, id := range posts {
		if got := s.likes(t, id); got != 100 {
			t.Errorf("post %s has %d likes, want 100", id, got)
		}
	}
}
