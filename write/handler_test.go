package write_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/sqlite"
)

func openStore(tb testing.TB) *sqlite.EventStore {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "events.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// countingStore counts the events that loads return, to show what a command reads.
type countingStore struct {
	write.EventStore
	loaded atomic.Int64
}

func (c *countingStore) Load(ctx context.Context, stream string, after int64) ([]write.Event, error) {
	evs, err := c.EventStore.Load(ctx, stream, after)
	c.loaded.Add(int64(len(evs)))
	return evs, err
}

func TestCreatePostWithClientMutationIDIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	h := write.NewHandler(s)
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := h.CreatePost(ctx, "alice", "once", "m-1")
			if err != nil {
				t.Errorf("create: %v", err)
				return
			}
			ids[i] = p.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("retries of one clientMutationId created different posts: %v", ids)
		}
	}
	if evs, _ := s.ReadAll(ctx, 0, 100); len(evs) != 1 {
		t.Fatalf("%d events stored, want 1", len(evs))
	}
	other, err := h.CreatePost(ctx, "bob", "mine", "m-1")
	if err != nil || other.ID == ids[0] || other.Author != "bob" {
		t.Fatalf("another user's same clientMutationId: %+v, %v", other, err)
	}
	plain, _ := h.CreatePost(ctx, "alice", "once", "")
	if plain.ID == ids[0] {
		t.Fatal("a create without clientMutationId reused a post")
	}
}

func TestEditPostExpectedVersion(t *testing.T) {
	ctx := context.Background()
	h := write.NewHandler(openStore(t))
	p, _ := h.CreatePost(ctx, "alice", "v1", "")
	v := int64(1)
	if _, err := h.EditPost(ctx, "alice", p.ID, "v2", &v); err != nil {
		t.Fatal(err)
	}
	if _, err := h.EditPost(ctx, "alice", p.ID, "v3", &v); !errors.Is(err, write.ErrConflict) {
		t.Fatalf("edit at a stale version: %v, want a conflict", err)
	}
	if _, err := h.EditPost(ctx, "bob", p.ID, "mine", &v); !errors.Is(err, write.ErrForbidden) {
		t.Fatalf("edit by someone else at a stale version: %v, want FORBIDDEN (a version is only told to the author)", err)
	}
	// Concurrent edits at the same expected version: one wins, the rest get CONFLICT.
	v = 2
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.EditPost(ctx, "alice", p.ID, fmt.Sprintf("racer %d", i), &v)
			if err == nil {
				wins.Add(1)
			} else if errors.Is(err, write.ErrConflict) {
				conflicts.Add(1)
			} else {
				t.Errorf("edit: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != 9 {
		t.Fatalf("%d wins, %d conflicts", wins.Load(), conflicts.Load())
	}
	// Without an expected version, concurrent edits all succeed (each retried on a conflict).
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.EditPost(ctx, "alice", p.ID, fmt.Sprintf("free %d", i), nil); err != nil {
				t.Errorf("edit: %v", err)
			}
		}()
	}
	wg.Wait()
	got, _ := h.Post(ctx, p.ID)
	if got.Version != 13 {
		t.Fatalf("post at version %d, want 13", got.Version)
	}
}

func TestHotPostConcurrentLikes(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	h := write.NewHandler(s)
	p, _ := h.CreatePost(ctx, "alice", "hot", "")
	const likers = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range likers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := h.LikePost(ctx, fmt.Sprintf("user%03d", i), p.ID)
			if err != nil {
				t.Errorf("like by user%03d: %v", i, err)
				return
			}
			if !res.Liked || !res.Changed || res.Version != 1 {
				t.Errorf("like by user%03d: %+v", i, res)
			}
		}()
	}
	close(start)
	wg.Wait()
	likes := map[string]int{}
	evs, _ := s.ReadAll(ctx, 0, 10000)
	for _, e := range evs {
		if e.Type == write.TypePostLiked {
			likes[e.Actor]++
		}
	}
	if len(likes) != likers {
		t.Fatalf("%d users' likes stored, want %d", len(likes), likers)
	}
	for u, n := range likes {
		if n != 1 {
			t.Fatalf("%s liked %d times", u, n)
		}
	}
}

func TestRepeatedLikeAndUnlikeAreNoOps(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	h := write.NewHandler(s)
	p, _ := h.CreatePost(ctx, "alice", "hi", "")
	steps := []struct {
		like    bool
		liked   bool
		changed bool
	}{{true, true, true}, {true, true, false}, {false, false, true}, {false, false, false}, {true, true, true}}
	for i, st := range steps {
		var res write.LikeResult
		var err error
		if st.like {
			res, err = h.LikePost(ctx, "bob", p.ID)
		} else {
			res, err = h.UnlikePost(ctx, "bob", p.ID)
		}
		if err != nil || res.Liked != st.liked || res.Changed != st.changed {
			t.Fatalf("step %d: %+v, %v", i, res, err)
		}
	}
	if evs, _ := s.Load(ctx, write.LikeStream(p.ID, "bob"), 0); len(evs) != 3 {
		t.Fatalf("like stream has %d events, want 3", len(evs))
	}
}

func TestCommandsOnDeletedPostAreNotFound(t *testing.T) {
	ctx := context.Background()
	h := write.NewHandler(openStore(t))
	p, _ := h.CreatePost(ctx, "alice", "bye", "")
	_, c, _ := h.AddComment(ctx, "bob", p.ID, "hi")
	if err := h.DeletePost(ctx, "alice", p.ID); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"edit":           func() error { _, err := h.EditPost(ctx, "alice", p.ID, "x", nil); return err }(),
		"like":           func() error { _, err := h.LikePost(ctx, "bob", p.ID); return err }(),
		"unlike":         func() error { _, err := h.UnlikePost(ctx, "bob", p.ID); return err }(),
		"delete":         h.DeletePost(ctx, "alice", p.ID),
		"comment":        func() error { _, _, err := h.AddComment(ctx, "bob", p.ID, "x"); return err }(),
		"edit comment":   func() error { _, _, err := h.EditComment(ctx, "bob", p.ID, c.ID, "x"); return err }(),
		"remove comment": func() error { _, err := h.RemoveComment(ctx, "bob", p.ID, c.ID); return err }(),
	} {
		if !errors.Is(err, write.ErrNotFound) {
			t.Errorf("%s on a deleted post: %v, want NOT_FOUND", name, err)
		}
	}
}

func TestConcurrentCommentsAllLand(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	// Two handlers on one store stand for two gateway processes: within one, commands on a post
	// queue; between them, the store's conflicts are retried.
	handlers := []*write.Handler{write.NewHandler(store), write.NewHandler(store)}
	p, _ := handlers[0].CreatePost(ctx, "alice", "discuss", "")
	const commenters = 300 // a crowd on one post stream: every comment must land
	var wg sync.WaitGroup
	for i := range commenters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := handlers[i%2].AddComment(ctx, fmt.Sprintf("u%d", i), p.ID, "me too"); err != nil {
				t.Errorf("comment: %v", err)
			}
		}()
	}
	wg.Wait()
	got, _ := write.NewHandler(store).Post(ctx, p.ID)
	if len(got.Comments) != commenters || got.Version != commenters+1 {
		t.Fatalf("%d comments at version %d, want %d at %d", len(got.Comments), got.Version, commenters, commenters+1)
	}
}

// TestLikeReadsDoNotGrowWithLikes pins the stream layout: a like loads the post stream and the
// liker's own stream, never the other likes.
func TestLikeReadsDoNotGrowWithLikes(t *testing.T) {
	ctx := context.Background()
	s := &countingStore{EventStore: openStore(t)}
	h := write.NewHandler(s)
	p, _ := h.CreatePost(ctx, "alice", "popular", "")
	cost := func(user string) int64 {
		before := s.loaded.Load()
		if _, err := h.LikePost(ctx, user, p.ID); err != nil {
			t.Fatal(err)
		}
		return s.loaded.Load() - before
	}
	first := cost("first")
	for i := range 500 {
		if _, err := h.LikePost(ctx, fmt.Sprintf("u%d", i), p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if later := cost("later"); later != first {
		t.Fatalf("a like after 500 others loaded %d events, the first loaded %d", later, first)
	}
}

// TestTogglingALikeDoesNotGrowItsCost: one user's like stream grows with every toggle; a like
// must not fold it from the start each time.
func TestTogglingALikeDoesNotGrowItsCost(t *testing.T) {
	ctx := context.Background()
	s := &countingStore{EventStore: openStore(t)}
	h := write.NewHandler(s)
	p, _ := h.CreatePost(ctx, "alice", "flip", "")
	for range 50 {
		if _, err := h.LikePost(ctx, "bob", p.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := h.UnlikePost(ctx, "bob", p.ID); err != nil {
			t.Fatal(err)
		}
	}
	before := s.loaded.Load()
	res, err := h.LikePost(ctx, "bob", p.ID)
	if err != nil || !res.Liked || res.Version != 101 {
		t.Fatalf("like after 100 toggles: %+v, %v", res, err)
	}
	if n := s.loaded.Load() - before; n > 1 {
		t.Fatalf("a like after 100 toggles loaded %d events", n)
	}
}

func TestActorIsRequiredAndBounded(t *testing.T) {
	h := write.NewHandler(openStore(t))
	if _, err := h.CreatePost(context.Background(), "", "anon", ""); !errors.Is(err, write.ErrForbidden) {
		t.Fatalf("create without an actor: %v", err)
	}
	long := strings.Repeat("😀", write.MaxUserLen+1)
	if _, err := h.CreatePost(context.Background(), long, "hi", ""); !errors.Is(err, write.ErrInvalid) {
		t.Fatalf("create by a %d-character user: %v", write.MaxUserLen+1, err)
	}
	if _, err := h.CreatePost(context.Background(), long[:len(long)-len("😀")], "hi", ""); err != nil {
		t.Fatalf("create by a %d-character user: %v", write.MaxUserLen, err)
	}
	for _, bad := range []string{"a/b", "tab\there", "nl\n"} {
		if _, err := h.CreatePost(context.Background(), bad, "hi", ""); !errors.Is(err, write.ErrInvalid) {
			t.Errorf("create by user %q: %v, want BAD_USER_INPUT", bad, err)
		}
	}
}

// TestIDsThatNameOtherStreamsAreNotFound: ids are part of stream names, so an id that would name
// another stream (a user's like stream of some post) must name no post at all.
func TestIDsThatNameOtherStreamsAreNotFound(t *testing.T) {
	ctx := context.Background()
	h := write.NewHandler(openStore(t))
	p, _ := h.CreatePost(ctx, "alice", "hi", "")
	if _, err := h.LikePost(ctx, "bob", p.ID); err != nil {
		t.Fatal(err)
	}
	sneaky := p.ID + "/likes/bob" // PostStream(sneaky) == LikeStream(p.ID, "bob")
	if _, err := h.LikePost(ctx, "carol", sneaky); !errors.Is(err, write.ErrNotFound) {
		t.Fatalf("like of %q: %v, want NOT_FOUND", sneaky, err)
	}
	if _, _, err := h.AddComment(ctx, "carol", sneaky, "x"); !errors.Is(err, write.ErrNotFound) {
		t.Fatalf("comment on %q: %v, want NOT_FOUND", sneaky, err)
	}
	if _, err := h.CreatePost(ctx, "alice", "hi", strings.Repeat("m", write.MaxClientMutationIDLen+1)); !errors.Is(err, write.ErrInvalid) {
		t.Fatalf("an oversized clientMutationId: %v", err)
	}
}
