package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// Ping checks that one of brokers answers a metadata request within ctx's deadline (at most 3 s).
// Readiness probes use it.
func Ping(ctx context.Context, brokers []string) error {
	cfg := NewSaramaConfig()
	timeout := 3 * time.Second
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), 100*time.Millisecond)
	}
	cfg.Net.DialTimeout, cfg.Net.ReadTimeout, cfg.Net.WriteTimeout = timeout, timeout, timeout
	cfg.Metadata.Retry.Max = 0
	cfg.Metadata.Full = false
	done := make(chan error, 1)
	go func() {
		client, err := sarama.NewClient(brokers, cfg)
		if err != nil {
			done <- err
			return
		}
		defer client.Close()
		if err := client.RefreshMetadata(); err != nil {
			done <- err
			return
		}
		if len(client.Brokers()) == 0 {
			done <- errors.New("no brokers in metadata")
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("kafka %v: %w", brokers, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka %v: %w", brokers, ctx.Err())
	}
}
