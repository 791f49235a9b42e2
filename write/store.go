package write

import (
	"context"
	"errors"
)

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

	// Ping checks that the store answers a read.
	Ping(ctx context.Context) error

	// CheckWrite checks that the store can take a write now (readiness): it makes a real, cheap,
	// idempotent write through the same database and durability path as Append (the same
	// connection, journal and write concern), into a place of its own that no reader sees, plus
	// whatever check catches what that small write cannot (a file system about to be full).
	// When the store knows why it cannot write, the error matches one of ErrDiskFull, ErrReadOnly,
	// ErrWriteDenied, ErrNoPrimary or ErrNotReplicated; otherwise it is the store's own error.
	// Callers that probe often cache the verdict: every call writes.
	CheckWrite(ctx context.Context) error

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

// Why a store cannot take a write, as CheckWrite reports it (match with errors.Is). The texts are
// plain words that a readiness probe may show: they name no path, host or internal error.
var (
	ErrDiskFull      = errors.New("disk full")
	ErrReadOnly      = errors.New("read-only file system")
	ErrWriteDenied   = errors.New("no permission to write")
	ErrNoPrimary     = errors.New("no primary to write to")
	ErrNotReplicated = errors.New("writes not acknowledged by the replica set")
)

// WriteProblem returns the plain reason of an error from CheckWrite: the text of the first of
// ErrDiskFull, ErrReadOnly, ErrWriteDenied, ErrNoPrimary and ErrNotReplicated that it matches, or
// "write failed" when it matches none of them. It never returns the error's own text, which may
// hold paths or addresses.
func WriteProblem(err error) string {
	for _, reason := range []error{ErrDiskFull, ErrReadOnly, ErrWriteDenied, ErrNoPrimary, ErrNotReplicated} {
		if errors.Is(err, reason) {
			return reason.Error()
		}
	}
	return "write failed"
}
