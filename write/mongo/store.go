// Package mongo is the MongoDB adapter of the write side's event store (write.EventStore).
//
// # Storage layout
//
// Each Append is one document in the collection "commits": all events of one command sit in one
// document, so they are stored atomically without multi-document transactions (which FerretDB
// lacks and which cost latency on MongoDB). A commit holds the versions [first, last] of one
// stream and the global positions [pos, posEnd] (posEnd = pos + len(events) - 1): positions are
// dense, one per event.
//
// The _id of a commit is stream + ":" + last, the last version zero-padded to 19 digits. Keying
// by the last version (rather than the first) makes the expected-version check of Append a point
// lookup on _id, the one query FerretDB answers from an index; the zero padding keeps a stream's
// commits in version order under the _id index. Because the version suffix has a fixed width, the
// mapping from (stream, last) to _id is injective even when stream names contain ":".
//
// # Why versions and positions are correct without transactions
//
// Both version ranges (per stream) and position ranges (global) form a contiguous chain of
// non-overlapping ranges starting at 1. A writer only ever inserts a range starting at L+1 after
// it has seen a stored commit ending at L (or L = 0). By induction over inserted commits, if the
// chain already extends beyond L, the commit covering L+1 starts exactly at L+1, so the insert
// collides with it on a unique index ({stream, first} for versions, {pos} for positions) and is
// rejected; otherwise the insert extends the chain by exactly one range. Hence:
//
//   - Two appenders at the same expected version cannot both win: the loser gets a duplicate
//     key on {stream, first} (or on _id) and Append reports write.ErrConflict.
//   - A stale expected version (lower or higher than the stream's version) is caught by the
//     pre-check "a commit ending at expected exists" followed by the same unique index: the
//     pre-check is not atomic with the insert, and need not be, since the index rejects every
//     insert that a concurrent append made stale.
//   - A duplicate key on {pos} means another writer took that position: Append re-reads the
//     highest position and retries (bounded, with a small jittered backoff). Positions are
//     therefore dense, and a commit at position p+1 is only inserted after its writer saw the
//     commit ending at p, so no reader sees p+1 without p (PITFALLS 2). Within one process,
//     appends take turns for a position, so only several processes ever race for one.
//
// Limits: the reasoning assumes that an acknowledged write stays. With write concern w:1 a
// replica-set failover can roll back acknowledged commits, and their positions are then handed out
// again to other events after a relay may have published them. Use majority write concern (the
// default, see WithMajority) in production; reads of the global feed (ReadAll, Head), which the
// relay and rebuild checkpoint, then use read concern "majority" so that they never return what a
// rollback could undo. Load, which serves command decisions, reads the freshest local state: a
// decision on an event that is later rolled back fails its append with a conflict, since the
// expected version no longer exists. Multi-document transactions are not needed and not used;
// this is why the adapter also runs on FerretDB.
//
// A commit is one BSON document, so one Append is limited to MongoDB's 16 MB per document (tens
// of thousands of events of ordinary size); the commands of postgate append one to a few events.
package mongo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readconcern"
	"go.mongodb.org/mongo-driver/mongo/readpref"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/x/mongo/driver/topology"

	"github.com/postgate/postgate/write"
)

// Collection and index names. The index names appear in duplicate-key error messages, which is
// how Append tells a version conflict from a lost race for a global position.
const (
	commitsCollection     = "commits"
	snapshotsCollection   = "snapshots"
	checkpointsCollection = "checkpoints"
	probeCollection       = "write_probe" // CheckWrite's one document; nothing reads it

	indexStreamFirst = "stream_first"        // unique: the optimistic concurrency guard
	indexStreamLast  = "stream_last"         // Load's range query
	indexPosition    = "commit_position"     // unique: one commit per first global position
	indexPositionEnd = "commit_position_end" // unique: ReadAll's range query, and a second guard
)

// versionDigits is the width of the zero-padded version in a commit's _id: enough for any int64.
const versionDigits = 19

// maxPositionAttempts bounds how often Append retries after losing a global position to another
// writer. Each lost race means another commit succeeded, so with n concurrent writers an append
// needs at most n attempts; the bound only stops a pathological livelock.
const maxPositionAttempts = 200

// EventStore is a write.EventStore on MongoDB. It is safe for concurrent use, including by several
// processes sharing one database.
type EventStore struct {
	client      *mongo.Client // nil when the caller owns the client (New)
	db          *mongo.Database
	commits     *mongo.Collection // primary, local read concern: the append path wants the freshest state
	feed        *mongo.Collection // primary, majority read concern unless disabled: ReadAll, Head
	snapshots   *mongo.Collection
	checkpoints *mongo.Collection
	probe       *mongo.Collection // the write concern of appends
	cfg         config

	// seenPos is the end position of some stored commit, the highest this store has seen: Append
	// first tries the position after it, which saves reading the head while this process is the
	// only writer. A stale value is safe: it is still the end of a real commit, so the chain
	// argument of the package comment holds and the insert collides on {pos} when others have
	// appended since; Append then reads the head and retries.
	seenPos atomic.Int64

	// positionTurn (capacity 1) lets one Append of this process at a time take a position.
	// Positions are one dense sequence, so commits are serialised by nature: each must see the
	// commit before it. Racing goroutines of one process would only collide on the same
	// position, waste inserts and back off; taking turns costs nothing in throughput. Other
	// processes still race, which the retry below handles.
	positionTurn chan struct{}
}

var _ write.EventStore = (*EventStore)(nil)

// config collects the options.
type config struct {
	database       string
	majority       bool
	writeConcern   *writeconcern.WriteConcern
	timeout        time.Duration
	connectTimeout time.Duration
}

// Option configures Open and New.
type Option func(*config)

// WithDatabase sets the database name (default "postgate").
func WithDatabase(name string) Option { return func(c *config) { c.database = name } }

// WithMajority chooses majority write concern and majority read concern for the event feed
// (default true). Turn it off only for a standalone server or a test server: with w:1, a failover
// can roll back events that a relay already published.
func WithMajority(on bool) Option { return func(c *config) { c.majority = on } }

// WithWriteConcern sets an explicit write concern, overriding WithMajority's choice for writes.
func WithWriteConcern(wc *writeconcern.WriteConcern) Option {
	return func(c *config) { c.writeConcern = wc }
}

// WithTimeout bounds every operation that the caller's context leaves unbounded (default 10 s).
// Zero means no bound beyond the caller's context.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithConnectTimeout bounds connecting and selecting a server (default 10 s, or what the URI's
// connectTimeoutMS and serverSelectionTimeoutMS say; this option overrides both).
func WithConnectTimeout(d time.Duration) Option { return func(c *config) { c.connectTimeout = d } }

func newConfig(opts []Option) config {
	c := config{database: "postgate", majority: true, timeout: 10 * time.Second}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// Open connects to the MongoDB deployment at uri, creates the indexes the store needs and returns
// the store; Close disconnects. It fails when the server cannot be reached within the connect
// timeout or when an index cannot be created (for example, an existing index of the same name with
// another definition).
func Open(ctx context.Context, uri string, opts ...Option) (*EventStore, error) {
	cfg := newConfig(opts)
	// Defaults first, then the URI, then explicit options: each may override the one before.
	copts := options.Client().
		SetConnectTimeout(10 * time.Second).
		SetServerSelectionTimeout(10 * time.Second).
		ApplyURI(uri).
		SetReadPreference(readpref.Primary())
	if cfg.connectTimeout > 0 {
		copts.SetConnectTimeout(cfg.connectTimeout).SetServerSelectionTimeout(cfg.connectTimeout)
	}
	client, err := mongo.Connect(ctx, copts)
	if err != nil {
		return nil, fmt.Errorf("connect to mongodb: %w", err)
	}
	s, err := newStore(ctx, client.Database(cfg.database), cfg)
	if err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Disconnect(dctx)
		return nil, err
	}
	s.client = client
	return s, nil
}

// New returns a store on db, whose client the caller owns (Close then leaves it connected), after
// creating the indexes. WithDatabase is ignored. It fails when an index cannot be created.
func New(ctx context.Context, db *mongo.Database, opts ...Option) (*EventStore, error) {
	return newStore(ctx, db, newConfig(opts))
}

func newStore(ctx context.Context, db *mongo.Database, cfg config) (*EventStore, error) {
	wc := cfg.writeConcern
	if wc == nil {
		if cfg.majority {
			wc = writeconcern.Majority()
		} else {
			wc = writeconcern.W1()
		}
	}
	feedRC := readconcern.Local()
	if cfg.majority {
		feedRC = readconcern.Majority()
	}
	base := options.Collection().SetReadPreference(readpref.Primary()).SetWriteConcern(wc)
	s := &EventStore{
		db:           db,
		commits:      db.Collection(commitsCollection, options.Collection().SetReadPreference(readpref.Primary()).SetWriteConcern(wc).SetReadConcern(readconcern.Local())),
		feed:         db.Collection(commitsCollection, options.Collection().SetReadPreference(readpref.Primary()).SetWriteConcern(wc).SetReadConcern(feedRC)),
		snapshots:    db.Collection(snapshotsCollection, base),
		checkpoints:  db.Collection(checkpointsCollection, base),
		probe:        db.Collection(probeCollection, base),
		cfg:          cfg,
		positionTurn: make(chan struct{}, 1),
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// One index per command: FerretDB v1.24 panics (and drops the connection) when a single
	// createIndexes names two indexes that both exist already, as on every start but the first.
	// Creating an existing identical index is a no-op on MongoDB and FerretDB alike.
	for _, idx := range []mongo.IndexModel{
		{Keys: bson.D{{Key: "stream", Value: 1}, {Key: "first", Value: 1}}, Options: options.Index().SetName(indexStreamFirst).SetUnique(true)},
		{Keys: bson.D{{Key: "stream", Value: 1}, {Key: "last", Value: 1}}, Options: options.Index().SetName(indexStreamLast)},
		{Keys: bson.D{{Key: "pos", Value: 1}}, Options: options.Index().SetName(indexPosition).SetUnique(true)},
		{Keys: bson.D{{Key: "posEnd", Value: 1}}, Options: options.Index().SetName(indexPositionEnd).SetUnique(true)},
	} {
		if _, err := s.commits.Indexes().CreateOne(ctx, idx); err != nil {
			return nil, fmt.Errorf("create indexes on %s.%s: %w", db.Name(), commitsCollection, err)
		}
	}
	return s, nil
}

// bound applies the configured operation timeout when ctx has no deadline of its own.
func (s *EventStore) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || s.cfg.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.timeout)
}

// commitDoc is the stored form of one Append.
type commitDoc struct {
	ID     string     `bson:"_id"`
	Stream string     `bson:"stream"`
	First  int64      `bson:"first"`
	Last   int64      `bson:"last"`
	Pos    int64      `bson:"pos"`
	PosEnd int64      `bson:"posEnd"`
	Events []eventDoc `bson:"events"`
}

// eventDoc is the stored form of one event. Stream, version and position follow from the commit.
// The time is Unix nanoseconds, because a BSON date keeps only milliseconds and the store must
// return exactly what it was given; the payload is kept as the raw JSON bytes (BSON binary), so it
// round-trips byte for byte, whatever its spacing, key order or encoding.
type eventDoc struct {
	ID     string `bson:"id"`
	Type   string `bson:"type"`
	Schema int    `bson:"schema"`
	PostID string `bson:"postId"`
	Actor  string `bson:"actor"`
	At     int64  `bson:"at"`
	Data   []byte `bson:"data"`
}

// commitID is the _id of the commit of stream that ends at version last.
func commitID(stream string, last int64) string {
	return fmt.Sprintf("%s:%0*d", stream, versionDigits, last)
}

// events flattens a commit into envelopes.
func (c *commitDoc) events() []write.Event {
	out := make([]write.Event, len(c.Events))
	for i, d := range c.Events {
		out[i] = write.Event{
			ID: d.ID, Type: d.Type, Schema: d.Schema, PostID: d.PostID,
			Stream: c.Stream, Version: c.First + int64(i), Position: c.Pos + int64(i),
			Actor: d.Actor, At: time.Unix(0, d.At).UTC(), Data: d.Data,
		}
	}
	return out
}

// Append stores events as the next versions of stream if it is at version expected; see
// write.EventStore. It returns an error matching write.ErrConflict when the stream is not at
// expected (including when a concurrent append won), an internal error for an empty stream name,
// a negative expected version or an event without ID, Type, PostID or time, and a wrapped driver
// error otherwise (including a commit above MongoDB's 16 MB document limit). An empty batch stores
// nothing and returns nil, nil. An error caused by the connection (not a conflict) leaves it
// unknown whether the events were stored, as with any remote store; the driver's retryable writes
// make this rare, and a retry of the command then gets a conflict, not a duplicate.
func (s *EventStore) Append(ctx context.Context, stream string, expected int64, events []write.Event) ([]write.Event, error) {
	if len(events) == 0 {
		return nil, nil // nothing to store, as in the SQLite store
	}
	if err := validate(stream, expected, events); err != nil {
		return nil, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()

	// The stream must end exactly at expected. See the package comment for why this check, which
	// is not atomic with the insert, is nevertheless enough together with the unique index.
	if expected > 0 {
		err := s.commits.FindOne(ctx, bson.D{{Key: "_id", Value: commitID(stream, expected)}},
			options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, conflict(stream, expected)
		}
		if err != nil {
			return nil, fmt.Errorf("append to %s: check version %d: %w", stream, expected, err)
		}
	}

	n := int64(len(events))
	doc := commitDoc{
		ID: commitID(stream, expected+n), Stream: stream, First: expected + 1, Last: expected + n,
		Events: make([]eventDoc, len(events)),
	}
	for i, e := range events {
		doc.Events[i] = eventDoc{ID: e.ID, Type: e.Type, Schema: e.Schema, PostID: e.PostID,
			Actor: e.Actor, At: e.At.UnixNano(), Data: e.Data}
	}

	select {
	case s.positionTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("append to %s at version %d: wait for a position: %w", stream, expected, ctx.Err())
	}
	defer func() { <-s.positionTurn }()
	head := s.seenPos.Load()
	for attempt := 1; ; attempt++ {
		doc.Pos, doc.PosEnd = head+1, head+n
		_, err := s.commits.InsertOne(ctx, doc)
		if err == nil {
			break
		}
		if !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("append to %s at version %d: %w", stream, expected, err)
		}
		lostPosition, cerr := s.lostPosition(ctx, err, stream, expected)
		if cerr != nil {
			return nil, fmt.Errorf("append to %s at version %d: %w", stream, expected, cerr)
		}
		if !lostPosition {
			return nil, conflict(stream, expected)
		}
		if attempt == maxPositionAttempts {
			return nil, fmt.Errorf("append to %s at version %d: no free global position after %d attempts", stream, expected, attempt)
		}
		// Another writer took the position. Back off a little, with jitter so that the losers of
		// one round do not collide again in lockstep, then take the position after the new head.
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return nil, fmt.Errorf("append to %s at version %d: %w", stream, expected, err)
		}
		if head, err = s.head(ctx, s.commits); err != nil {
			return nil, fmt.Errorf("append to %s: %w", stream, err)
		}
	}
	s.saw(doc.PosEnd)

	out := make([]write.Event, len(events))
	for i, e := range events {
		e.Stream, e.Version, e.Position = stream, doc.First+int64(i), doc.Pos+int64(i)
		e.At = e.At.UTC()
		out[i] = e
	}
	return out, nil
}

// validate rejects what Append must never store. Such input is a bug of the caller, not of the
// user, so the errors are internal ones (never shown to a client).
func validate(stream string, expected int64, events []write.Event) error {
	switch {
	case stream == "":
		return errors.New("append: empty stream name")
	case expected < 0:
		return fmt.Errorf("append to %s: negative expected version %d", stream, expected)
	}
	for i, e := range events {
		if e.ID == "" || e.Type == "" || e.PostID == "" || e.At.IsZero() {
			return fmt.Errorf("append to %s: event %d lacks an id, a type, a post id or a time", stream, i)
		}
		// Times are stored as Unix nanoseconds, which an int64 holds for the years 1678 to 2262.
		if y := e.At.Year(); y < 1700 || y > 2200 {
			return fmt.Errorf("append to %s: event %d has a time out of range: %v", stream, i, e.At)
		}
	}
	return nil
}

func conflict(stream string, expected int64) error {
	return write.Errorf(write.KindConflict, "stream %s is not at version %d", stream, expected)
}

// lostPosition tells, after a duplicate-key error on insert, whether the commit lost the race for
// a global position (retry) rather than for its stream versions (conflict). The index name in
// the server's message decides when it is there (MongoDB: "... index: commit_position dup key:
// ..."). FerretDB names no index, so a follow-up read decides: if a commit of the stream now
// starts at expected+1 the versions are taken, a permanent fact, so it is a conflict; if none
// does, the insert can only have collided on a position.
func (s *EventStore) lostPosition(ctx context.Context, dupErr error, stream string, expected int64) (bool, error) {
	switch duplicateIndex(duplicateKeyMessage(dupErr)) {
	case dupVersion:
		return false, nil
	case dupPosition:
		return true, nil
	}
	err := s.commits.FindOne(ctx, bson.D{{Key: "stream", Value: stream}, {Key: "first", Value: expected + 1}},
		options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("classify duplicate key: %w", err)
	}
	return false, nil
}

// The causes of a duplicate key on insert, as far as the server's message tells.
const (
	dupUnknown  = iota // the message names no index (FerretDB)
	dupVersion         // the stream's versions are taken: a conflict
	dupPosition        // the global position is taken: retry
)

// duplicateIndex reads the cause of a duplicate key from MongoDB's message, which has the form
// "E11000 duplicate key error collection: DB.commits index: NAME dup key: { ... }".
func duplicateIndex(msg string) int {
	for _, name := range []string{indexStreamFirst, "_id_"} {
		if strings.Contains(msg, "index: "+name+" ") {
			return dupVersion
		}
	}
	for _, name := range []string{indexPosition, indexPositionEnd} {
		if strings.Contains(msg, "index: "+name+" ") {
			return dupPosition
		}
	}
	return dupUnknown
}

// duplicateKeyMessage returns the messages of the duplicate-key errors in err, joined.
func duplicateKeyMessage(err error) string {
	var msgs []string
	var we mongo.WriteException
	if errors.As(err, &we) {
		for _, e := range we.WriteErrors {
			if e.Code == 11000 || e.Code == 11001 || e.Code == 12582 {
				msgs = append(msgs, e.Message)
			}
		}
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Code == 11000 {
		msgs = append(msgs, ce.Message)
	}
	return strings.Join(msgs, "\n")
}

// backoff is the pause before the attempt-th retry: up to 1 ms, doubling to at most 32 ms, jittered.
func backoff(attempt int) time.Duration {
	ceiling := time.Millisecond << min(attempt-1, 5)
	return time.Duration(rand.Int64N(int64(ceiling))) + 100*time.Microsecond
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// saw records that a commit ending at position end is stored, keeping the highest such position.
func (s *EventStore) saw(end int64) {
	for {
		cur := s.seenPos.Load()
		if end <= cur || s.seenPos.CompareAndSwap(cur, end) {
			return
		}
	}
}

// head returns the last global position of the commit with the highest position, 0 when empty.
func (s *EventStore) head(ctx context.Context, coll *mongo.Collection) (int64, error) {
	var c struct {
		PosEnd int64 `bson:"posEnd"`
	}
	err := coll.FindOne(ctx, bson.D{}, options.FindOne().
		SetSort(bson.D{{Key: "pos", Value: -1}}).
		SetProjection(bson.D{{Key: "posEnd", Value: 1}})).Decode(&c)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read head position: %w", err)
	}
	s.saw(c.PosEnd)
	return c.PosEnd, nil
}

// Load returns the events of stream with a version above after, in version order; an unknown
// stream has none. It returns a wrapped driver error when the query fails.
func (s *EventStore) Load(ctx context.Context, stream string, after int64) ([]write.Event, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	cur, err := s.commits.Find(ctx,
		bson.D{{Key: "stream", Value: stream}, {Key: "last", Value: bson.D{{Key: "$gt", Value: after}}}},
		options.Find().SetSort(bson.D{{Key: "last", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("load %s after %d: %w", stream, after, err)
	}
	var out []write.Event
	err = eachCommit(ctx, cur, func(c *commitDoc) bool {
		for _, e := range c.events() {
			if e.Version > after {
				out = append(out, e)
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("load %s after %d: %w", stream, after, err)
	}
	return out, nil
}

// ReadAll returns at most limit events with a global position above after, in position order.
// It returns a wrapped driver error when the query fails.
func (s *EventStore) ReadAll(ctx context.Context, after int64, limit int) ([]write.Event, error) {
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// Every commit ending above after holds at least one wanted event, so limit commits suffice.
	// Sorting by posEnd is sorting by pos, as the ranges do not overlap.
	cur, err := s.feed.Find(ctx,
		bson.D{{Key: "posEnd", Value: bson.D{{Key: "$gt", Value: after}}}},
		options.Find().SetSort(bson.D{{Key: "posEnd", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("read all after %d: %w", after, err)
	}
	out := make([]write.Event, 0, min(limit, 1024))
	err = eachCommit(ctx, cur, func(c *commitDoc) bool {
		for _, e := range c.events() {
			if e.Position <= after {
				continue
			}
			if len(out) == limit {
				return false
			}
			out = append(out, e)
		}
		return len(out) < limit
	})
	if err != nil {
		return nil, fmt.Errorf("read all after %d: %w", after, err)
	}
	return out, nil
}

// eachCommit decodes the cursor's commits into fn until fn returns false, then closes the cursor.
func eachCommit(ctx context.Context, cur *mongo.Cursor, fn func(*commitDoc) bool) error {
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		var c commitDoc
		if err := cur.Decode(&c); err != nil {
			return fmt.Errorf("decode commit: %w", err)
		}
		if !fn(&c) {
			return nil
		}
	}
	return cur.Err()
}

// Head returns the highest global position stored, 0 when empty. It returns a wrapped driver
// error when the query fails.
func (s *EventStore) Head(ctx context.Context) (int64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.head(ctx, s.feed)
}

// snapshotDoc is the stored form of a snapshot; _id is the stream.
type snapshotDoc struct {
	Stream  string `bson:"_id"`
	Version int64  `bson:"version"`
	Schema  int    `bson:"schema"`
	State   []byte `bson:"state"`
}

// LoadSnapshot returns the latest snapshot of stream; ok is false when there is none. It returns
// a wrapped driver error when the query fails.
func (s *EventStore) LoadSnapshot(ctx context.Context, stream string) (write.Snapshot, bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var d snapshotDoc
	err := s.snapshots.FindOne(ctx, bson.D{{Key: "_id", Value: stream}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return write.Snapshot{}, false, nil
	}
	if err != nil {
		return write.Snapshot{}, false, fmt.Errorf("load snapshot of %s: %w", stream, err)
	}
	return write.Snapshot{Stream: d.Stream, Version: d.Version, Schema: d.Schema, State: d.State}, true, nil
}

// SaveSnapshot stores snap unless a snapshot of a later version of the stream is already stored.
// The replacement is conditional on the stored version being lower: where the server evaluates
// that atomically (MongoDB), an older snapshot never overwrites a newer one; where it does not
// (FerretDB), the race only keeps an older snapshot, which costs time, not correctness. It
// returns a wrapped driver error when the write fails.
func (s *EventStore) SaveSnapshot(ctx context.Context, snap write.Snapshot) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	state := snap.State
	if state == nil {
		state = []byte{}
	}
	_, err := s.snapshots.ReplaceOne(ctx,
		bson.D{{Key: "_id", Value: snap.Stream}, {Key: "version", Value: bson.D{{Key: "$lte", Value: snap.Version}}}},
		snapshotDoc{Stream: snap.Stream, Version: snap.Version, Schema: snap.Schema, State: state},
		options.Replace().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		// The filter did not match because a newer snapshot is stored, and the upsert then
		// collided with it on _id: keep the newer one.
		return nil
	}
	if err != nil {
		return fmt.Errorf("save snapshot of %s at version %d: %w", snap.Stream, snap.Version, err)
	}
	return nil
}

// Checkpoint returns the position saved under name, 0 if none. It returns a wrapped driver error
// when the query fails.
func (s *EventStore) Checkpoint(ctx context.Context, name string) (int64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var d struct {
		Position int64 `bson:"position"`
	}
	err := s.checkpoints.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load checkpoint %s: %w", name, err)
	}
	return d.Position, nil
}

// SaveCheckpoint stores position under name, replacing the previous one. It returns a wrapped
// driver error when the write fails.
func (s *EventStore) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.checkpoints.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "position", Value: position}}}},
		options.Update().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("save checkpoint %s at %d: %w", name, position, err)
	}
	return nil
}

// Ping checks that the primary answers. It returns a wrapped driver error when it does not.
func (s *EventStore) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.db.Client().Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("ping mongodb: %w", err)
	}
	return nil
}

// CheckWrite rewrites one document of the collection write_probe on the primary with the write
// concern of appends, so that a replica set without a primary (or without the majority that
// majority write concern waits for) and a user without write permission are not ready. The
// document gets a new time on every call: an update that changes nothing would not reach the
// journal, and could succeed where an append fails. Errors: write.ErrNoPrimary when no primary
// can be selected or the server is not (or stops being) the primary, write.ErrNotReplicated when
// the write concern is not satisfied, write.ErrWriteDenied when the user may not write,
// write.ErrDiskFull when the server is out of disk space, a wrapped driver error otherwise.
func (s *EventStore) CheckWrite(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	touch := func() error {
		_, err := s.probe.UpdateOne(ctx, bson.D{{Key: "_id", Value: "probe"}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "at", Value: time.Now().UnixNano()}}}},
			options.Update().SetUpsert(true))
		return err
	}
	err := touch()
	if mongo.IsDuplicateKeyError(err) {
		// Two first probes upserted at once and the other inserted the document (MongoDB retries
		// such an upsert itself, FerretDB does not): it exists now, so the update applies.
		err = touch()
	}
	if err != nil {
		return fmt.Errorf("check write: %w", classify(err))
	}
	return nil
}

// Server error codes that tell why a write failed (src/mongo/base/error_codes.yml of MongoDB).
var writeProblems = []struct {
	codes  []int
	reason error
}{
	{[]int{13, 8000}, write.ErrWriteDenied}, // Unauthorized; Atlas' AtlasError for a denied write
	{[]int{14031}, write.ErrDiskFull},       // OutOfDiskSpace
	// NotWritablePrimary, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary, PrimarySteppedDown,
	// InterruptedDueToReplStateChange.
	{[]int{10107, 13435, 13436, 189, 11602}, write.ErrNoPrimary},
	{[]int{64, 100}, write.ErrNotReplicated}, // WriteConcernFailed (wtimeout), UnsatisfiableWriteConcern
}

// classify adds the write.EventStore reason to a driver error that has one.
func classify(err error) error {
	var sel topology.ServerSelectionError
	if errors.As(err, &sel) {
		return fmt.Errorf("%w: %w", write.ErrNoPrimary, err)
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, p := range writeProblems {
			for _, code := range p.codes {
				if se.HasErrorCode(code) {
					return fmt.Errorf("%w: %w", p.reason, err)
				}
			}
		}
	}
	return err
}

// Close disconnects the client that Open created; a store made by New leaves its client to the
// caller. It returns a wrapped driver error when disconnecting fails.
func (s *EventStore) Close() error {
	if s.client == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("disconnect from mongodb: %w", err)
	}
	return nil
}
