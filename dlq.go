package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/postgate/postgate/internal/datalock"
	"github.com/postgate/postgate/projector"
	pkafka "github.com/postgate/postgate/projector/kafka"
	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/kafka"
)

// dlqBrokers returns the configured brokers, or starts the embedded broker of the data dir (which
// needs the dir's owner lock: serve must be stopped, as it holds that broker). stop releases it.
func dlqBrokers(cfg *Config) (brokers []string, stop func(), err error) {
	if b := cfg.list("kafka-brokers"); len(b) > 0 {
		return b, func() {}, nil
	}
	lock, err := lockDataDir(cfg, ownerLock)
	if err != nil {
		var held *datalock.HeldError
		if errors.As(err, &held) {
			return nil, nil, fmt.Errorf("%w (the embedded broker's dead letters are read with serve stopped, or give --kafka-brokers)", err)
		}
		return nil, nil, err
	}
	partitions, err := cfg.int("partitions")
	if err != nil {
		lock.Release()
		return nil, nil, err
	}
	b, err := kafka.StartBroker(cfg.str("data"), "127.0.0.1:0", partitions)
	if err != nil {
		lock.Release()
		return nil, nil, fmt.Errorf("embedded broker: %w", err)
	}
	return b.Addrs(), func() { b.Close(); lock.Release() }, nil
}

// dlqList prints every dead letter, one a line.
func dlqList(ctx context.Context, cfg *Config, stdout io.Writer) error {
	brokers, stop, err := dlqBrokers(cfg)
	if err != nil {
		return err
	}
	defer stop()
	letters, err := pkafka.ReadDeadLetters(ctx, brokers, cfg.str("topic"))
	if err != nil {
		return err
	}
	for _, d := range letters {
		fmt.Fprintln(stdout, d.String())
	}
	fmt.Fprintf(stdout, "%d dead letters in %s\n", len(letters), kafka.DeadLetterTopic(cfg.str("topic")))
	return nil
}

// dlqReplay applies every dead-lettered event again through the projector of this binary. The
// event is taken from the event store when the store holds it (the source of truth; the parked
// copy may be a damaged one), and decoding upcasts older schema versions, as the live projector
// does. Apply is idempotent, so replaying twice, or replaying what catch-up already applied,
// changes nothing. It fails (exit 1) when some letter still cannot be applied.
func dlqReplay(ctx context.Context, cfg *Config, stdout io.Writer) error {
	brokers, stop, err := dlqBrokers(cfg)
	if err != nil {
		return err
	}
	defer stop()
	letters, err := pkafka.ReadDeadLetters(ctx, brokers, cfg.str("topic"))
	if err != nil {
		return err
	}
	store, model, closeAll, err := openStores(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	proj := projector.New(model, store)
	var applied, already, failed int
	for _, d := range letters {
		if !d.Decoded {
			failed++
			fmt.Fprintf(stdout, "%d@%d: not an event envelope; left parked\n", d.Partition, d.Offset)
			continue
		}
		ev := d.Event
		if stored, err := store.Load(ctx, ev.Stream, ev.Version-1); err == nil && len(stored) > 0 && stored[0].Version == ev.Version {
			ev = stored[0]
		}
		before, err := model.StreamVersion(ctx, ev.Stream)
		if err != nil {
			return err
		}
		if before >= ev.Version {
			already++
			fmt.Fprintf(stdout, "%d@%d: event %s already applied\n", d.Partition, d.Offset, ev.ID)
			continue
		}
		if _, err := proj.Apply(ctx, []write.Event{ev}); err != nil {
			failed++
			fmt.Fprintf(stdout, "%d@%d: event %s still fails: %v\n", d.Partition, d.Offset, ev.ID, err)
			continue
		}
		applied++
		fmt.Fprintf(stdout, "%d@%d: event %s applied\n", d.Partition, d.Offset, ev.ID)
	}
	fmt.Fprintf(stdout, "replayed %d dead letters: %d applied, %d already applied, %d still failing\n",
		len(letters), applied, already, failed)
	if failed > 0 {
		return fmt.Errorf("%d dead letters still cannot be applied", failed)
	}
	return nil
}
