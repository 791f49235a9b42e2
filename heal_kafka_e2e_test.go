package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/postgate/postgate/graph"
	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/kafka"
)

var brokerAddrs = regexp.MustCompile(`msg="embedded kafka broker" addrs=\[([^\] ]+)`)

// brokerAddr returns the address of the embedded broker that s started.
func (s *testServer) brokerAddr(tb testing.TB) string {
	tb.Helper()
	m := brokerAddrs.FindStringSubmatch(s.logs.tail(1 << 20))
	if m == nil {
		tb.Fatalf("serve logged no embedded broker address:\n%s", s.logs.tail(4<<10))
	}
	return m[1]
}

const likeMutation = `mutation($id: ID!) { likePost(id: $id) { likes } }`

func (s *testServer) like(user, postID string) {
	s.tb.Helper()
	s.mustData(s.do(s.token(user), likeMutation, map[string]any{"id": postID}), new(any))
}

func (s *testServer) verifyClean(tb testing.TB) {
	tb.Helper()
	if out, errOut, code := s.command("verify"); code != 0 {
		tb.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
}

// TestCatchUpAfterTheTopicIsRecreated: the events topic deleted and created anew under a running
// projector (its committed offsets now point past the new, empty log): the likes stored meanwhile
// reach the read model from the event store, and so do those made afterwards.
func TestCatchUpAfterTheTopicIsRecreated(t *testing.T) {
	s := startServe(t, "--partitions", "2", "--catchup-delay", "1s")
	post := s.createPost(s.token("author"), "the topic goes away")
	for i := range 3 {
		s.like(fmt.Sprintf("before-%d", i), post.ID)
	}
	s.waitLikes(post.ID, 3)

	admin, err := sarama.NewClusterAdmin([]string{s.brokerAddr(t)}, kafka.NewSaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topic := kafka.DefaultEventsTopic
	if err := admin.DeleteTopic(topic); err != nil {
		t.Fatalf("delete %s: %v", topic, err)
	}
	for i := range 2 {
		s.like(fmt.Sprintf("gone-%d", i), post.ID) // stored; their publishing fails or is lost
	}
	eventually(t, 10*time.Second, "the topic created again", func() error {
		err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false)
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("%w: %v", errNotYet, err)
		}
		return nil
	})
	for i := range 3 {
		s.like(fmt.Sprintf("after-%d", i), post.ID)
	}
	s.waitLikes(post.ID, 8)
	s.verifyClean(t)
}

// TestCatchUpAfterTheGroupsOffsetsAreReset: the projectors' group moved to the latest offsets
// while likes were unread (an operator's reset, or offsets lost): the skipped likes reach the read
// model from the event store, and new likes keep flowing through Kafka.
func TestCatchUpAfterTheGroupsOffsetsAreReset(t *testing.T) {
	dir := t.TempDir()
	// First a projector, so that its group exists with committed offsets.
	s := startServe(t, "--data", dir, "--partitions", "2")
	post := s.createPost(s.token("author"), "unread")
	if p := s.readPost("", post.ID, 1); p == nil {
		t.Fatal("post not projected")
	}
	s.stop(t)
	s = startServe(t, "--data", dir, "--roles", "gateway,relay", "--partitions", "2")
	const skipped = 5
	for i := range skipped {
		s.like(fmt.Sprintf("skipped-%d", i), post.ID)
	}
	// The relay's checkpoint past every like: nothing is published again after the restart.
	eventually(t, 10*time.Second, "the relay's checkpoint at the head", func() error {
		if n := s.metrics()["postgate_relay_checkpoint_position"]; n < skipped+1 {
			return fmt.Errorf("%w: checkpoint %v", errNotYet, n)
		}
		return nil
	})
	client, err := sarama.NewClient([]string{s.brokerAddr(t)}, kafka.NewSaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	topic, group := kafka.DefaultEventsTopic, "postgate-projector"
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "every event published", func() error {
		var n int64
		for _, p := range parts {
			off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
			if err != nil {
				return err
			}
			n += off
		}
		if n < skipped+1 { // the post and the likes
			return fmt.Errorf("%w: %d messages", errNotYet, n)
		}
		return nil
	})
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		pom, err := om.ManagePartition(topic, p)
		if err != nil {
			t.Fatal(err)
		}
		pom.MarkOffset(newest, "reset to latest by the test") // forward: MarkOffset, not ResetOffset
		defer pom.Close()
	}
	om.Commit()
	if err := om.Close(); err != nil {
		t.Fatal(err)
	}
	client.Close()
	s.stop(t)

	s = startServe(t, "--data", dir, "--partitions", "2", "--catchup-delay", "1s")
	s.waitLikes(post.ID, skipped)
	// Catch-up is the path meant for this; anti-entropy, walking the store at the same time, may
	// repair the post first. Either way the store healed it, not Kafka.
	m := s.metrics()
	if m["postgate_projector_catchup_events_total"] < skipped && m["postgate_antientropy_repairs_total"] < 1 {
		t.Errorf("catch-up applied %v events and anti-entropy repaired %v posts; want the %d skipped likes healed from the store",
			m["postgate_projector_catchup_events_total"], m["postgate_antientropy_repairs_total"], skipped)
	}
	for i := range 3 {
		s.like(fmt.Sprintf("later-%d", i), post.ID)
	}
	s.waitLikes(post.ID, skipped+3)
	s.verifyClean(t)
}

// TestLikeStormWithTheProjectorKilled: likes keep coming while the projector process is SIGKILLed
// at a random point of each burst, ten times in a row; after each restart the read model counts
// every acknowledged like exactly once (never more, as a redelivered batch applied twice would),
// and verify is clean at the end. The broker, the gateway and the projector are separate processes
// on one data dir, as in TestScaleOut.
func TestLikeStormWithTheProjectorKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes and kills one ten times; skipped with -short")
	}
	const (
		rounds  = 10
		burst   = 24
		workers = 4
	)
	dir := t.TempDir()
	secret := "storm-test-secret-of-at-least-32-characters"
	addr := "127.0.0.1:" + strconv.Itoa(scaleoutFreePort(t))
	broker := startPostgate(t, "broker", "--data", dir, "--broker-addr", addr, "--partitions", "2")
	eventually(t, startTimeout, "the broker listening", func() error {
		c, err := sarama.NewClient([]string{addr}, kafka.NewSaramaConfig())
		if err != nil {
			return fmt.Errorf("%w: %v", errNotYet, err)
		}
		c.Close()
		return nil
	})
	flags := func(roles string) []string {
		return append(append([]string{"serve", "--data", dir, "--addr", "127.0.0.1:0"}, embeddedFlags...),
			"--kafka-brokers", addr, "--jwt-secret", secret, "--roles", roles, "--partitions", "2",
			"--catchup-delay", "1s", "--log-level", "info")
	}
	gateway := startPostgate(t, flags("gateway,relay")...)
	gw := &testServer{tb: t, url: "http://" + gateway.serving(t), data: dir, tokens: &tokenCache{m: map[string]string{}}}
	token := func(user string) string {
		tok, err := graph.IssueToken([]byte(secret), user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var created struct{ CreatePost struct{ ID string } }
	gw.mustData(gw.do(token("author"), `mutation { createPost(message: "storm") { id } }`, nil), &created)
	postID := created.CreatePost.ID
	likes := func() int {
		var got struct{ Post *struct{ Likes int } }
		gw.mustData(gw.do("", `query($id: ID!) { post(id: $id) { likes } }`, map[string]any{"id": postID}), &got)
		if got.Post == nil {
			return -1
		}
		return got.Post.Likes
	}

	var acked atomic.Int64
	began := time.Now()
	proj := startPostgate(t, flags("projector")...)
	proj.serving(t)
	for round := range rounds {
		jobs := make(chan int)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					r := gw.do(token(fmt.Sprintf("r%d-u%d", round, j)), likeMutation, map[string]any{"id": postID})
					if len(r.Errors) == 0 && r.status == 200 {
						acked.Add(1)
					}
				}
			}()
		}
		killAt := rand.IntN(burst)
		for j := range burst {
			if j == killAt {
				if err := proj.cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
			}
			jobs <- j
		}
		close(jobs)
		wg.Wait()
		proj.wait(t, 10*time.Second)
		proj = startPostgate(t, flags("projector")...)
		proj.serving(t)
		want := int(acked.Load())
		eventually(t, 30*time.Second, fmt.Sprintf("round %d: %d acknowledged likes counted", round, want), func() error {
			n := likes()
			if n > want {
				t.Fatalf("round %d: the read model counts %d likes, only %d were acknowledged", round, n, want)
			}
			if n != want {
				return fmt.Errorf("%w: %d of %d", errNotYet, n, want)
			}
			return nil
		})
	}
	t.Logf("%d rounds of %d likes, the projector SIGKILLed in each, in %v", rounds, burst, time.Since(began).Round(time.Millisecond))
	if got, want := likes(), rounds*burst; int(acked.Load()) != want || got != want {
		t.Errorf("%d likes acknowledged, %d counted; want %d of both", acked.Load(), got, want)
	}
	var out, errOut bytes.Buffer
	args := append(append([]string{"verify", "--data", dir}, embeddedFlags...), "--kafka-brokers", addr, "--jwt-secret", secret)
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	// Graceful shutdown is tested elsewhere; a projector leaving a group that still waits for the
	// killed members would only make this test slower.
	for _, p := range []*postgateProc{proj, gateway} {
		_ = p.cmd.Process.Kill()
		p.wait(t, 10*time.Second)
	}
	_ = broker
}

// runCommand runs postgate with args (a command of two words, like "dlq list", included) over the
// server's data dir and settings.
func (s *testServer) runCommand(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	full := append(append(append(args, "--data", s.data, "--log-level", "warn"), embeddedFlags...), s.args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = run(ctx, full, &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestDeadLettersAreListedAndReplayed: a damaged copy of a stored like on the events topic is
// parked by the projector (no catch-up, no anti-entropy: only the dead letter can bring it back);
// `postgate dlq list` names it, `postgate dlq replay` applies the stored event through this
// binary's decoding (upcasters included), after which verify is clean and a second replay changes
// nothing.
func TestDeadLettersAreListedAndReplayed(t *testing.T) {
	dir := t.TempDir()
	off := []string{"--data", dir, "--partitions", "2", "--catchup-delay", "0s", "--anti-entropy-rate", "0"}
	s := startServe(t, off...)
	post := s.createPost(s.token("author"), "a like goes astray")
	s.like("ann", post.ID)
	s.waitLikes(post.ID, 1)
	s.stop(t)

	// A like stored while nothing ran, that the relay counts as published: Kafka will only ever
	// carry the damaged copy below.
	ctx := testDeadline(t, time.Minute)
	cfg := serveConfig(t, append(append([]string{"--data", dir}, embeddedFlags...), off...))
	store, err := openEventStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := write.NewHandler(store).LikePost(ctx, "eve", post.ID); err != nil {
		t.Fatal(err)
	}
	head, err := store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := store.ReadAll(ctx, head-1, 1)
	if err != nil || len(evs) != 1 {
		t.Fatalf("read the like back: %v %v", evs, err)
	}
	if err := store.SaveCheckpoint(ctx, kafka.DefaultCheckpoint, head); err != nil {
		t.Fatal(err)
	}
	store.Close()
	damaged := evs[0]
	damaged.Data = json.RawMessage(`{"user": 42}`)
	value, err := json.Marshal(damaged)
	if err != nil {
		t.Fatal(err)
	}
	b, err := kafka.StartBroker(dir, "127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	cfgSarama := kafka.NewSaramaConfig()
	cfgSarama.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer(b.Addrs(), cfgSarama)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: kafka.DefaultEventsTopic, Key: sarama.StringEncoder(post.ID), Value: sarama.ByteEncoder(value)}); err != nil {
		t.Fatal(err)
	}
	prod.Close()
	b.Close()

	s = startServe(t, off...)
	eventually(t, 30*time.Second, "the damaged like parked", func() error {
		if n := s.metrics()["postgate_projector_dead_letters_total"]; n < 1 {
			return fmt.Errorf("%w: %v dead letters", errNotYet, n)
		}
		return nil
	})
	s.stop(t)

	if out, errOut, code := s.runCommand("dlq", "list"); code != 0 || !strings.Contains(out, damaged.ID) || !strings.Contains(out, "1 dead letters") {
		t.Fatalf("dlq list: exit %d, want 0 naming event %s:\n%s%s", code, damaged.ID, out, errOut)
	}
	if out, _, code := s.command("verify"); code != 1 {
		t.Fatalf("verify before the replay: exit %d, want 1 (eve's like is missing):\n%s", code, out)
	}
	if out, errOut, code := s.runCommand("dlq", "replay"); code != 0 || !strings.Contains(out, "1 applied") {
		t.Fatalf("dlq replay: exit %d, want 0 with 1 applied:\n%s%s", code, out, errOut)
	}
	s.verifyClean(t)
	if out, errOut, code := s.runCommand("dlq", "replay"); code != 0 || !strings.Contains(out, "1 already applied") {
		t.Fatalf("second dlq replay: exit %d, want 0 with 1 already applied:\n%s%s", code, out, errOut)
	}
}
