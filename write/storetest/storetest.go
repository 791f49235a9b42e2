// Package storetest is the acceptance suite that every write.EventStore adapter must pass:
// storetest.Run(t, newSQLiteStore) and storetest.Run(t, newMongoStore).
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postgate/postgate/write"
)

// Option tunes the suite for a backend.
type Option func(*config)

type config struct {
	longStream int // events in the long-stream test
	chunk      int // events per append in the long-stream test
}

// WithLongStream sets the length of the long-stream test and how many events each append carries.
// The default is the 10,000 events in appends of 500.
func WithLongStream(events, perAppend int) Option {
	return func(c *config) { c.longStream, c.chunk = events, perAppend }
}

// Run runs every case against fresh stores made by newStore; newStore registers its own cleanup.
func Run(t *testing.T, newStore func(t *testing.T) write.EventStore, opts ...Option) {
	cfg := config{longStream: 10000, chunk: 500}
	for _, o := range opts {
		o(&cfg)
	}
	cases := []struct {
		name string
		run  func(t *testing.T, s write.EventStore)
	}{
		{"append then load returns the same events", testRoundTrip},
		{"append at the wrong expected version is a conflict", testExpectedVersion},
		{"concurrent appenders at one version: exactly one wins", testConcurrentAppend},
		{"the events of one append are stored all or none", testAtomicAppend},
		{"read all returns every event once in global order", testReadAll},
		{"a tailing reader never skips a concurrently committed event", testTailingReader},
		{"snapshots round trip and a snapshotted post equals the folded one", testSnapshots},
		{"a snapshot of another schema is ignored", testSnapshotSchema},
		{"checkpoints default to zero and keep the last value", testCheckpoints},
		{"a write check passes on a healthy store, repeats and stores no event", testCheckWrite},
		{fmt.Sprintf("a %d-event stream loads whole and from a version", cfg.longStream), func(t *testing.T, s write.EventStore) {
			testLongStream(t, s, cfg.longStream, cfg.chunk)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("ping: %v", err)
			}
			c.run(t, s)
		})
	}
}

var idSeq atomic.Int64

// events returns n new events of the post, with payloads of the given types in turn.
func events(tb testing.TB, postID string, n int) []write.Event {
	tb.Helper()
	at := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	out := make([]write.Event, n)
	for i := range out {
		id := fmt.Sprintf("ev-%d-%d", time.Now().UnixNano(), idSeq.Add(1))
		e, err := write.NewEvent(id, postID, "alice", at.Add(time.Duration(i)*time.Millisecond),
			write.CommentAdded{CommentID: id, Author: "alice", Text: fmt.Sprintf("comment %d", i)})
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = e
	}
	return out
}

func mustAppend(tb testing.TB, s write.EventStore, stream string, expected int64, evs []write.Event) []write.Event {
	tb.Helper()
	stored, err := s.Append(context.Background(), stream, expected, evs)
	if err != nil {
		tb.Fatalf("append %d events to %s at %d: %v", len(evs), stream, expected, err)
	}
	return stored
}

func mustLoad(tb testing.TB, s write.EventStore, stream string, after int64) []write.Event {
	tb.Helper()
	evs, err := s.Load(context.Background(), stream, after)
	if err != nil {
		tb.Fatalf("load %s after %d: %v", stream, after, err)
	}
	return evs
}

// sameEvents compares events field by field; JSON data is compared by meaning, times by instant.
func sameEvents(tb testing.TB, got, want []write.Event) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.At.Equal(w.At) || g.At.Location() != time.UTC {
			tb.Fatalf("event %d: time %v (%v), want %v in UTC", i, g.At, g.At.Location(), w.At)
		}
		var gd, wd any
		if err := json.Unmarshal(g.Data, &gd); err != nil {
			tb.Fatalf("event %d: data %q: %v", i, g.Data, err)
		}
		_ = json.Unmarshal(w.Data, &wd)
		if !reflect.DeepEqual(gd, wd) {
			tb.Fatalf("event %d: data %s, want %s", i, g.Data, w.Data)
		}
		g.At, w.At, g.Data, w.Data = time.Time{}, time.Time{}, nil, nil
		if !reflect.DeepEqual(g, w) {
			tb.Fatalf("event %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func testRoundTrip(t *testing.T, s write.EventStore) {
	evs := events(t, "p1", 3)
	stored := mustAppend(t, s, write.PostStream("p1"), 0, evs)
	for i, e := range stored {
		if e.Stream != write.PostStream("p1") || e.Version != int64(i+1) || e.ID != evs[i].ID {
			t.Fatalf("stored event %d: stream %q version %d id %q", i, e.Stream, e.Version, e.ID)
		}
		if i > 0 && e.Position != stored[i-1].Position+1 {
			t.Fatalf("positions of one append not consecutive: %d after %d", e.Position, stored[i-1].Position)
		}
	}
	sameEvents(t, mustLoad(t, s, write.PostStream("p1"), 0), stored)
	sameEvents(t, mustLoad(t, s, write.PostStream("p1"), 2), stored[2:])
	if got := mustLoad(t, s, write.PostStream("unknown"), 0); len(got) != 0 {
		t.Fatalf("unknown stream has %d events", len(got))
	}
	// The payload decodes back into today's type.
	p, err := write.Decode(stored[0])
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := p.(write.CommentAdded); !ok || c.Text != "comment 0" {
		t.Fatalf("decoded %#v", p)
	}
}

func testExpectedVersion(t *testing.T, s write.EventStore) {
	stream := write.PostStream("p2")
	mustAppend(t, s, stream, 0, events(t, "p2", 2))
	for _, expected := range []int64{0, 1, 3, 7} {
		_, err := s.Append(context.Background(), stream, expected, events(t, "p2", 1))
		if !errors.Is(err, write.ErrConflict) {
			t.Fatalf("append at %d to a stream at 2: err %v, want a conflict", expected, err)
		}
	}
	mustAppend(t, s, stream, 2, events(t, "p2", 1))
	if got := mustLoad(t, s, stream, 0); len(got) != 3 {
		t.Fatalf("stream has %d events, want 3", len(got))
	}
}

func testConcurrentAppend(t *testing.T, s write.EventStore) {
	stream := write.PostStream("p3")
	mustAppend(t, s, stream, 0, events(t, "p3", 1))
	const writers = 16
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := events(t, "p3", 1)
			<-start
			_, err := s.Append(context.Background(), stream, 1, evs)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, write.ErrConflict):
				conflicts.Add(1)
			default:
				t.Errorf("append: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != writers-1 {
		t.Fatalf("%d wins and %d conflicts, want 1 and %d", wins.Load(), conflicts.Load(), writers-1)
	}
	if got := mustLoad(t, s, stream, 0); len(got) != 2 {
		t.Fatalf("stream has %d events, want 2", len(got))
	}
}

func testAtomicAppend(t *testing.T, s write.EventStore) {
	stream := write.PostStream("p4")
	mustAppend(t, s, stream, 0, events(t, "p4", 1))
	// A three-event append at a stale version must not leave its second and third events behind.
	if _, err := s.Append(context.Background(), stream, 0, events(t, "p4", 3)); !errors.Is(err, write.ErrConflict) {
		t.Fatalf("stale append: %v", err)
	}
	if got := mustLoad(t, s, stream, 0); len(got) != 1 {
		t.Fatalf("a failed append left %d events behind", len(got)-1)
	}
	// Racing multi-event appends: exactly one append's events, never a mix.
	const writers, perAppend = 8, 5
	batches := make([][]write.Event, writers)
	for i := range batches {
		batches[i] = events(t, "p4", perAppend)
	}
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = s.Append(context.Background(), stream, 1, batches[i])
		}()
	}
	wg.Wait()
	got := mustLoad(t, s, stream, 1)
	if len(got) != perAppend {
		t.Fatalf("stream grew by %d events, want %d", len(got), perAppend)
	}
	winner := -1
	for i, b := range batches {
		if b[0].ID == got[0].ID {
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("first stored event %s is from no append", got[0].ID)
	}
	for j := range got {
		if got[j].ID != batches[winner][j].ID || got[j].Version != int64(j+2) {
			t.Fatalf("event %d is %s v%d, want %s v%d: appends were mixed", j, got[j].ID, got[j].Version, batches[winner][j].ID, j+2)
		}
	}
}

// readAll pages through the whole store.
func readAll(tb testing.TB, s write.EventStore, page int) []write.Event {
	tb.Helper()
	var all []write.Event
	var after int64
	for {
		evs, err := s.ReadAll(context.Background(), after, page)
		if err != nil {
			tb.Fatalf("read all after %d: %v", after, err)
		}
		if len(evs) > page {
			tb.Fatalf("read all returned %d events, limit %d", len(evs), page)
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].Position
	}
}

func testReadAll(t *testing.T, s write.EventStore) {
	const writers, appends = 4, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			post := fmt.Sprintf("ra%d", w)
			for i := range appends {
				if _, err := s.Append(context.Background(), write.PostStream(post), int64(i*2), events(t, post, 2)); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	all := readAll(t, s, 7)
	if len(all) != writers*appends*2 {
		t.Fatalf("read %d events, want %d", len(all), writers*appends*2)
	}
	last := map[string]int64{}
	seen := map[string]bool{}
	for i, e := range all {
		if i > 0 && e.Position != all[i-1].Position+1 {
			t.Fatalf("positions not dense: %d after %d", e.Position, all[i-1].Position)
		}
		if e.Version != last[e.Stream]+1 {
			t.Fatalf("stream %s: version %d after %d in global order", e.Stream, e.Version, last[e.Stream])
		}
		last[e.Stream] = e.Version
		if seen[e.ID] {
			t.Fatalf("event %s read twice", e.ID)
		}
		seen[e.ID] = true
	}
	head, err := s.Head(context.Background())
	if err != nil || head != all[len(all)-1].Position {
		t.Fatalf("head %d (%v), want %d", head, err, all[len(all)-1].Position)
	}
	if evs, err := s.ReadAll(context.Background(), head, 10); err != nil || len(evs) != 0 {
		t.Fatalf("read after head: %d events, %v", len(evs), err)
	}
}

// testTailingReader checks PITFALLS 2: a reader that checkpoints the last position it saw, while
// writers commit concurrently, must still see every event.
func testTailingReader(t *testing.T, s write.EventStore) {
	const writers, appends = 4, 15
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			post := fmt.Sprintf("tail%d", w)
			for i := range appends {
				if _, err := s.Append(ctx, write.PostStream(post), int64(i), events(t, post, 1)); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	writing := make(chan struct{})
	go func() { wg.Wait(); close(writing) }()
	seen := map[string]bool{}
	var after int64
	for done := false; !done; {
		select {
		case <-writing:
			done = true // one more read after the writers finished
		default:
		}
		evs, err := s.ReadAll(ctx, after, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			seen[e.ID] = true
			after = e.Position
		}
		if len(evs) == 5 {
			done = false // more may be waiting
		}
	}
	if len(seen) != writers*appends {
		t.Fatalf("tailing reader saw %d events, want %d", len(seen), writers*appends)
	}
}

func testSnapshots(t *testing.T, s write.EventStore) {
	ctx := context.Background()
	if _, ok, err := s.LoadSnapshot(ctx, "none"); ok || err != nil {
		t.Fatalf("snapshot of unknown stream: ok %v, err %v", ok, err)
	}
	snap := write.Snapshot{Stream: "s1", Version: 3, Schema: 1, State: []byte(`{"a":1}`)}
	if err := s.SaveSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	snap2 := write.Snapshot{Stream: "s1", Version: 9, Schema: 1, State: []byte(`{"a":2}`)}
	if err := s.SaveSnapshot(ctx, snap2); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.LoadSnapshot(ctx, "s1")
	if err != nil || !ok || got.Version != 9 || got.Schema != 1 || string(got.State) != `{"a":2}` {
		t.Fatalf("snapshot: %+v ok %v err %v", got, ok, err)
	}

	// Through the handler: a post long enough to be snapshotted several times loads equal to the
	// same post folded from its events alone.
	h := write.NewHandler(s, write.WithSnapshotEvery(5))
	p, err := h.CreatePost(ctx, "alice", "hello", "")
	if err != nil {
		t.Fatal(err)
	}
	var commentIDs []string
	for i := range 23 {
		_, c, err := h.AddComment(ctx, fmt.Sprintf("user%d", i%3), p.ID, fmt.Sprintf("comment %d", i))
		if err != nil {
			t.Fatal(err)
		}
		commentIDs = append(commentIDs, c.ID)
		if i%4 == 0 {
			if _, err := h.EditPost(ctx, "alice", p.ID, fmt.Sprintf("hello %d", i), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := h.RemoveComment(ctx, "alice", p.ID, commentIDs[3]); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.LoadSnapshot(ctx, write.PostStream(p.ID)); !ok || err != nil {
		t.Fatalf("no snapshot was saved (ok %v, err %v)", ok, err)
	}
	// A new handler has no cached posts, so this load starts from the stored snapshot.
	loaded, err := write.NewHandler(s).Post(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	folded := write.Post{ID: p.ID}
	for _, e := range mustLoad(t, s, write.PostStream(p.ID), 0) {
		if err := folded.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(loaded, folded) {
		t.Fatalf("snapshotted post differs from folded:\n got %+v\nwant %+v", loaded, folded)
	}
	if folded.Version != 1+23+6+1 || len(folded.Comments) != 22 {
		t.Fatalf("folded post at version %d with %d comments", folded.Version, len(folded.Comments))
	}
}

func testSnapshotSchema(t *testing.T, s write.EventStore) {
	ctx := context.Background()
	h := write.NewHandler(s)
	p, err := h.CreatePost(ctx, "bob", "first", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.EditPost(ctx, "bob", p.ID, "second", nil); err != nil {
		t.Fatal(err)
	}
	// A snapshot written by some other version of the aggregate, claiming a version it should not.
	bad := write.Snapshot{Stream: write.PostStream(p.ID), Version: 2, Schema: write.PostSnapshotSchema + 1, State: []byte(`{"id":"x","message":"stale"}`)}
	if err := s.SaveSnapshot(ctx, bad); err != nil {
		t.Fatal(err)
	}
	got, err := write.NewHandler(s).Post(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != "second" || got.Version != 2 {
		t.Fatalf("post loaded as %+v, want message second at version 2", got)
	}
}

func testCheckpoints(t *testing.T, s write.EventStore) {
	ctx := context.Background()
	if pos, err := s.Checkpoint(ctx, "relay"); pos != 0 || err != nil {
		t.Fatalf("fresh checkpoint %d, %v", pos, err)
	}
	for _, pos := range []int64{5, 42} {
		if err := s.SaveCheckpoint(ctx, "relay", pos); err != nil {
			t.Fatal(err)
		}
	}
	if pos, err := s.Checkpoint(ctx, "relay"); pos != 42 || err != nil {
		t.Fatalf("checkpoint %d, %v; want 42", pos, err)
	}
	if pos, _ := s.Checkpoint(ctx, "other"); pos != 0 {
		t.Fatalf("checkpoints are not separate by name: %d", pos)
	}
}

func testCheckWrite(t *testing.T, s write.EventStore) {
	ctx := context.Background()
	stored := mustAppend(t, s, write.PostStream("p1"), 0, events(t, "p1", 1))
	// Readiness probes call it again and again, also beside appends.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if err := s.CheckWrite(ctx); err != nil {
					t.Errorf("check write on a healthy store: %v", err)
					return
				}
			}
		}()
	}
	mustAppend(t, s, write.PostStream("p2"), 0, events(t, "p2", 1))
	wg.Wait()
	if head, err := s.Head(ctx); err != nil || head != stored[0].Position+1 {
		t.Fatalf("head %d, %v after two appends and write checks; want %d", head, err, stored[0].Position+1)
	}
	all := readAll(t, s, 10)
	if len(all) != 2 {
		t.Fatalf("read all found %d events after two appends and write checks, want 2", len(all))
	}
	if pos, err := s.Checkpoint(ctx, "relay"); pos != 0 || err != nil {
		t.Fatalf("a write check touched the checkpoints: %d, %v", pos, err)
	}
}

func testLongStream(t *testing.T, s write.EventStore, n, chunk int) {
	stream := write.PostStream("long")
	var ids []string
	for v := 0; v < n; v += chunk {
		evs := events(t, "long", min(chunk, n-v))
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
		mustAppend(t, s, stream, int64(v), evs)
	}
	all := mustLoad(t, s, stream, 0)
	if len(all) != n {
		t.Fatalf("loaded %d events, want %d", len(all), n)
	}
	for i, e := range all {
		if e.Version != int64(i+1) || e.ID != ids[i] {
			t.Fatalf("event %d: version %d id %s, want %d %s", i, e.Version, e.ID, i+1, ids[i])
		}
	}
	tail := mustLoad(t, s, stream, int64(n-10))
	if len(tail) != 10 || tail[0].Version != int64(n-9) {
		t.Fatalf("tail: %d events from version %d", len(tail), tail[0].Version)
	}
}
