package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postgate/postgate/write/kafka"
)

// TestGatewayStartsAndTakesMutationsWhileKafkaIsDown: the fast path and the relay exist so that a
// Kafka outage only delays events; a gateway (re)started during the outage must serve too, and
// publish everything once Kafka is back.
func TestGatewayStartsAndTakesMutationsWhileKafkaIsDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there: Kafka is down

	s := startServe(t, "--kafka-brokers", addr)
	if resp, err := http.Get(s.url + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with Kafka down: %v %v, want 503", resp, err)
	}
	p := s.createPost(s.token(uniqueName("offline")), "written while Kafka is down")
	if p.ID == "" {
		t.Fatal("createPost failed while Kafka was down")
	}

	// Kafka comes back on the same address: topics get made, the relay publishes, the projector
	// projects.
	b, err := kafka.StartBroker(filepath.Join(t.TempDir(), "broker"), addr, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	eventually(t, 60*time.Second, "the post written during the outage is projected", func() error {
		if got := s.readPost("", p.ID, 1); got == nil {
			return errNotYet
		}
		return nil
	})
	eventually(t, 30*time.Second, "readyz once Kafka is back", func() error {
		resp, err := http.Get(s.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errNotYet
		}
		return nil
	})
}

var errNotYet = errors.New("not yet")

// TestServeRefusesTopicsKafkaRejects: a Kafka that answers and refuses to make the topics (here a
// replication factor the single broker cannot meet) stops serve at start with the reason, instead
// of a gateway that takes mutations nobody will ever publish.
func TestServeRefusesTopicsKafkaRejects(t *testing.T) {
	ctx := testDeadline(t, 60*time.Second)
	var stderr syncBuffer
	code := run(ctx, []string{"serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0", "--topic", "custom.events",
		"--replication", "3", "--log-level", "error"}, io.Discard, &stderr)
	if out := stderr.tail(4096); code != 1 || !strings.Contains(out, "kafka topics") {
		t.Fatalf("serve exited %d: %s", code, out)
	}
}
