package mongo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	driver "go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/mongo"
	"github.com/postgate/postgate/write/mongo/mongotest"
	"github.com/postgate/postgate/write/storetest"
)

// newStore opens a store on a fresh database of the test server (FerretDB, or the real MongoDB
// named by POSTGATE_TEST_MONGO_URI) and closes it when the test ends.
func newStore(tb testing.TB) *mongo.EventStore {
	tb.Helper()
	db := mongotest.Database(tb)
	dropAfter(tb, db)
	return openStore(tb, db)
}

// dropAfter drops database db of a real MongoDB when the test ends, after its stores are closed
// (cleanups run last-in first-out). FerretDB's databases go with its temporary directory.
func dropAfter(tb testing.TB, db string) {
	tb.Helper()
	if !mongotest.Real() {
		return
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := driver.Connect(ctx, options.Client().ApplyURI(mongotest.URI(tb)))
		if err != nil {
			tb.Errorf("connect to drop %s: %v", db, err)
			return
		}
		defer func() { _ = c.Disconnect(ctx) }()
		if err := c.Database(db).Drop(ctx); err != nil {
			tb.Errorf("drop %s: %v", db, err)
		}
	})
}

// openStore opens a store on database db of the test server and closes it when the test ends.
func openStore(tb testing.TB, db string) *mongo.EventStore {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// FerretDB decodes and filters every document in Go and the race detector slows that tenfold:
	// give operations more time than the production default there.
	s, err := mongo.Open(ctx, mongotest.URI(tb), mongo.WithDatabase(db), mongo.WithTimeout(time.Minute),
		mongo.WithMajority(mongotest.Majority()))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	return s
}

// testCtx is a context that ends with the test, bounded so that a hung server fails the test.
func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// at is a fixed time with nanoseconds, which a BSON date would truncate.
var at = time.Date(2026, 11, 30, 1, 2, 3, 456789123, time.UTC)

// events makes n envelopes for stream, ids prefixed by tag.
func events(stream, tag string, n int) []write.Event {
	out := make([]write.Event, n)
	for i := range out {
		out[i] = write.Event{
			ID: fmt.Sprintf("%s-%d", tag, i), Type: write.TypePostEdited, Schema: 1, PostID: stream,
			Actor: "alice", At: at.Add(time.Duration(i)), Data: json.RawMessage(fmt.Sprintf(`{"message": "m%d"}`, i)),
		}
	}
	return out
}

func mustAppend(tb testing.TB, s write.EventStore, stream string, expected int64, evs []write.Event) []write.Event {
	tb.Helper()
	out, err := s.Append(testCtx(tb), stream, expected, evs)
	if err != nil {
		tb.Fatalf("append %d events to %s at %d: %v", len(evs), stream, expected, err)
	}
	return out
}

func TestAppendAndLoadRoundTripExactly(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	in := []write.Event{
		{ID: "e1", Type: write.TypePostCreated, Schema: 2, PostID: "p1", Actor: "alice",
			At:   time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC),
			Data: json.RawMessage("{ \"author\":\"alice\" ,\n \"message\": \"h\u00e9llo \\u00e9 \U0001F600\"}")},
		{ID: "e2", Type: write.TypePostEdited, Schema: 1, PostID: "p1", Actor: "alice",
			At: time.Date(1970, 1, 1, 0, 0, 0, 1, time.UTC), Data: json.RawMessage(`{"message":""}`)},
	}
	got := mustAppend(t, s, "post/p1", 0, in)
	for i, e := range got {
		if e.Stream != "post/p1" || e.Version != int64(i+1) || e.Position != int64(i+1) {
			t.Errorf("appended event %d: stream %q version %d position %d, want post/p1 %d %d", i, e.Stream, e.Version, e.Position, i+1, i+1)
		}
	}
	loaded, err := s.Load(ctx, "post/p1", 0)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !reflect.DeepEqual(loaded, got) {
		t.Errorf("load returned\n%+v\nwant\n%+v", loaded, got)
	}
	for i := range in {
		if string(loaded[i].Data) != string(in[i].Data) {
			t.Errorf("data of event %d: %q, want the bytes appended %q", i, loaded[i].Data, in[i].Data)
		}
	}
	all, err := s.ReadAll(ctx, 0, 10)
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	if !reflect.DeepEqual(all, got) {
		t.Errorf("read all returned\n%+v\nwant\n%+v", all, got)
	}
}

func TestAppendChecksTheExpectedVersion(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	// The stream holds versions 1..3 in one commit and 4..7 in another: a stale expected version
	// that falls inside a commit must be refused too, which the unique index alone would not do.
	mustAppend(t, s, "post/a", 0, events("post/a", "a", 3))
	mustAppend(t, s, "post/a", 3, events("post/a", "b", 4))
	for _, tc := range []struct {
		name     string
		expected int64
	}{
		{"a new stream at an existing one is a conflict", 0},
		{"an expected version inside a commit is a conflict", 2},
		{"an expected version inside the last commit is a conflict", 5},
		{"the end of an older commit is a conflict", 3},
		{"an expected version above the stream's is a conflict", 9},
		{"the next version is a conflict", 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(testCtx(t), "post/a", tc.expected, events("post/a", "x", 1))
			if !errors.Is(err, write.ErrConflict) {
				t.Fatalf("append at %d: %v, want a conflict", tc.expected, err)
			}
		})
	}
	got := mustAppend(t, s, "post/a", 7, events("post/a", "c", 1))
	if got[0].Version != 8 || got[0].Position != 8 {
		t.Errorf("append at 7: version %d position %d, want 8 8", got[0].Version, got[0].Position)
	}
	loaded, err := s.Load(testCtx(t), "post/a", 0)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(loaded) != 8 {
		t.Errorf("the refused appends left %d events, want 8", len(loaded))
	}
}

func TestAppendRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	noID := events("post/i", "i", 1)
	noID[0].ID = ""
	noTime := events("post/i", "i", 1)
	noTime[0].At = time.Time{}
	farFuture := events("post/i", "i", 1)
	farFuture[0].At = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		stream   string
		expected int64
		evs      []write.Event
	}{
		{"a negative expected version is refused", "post/i", -1, events("post/i", "i", 1)},
		{"an empty stream name is refused", "", 0, events("post/i", "i", 1)},
		{"an event without id is refused", "post/i", 0, noID},
		{"an event without time is refused", "post/i", 0, noTime},
		{"a time beyond int64 nanoseconds is refused", "post/i", 0, farFuture},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(testCtx(t), tc.stream, tc.expected, tc.evs)
			if err == nil || write.KindOf(err) != write.KindInternal {
				t.Fatalf("append: %v, want an internal error", err)
			}
		})
	}
	if got, err := s.Append(testCtx(t), "post/i", 0, nil); got != nil || err != nil {
		t.Errorf("append of no events: %v, %v; want nothing stored and no error", got, err)
	}
	if h, err := s.Head(testCtx(t)); h != 0 || err != nil {
		t.Errorf("head after refused appends: %d, %v; want 0", h, err)
	}
}

func TestConcurrentAppendersAtOneVersionExactlyOneWins(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustAppend(t, s, "post/race", 0, events("post/race", "seed", 2))
	const n = 16
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      int
		conflicts int
		others    []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := s.Append(testCtx(t), "post/race", 2, events("post/race", fmt.Sprintf("g%d", i), 1+i%3))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, write.ErrConflict):
				conflicts++
			default:
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if wins != 1 || conflicts != n-1 || len(others) > 0 {
		t.Fatalf("%d wins, %d conflicts, other errors %v; want 1 win and %d conflicts", wins, conflicts, others, n-1)
	}
	loaded, err := s.Load(testCtx(t), "post/race", 0)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	for i, e := range loaded {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d has version %d: versions are not dense", i, e.Version)
		}
	}
}

// TestPositionsAreDenseAndNeverSeenOutOfOrder runs concurrent writers of different streams while
// a reader follows ReadAll as a relay would, checkpointing the last position it saw: it must
// never see a position without all those below it.
func TestPositionsAreDenseAndNeverSeenOutOfOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	const writers, commits = 8, 4
	var want int64
	for w := range writers {
		for c := range commits {
			want += int64(1 + (w+c)%3)
		}
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := range writers {
		wg.Go(func() {
			stream := fmt.Sprintf("post/w%d", w)
			var version int64
			for c := range commits {
				n := 1 + (w+c)%3
				if _, err := s.Append(ctx, stream, version, events(stream, fmt.Sprintf("w%dc%d", w, c), n)); err != nil {
					errs <- fmt.Errorf("writer %d commit %d: %w", w, c, err)
					return
				}
				version += int64(n)
			}
		})
	}
	var seen int64
	reader := make(chan struct{})
	go func() {
		defer close(reader)
		finished := false
		for {
			evs, err := s.ReadAll(ctx, seen, 7)
			if err != nil {
				errs <- fmt.Errorf("read all after %d: %w", seen, err)
				return
			}
			for _, e := range evs {
				if e.Position != seen+1 {
					errs <- fmt.Errorf("read all after %d returned position %d: a gap", seen, e.Position)
					return
				}
				seen = e.Position
			}
			if finished && len(evs) == 0 {
				return
			}
			select {
			case <-done:
				finished = true
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			default:
			}
		}
	}()
	wg.Wait()
	close(done)
	<-reader
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if seen != want {
		t.Errorf("reader saw %d positions, want %d", seen, want)
	}
	head, err := s.Head(ctx)
	if err != nil || head != want {
		t.Errorf("head = %d, %v; want %d", head, err, want)
	}
}

// TestStoresInSeveralProcessesShareOnePositionSequence opens two stores on one database, as two
// gateway processes would: each remembers the last position it saw, which goes stale when the
// other appends, and positions must stay dense all the same.
func TestStoresInSeveralProcessesShareOnePositionSequence(t *testing.T) {
	t.Parallel()
	db := mongotest.Database(t)
	dropAfter(t, db)
	a, b := openStore(t, db), openStore(t, db)
	ctx := testCtx(t)
	mustAppend(t, a, "post/a", 0, events("post/a", "a1", 2))
	mustAppend(t, a, "post/a", 2, events("post/a", "a2", 3))
	// b has seen nothing: its first try collides with a's first commit, and it must recover.
	got := mustAppend(t, b, "post/b", 0, events("post/b", "b1", 2))
	if got[0].Position != 6 || got[1].Position != 7 {
		t.Fatalf("b appended at positions %d, %d; want 6, 7", got[0].Position, got[1].Position)
	}
	// a's memory is now stale too.
	got = mustAppend(t, a, "post/a", 5, events("post/a", "a3", 1))
	if got[0].Position != 8 {
		t.Fatalf("a appended at position %d, want 8", got[0].Position)
	}

	var wg sync.WaitGroup
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			stream := fmt.Sprintf("post/p%d", i)
			var version int64
			for c := range 3 {
				n := 1 + (i+c)%2
				if _, err := s.Append(ctx, stream, version, events(stream, fmt.Sprintf("p%dc%d", i, c), n)); err != nil {
					t.Errorf("append to %s at %d: %v", stream, version, err)
					return
				}
				version += int64(n)
			}
		})
	}
	wg.Wait()
	all, err := b.ReadAll(ctx, 0, 1000)
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	for i, e := range all {
		if e.Position != int64(i+1) {
			t.Fatalf("event %d has position %d: positions are not dense", i, e.Position)
		}
	}
	if want := 8 + 3*(1+2+1) + 3*(2+1+2); len(all) != want {
		t.Errorf("read %d events, want %d", len(all), want)
	}
}

func TestLoadAndReadAllStartInsideACommit(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	mustAppend(t, s, "post/x", 0, events("post/x", "a", 3)) // positions 1..3
	mustAppend(t, s, "post/y", 0, events("post/y", "b", 4)) // positions 4..7
	mustAppend(t, s, "post/x", 3, events("post/x", "c", 2)) // positions 8..9

	loaded, err := s.Load(ctx, "post/x", 2)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got := versions(loaded); !reflect.DeepEqual(got, []int64{3, 4, 5}) {
		t.Errorf("load post/x after 2: versions %v, want [3 4 5]", got)
	}
	none, err := s.Load(ctx, "post/unknown", 0)
	if err != nil || len(none) != 0 {
		t.Errorf("load of an unknown stream: %v, %v; want no events and no error", none, err)
	}
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 2, []int64{1, 2}},
		{2, 3, []int64{3, 4, 5}},
		{5, 100, []int64{6, 7, 8, 9}},
		{9, 10, nil},
		{0, 0, nil},
	} {
		evs, err := s.ReadAll(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatalf("read all after %d limit %d: %v", tc.after, tc.limit, err)
		}
		if got := positions(evs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("read all after %d limit %d: positions %v, want %v", tc.after, tc.limit, got, tc.want)
		}
	}
}

func versions(evs []write.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Version)
	}
	return out
}

func positions(evs []write.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Position)
	}
	return out
}

func TestSnapshotsKeepTheNewest(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	if _, ok, err := s.LoadSnapshot(ctx, "post/s"); ok || err != nil {
		t.Fatalf("load of a missing snapshot: ok %v, %v; want none", ok, err)
	}
	save := func(v int64, state string) {
		t.Helper()
		if err := s.SaveSnapshot(ctx, write.Snapshot{Stream: "post/s", Version: v, Schema: 3, State: []byte(state)}); err != nil {
			t.Fatalf("save snapshot at %d: %v", v, err)
		}
	}
	save(5, `{"v":5}`)
	save(9, `{"v":9}`)
	save(7, `{"v":7}`) // older than what is stored: kept out
	save(9, `{"v":"9 again"}`)
	got, ok, err := s.LoadSnapshot(ctx, "post/s")
	want := write.Snapshot{Stream: "post/s", Version: 9, Schema: 3, State: []byte(`{"v":"9 again"}`)}
	if err != nil || !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("load snapshot: %+v, %v, %v; want %+v", got, ok, err, want)
	}
}

func TestCheckpoints(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	if p, err := s.Checkpoint(ctx, "relay"); p != 0 || err != nil {
		t.Fatalf("missing checkpoint: %d, %v; want 0", p, err)
	}
	for _, p := range []int64{10, 42, 41} {
		if err := s.SaveCheckpoint(ctx, "relay", p); err != nil {
			t.Fatalf("save checkpoint %d: %v", p, err)
		}
		if got, err := s.Checkpoint(ctx, "relay"); got != p || err != nil {
			t.Errorf("checkpoint after saving %d: %d, %v", p, got, err)
		}
	}
	if got, err := s.Checkpoint(ctx, "other"); got != 0 || err != nil {
		t.Errorf("another name's checkpoint: %d, %v; want 0", got, err)
	}
}

func TestPingAndHeadOfAnEmptyStore(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if h, err := s.Head(ctx); h != 0 || err != nil {
		t.Errorf("head of an empty store: %d, %v; want 0", h, err)
	}
}

func TestOpenFailsFastWithoutAServer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	// Port 1 on the loopback interface refuses connections, so this sends nothing anywhere.
	_, err := mongo.Open(ctx, "mongodb://127.0.0.1:1/?directConnection=true", mongo.WithConnectTimeout(500*time.Millisecond))
	if err == nil {
		t.Fatal("open without a server succeeded")
	}
}

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// TestStore runs the shared acceptance suite of every event store. Under -race on FerretDB the long
// stream is 2,000 events in appends of 100 instead of 10,000 in appends of 500: FerretDB decodes
// and filters every document of the collection in Go for each query, and the race detector slows
// that about tenfold (the full case took 30 s with -race, under 3 s without). Without -race, and
// on a real MongoDB, the full case runs.
func TestStore(t *testing.T) {
	var opts []storetest.Option
	if raceEnabled && !mongotest.Real() {
		opts = append(opts, storetest.WithLongStream(2000, 100))
	}
	storetest.Run(t, func(t *testing.T) write.EventStore { return newStore(t) }, opts...)
}

// TestCheckWriteFailsWithoutAServer: a store whose connection is gone cannot take a write, and the
// check says so instead of trusting an earlier answer.
func TestCheckWriteFailsWithoutAServer(t *testing.T) {
	db := mongotest.Database(t)
	dropAfter(t, db)
	s, err := mongo.Open(testCtx(t), mongotest.URI(t), mongo.WithDatabase(db), mongo.WithTimeout(time.Minute),
		mongo.WithMajority(mongotest.Majority()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWrite(testCtx(t)); err != nil {
		t.Fatalf("check write on a healthy server: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWrite(testCtx(t)); err == nil {
		t.Fatal("check write passed on a disconnected store")
	}
}
