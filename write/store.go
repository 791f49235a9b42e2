package write

import "context"

// EventStore is the write side's source of truth. Every adapter (write/sqlite, write/mongo) passes
// the shared suite in write/storetest.
type EventStore interface {
	// Append stores events as versions expected+1, expected+2, ... of stream, all or none, provided
	// the stream is at version expected (0: the stream must not exist). The store itself enforces
	// this (a unique key on stream and version), so concurrent appenders cannot both win: the loser
	// gets an error matching ErrConflict. Each event must carry ID, Type, Schema, PostID, Actor, At
	// and Data; Append returns them with Stream, Version and Position set.
	Append(ctx context.Context, stream string, expected int64, events []Event) ([]Event, error)

	// Load returns the events of stream with a version above after, in version order.
	// An unknown stream has no events (no error).
	Load(ctx context.Context, stream string, after int64) ([]Event, error)

	// ReadAll returns at most limit events with a global position above after, in position order.
	// Positions are dense and never become visible out of order: once ReadAll has returned an
	// event at position p, no event with a position below p appears later. The relay and rebuild
	// rely on this to checkpoint safely.
	ReadAll(ctx context.Context, after int64, limit int) ([]Event, error)

	// Head returns the highest global position stored, 0 when empty.
	Head(ctx context.Context) (int64, error)

	// LoadSnapshot returns the latest snapshot of stream; ok is false when there is none.
	LoadSnapshot(ctx context.Context, stream string) (s Snapshot, ok bool, err error)

	// SaveSnapshot stores s, replacing an older one of the same stream. Snapshots are a cache:
	// losing one, or keeping an older one, must only cost time, never correctness.
	SaveSnapshot(ctx context.Context, s Snapshot) error

	// Checkpoint returns the position saved under name (0 if none); SaveCheckpoint stores it.
	// The relay keeps its progress here. A checkpoint that goes backwards only causes duplicates.
	Checkpoint(ctx context.Context, name string) (int64, error)
	SaveCheckpoint(ctx context.Context, name string, position int64) error

	// Ping checks that the store answers (readiness).
	Ping(ctx context.Context) error

	// Close releases the store's resources.
	Close() error
}

// Snapshot is an aggregate's state as of a stream version, serialised with a schema number.
type Snapshot struct {
	Stream  string
	Version int64
	Schema  int
	State   []byte
}
