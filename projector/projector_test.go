package projector_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postgate/postgate/projector"
	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/readtest"
	rsqlite "github.com/postgate/postgate/read/sqlite"
	"github.com/postgate/postgate/write"
	wsqlite "github.com/postgate/postgate/write/sqlite"
)

type env struct {
	dir    string
	store  *wsqlite.EventStore
	model  *rsqlite.Model
	h      *write.Handler
	proj   *projector.Projector
	readDB string
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	store, err := wsqlite.Open(ctx, filepath.Join(dir, "events.db"))
	if err != nil {
		tb.Fatalf("open event store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	path := filepath.Join(dir, "read.db")
	model, err := rsqlite.Open(ctx, path)
	if err != nil {
		tb.Fatalf("open read model: %v", err)
	}
	tb.Cleanup(func() { model.Close() })
	if err := model.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return &env{dir: dir, store: store, model: model, h: write.NewHandler(store), proj: projector.New(model, store), readDB: path}
}

func tctx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// events returns every stored event.
func (e *env) events(tb testing.TB) []write.Event {
	tb.Helper()
	evs, err := e.store.ReadAll(tctx(tb), 0, 1_000_000)
	if err != nil {
		tb.Fatalf("read all: %v", err)
	}
	return evs
}

// project applies everything after pos through the projector and returns the new position.
func (e *env) project(tb testing.TB, pos int64) int64 {
	tb.Helper()
	for {
		evs, err := e.store.ReadAll(tctx(tb), pos, 500)
		if err != nil {
			tb.Fatalf("read all: %v", err)
		}
		if len(evs) == 0 {
			return pos
		}
		if _, err := e.proj.Apply(tctx(tb), evs); err != nil {
			tb.Fatalf("project: %v", err)
		}
		pos = evs[len(evs)-1].Position
	}
}

func (e *env) noDiffs(tb testing.TB) {
	tb.Helper()
	diffs, err := projector.Verify(tctx(tb), e.store, e.model)
	if err != nil {
		tb.Fatalf("verify: %v", err)
	}
	for _, d := range diffs {
		tb.Errorf("diff: %s", d)
	}
}

func TestApplyFillsGaps(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, err := e.h.CreatePost(ctx, "ann", "hello", "")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := e.h.EditPost(ctx, "ann", p.ID, "edited", nil); err != nil {
		t.Fatalf("edit: %v", err)
	}
	if _, _, err := e.h.AddComment(ctx, "bob", p.ID, "nice"); err != nil {
		t.Fatalf("comment: %v", err)
	}
	for _, u := range []string{"bob", "cid"} {
		if _, err := e.h.LikePost(ctx, u, p.ID); err != nil {
			t.Fatalf("like: %v", err)
		}
	}
	all := e.events(t)
	last := all[len(all)-1] // cid's like: its post was never projected
	changes, err := e.proj.Apply(ctx, []write.Event{last})
	if err != nil {
		t.Fatalf("apply a like of an unknown post: %v", err)
	}
	if len(changes) != 1 || changes[0].Likes != 1 || !changes[0].Created || changes[0].Version != 3 {
		t.Fatalf("changes = %+v, want the post created at version 3 with cid's like", changes)
	}
	// bob's like is still missing: it lives in another stream, so nothing forced it in.
	if got, _, _ := e.model.Post(ctx, p.ID); got.Likes != 1 || got.Message != "edited" || got.CommentCount != 1 {
		t.Fatalf("post = %+v", got)
	}
	if _, err := e.h.EditPost(ctx, "ann", p.ID, "again", nil); err != nil {
		t.Fatalf("edit: %v", err)
	}
	if _, err := e.h.EditPost(ctx, "ann", p.ID, "and again", nil); err != nil {
		t.Fatalf("edit: %v", err)
	}
	all = e.events(t)
	if _, err := e.proj.Apply(ctx, all[len(all)-1:]); err != nil { // version 5 after 3
		t.Fatalf("apply after a gap: %v", err)
	}
	if got, _, _ := e.model.Post(ctx, p.ID); got.Version != 5 || got.Message != "and again" {
		t.Fatalf("post = %+v, want version 5", got)
	}
	e.project(t, 0) // replay everything: idempotent, and brings bob's like
	e.noDiffs(t)
}

// TestApplyFillsAHoleInsideABatch: a batch holding v1 and v3 of a stream starts right after what
// is applied, yet lacks v2 (delivered late by the relay); the store fills it.
func TestApplyFillsAHoleInsideABatch(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, err := e.h.CreatePost(ctx, "ann", "v1", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"v2", "v3"} {
		if _, err := e.h.EditPost(ctx, "ann", p.ID, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	all := e.events(t)
	if _, err := e.proj.Apply(ctx, []write.Event{all[0], all[2]}); err != nil {
		t.Fatalf("apply v1 and v3: %v", err)
	}
	if got, _, _ := e.model.Post(ctx, p.ID); got.Version != 3 || got.Message != "v3" {
		t.Fatalf("post = %+v, want version 3", got)
	}
	e.noDiffs(t)
}

func TestApplyGivesUpOnAGapTheStoreCannotFill(t *testing.T) {
	e := newEnv(t)
	orphan := readtest.Like(t, "ghost", "bob", 1, true, readtest.Base)
	_, err := e.proj.Apply(tctx(t), []write.Event{orphan})
	if !errors.Is(err, read.ErrGap) {
		t.Fatalf("apply a like of a post the store lacks: %v, want ErrGap", err)
	}
}

func TestPoisonEventsAreDistinguishable(t *testing.T) {
	e := newEnv(t)
	good := readtest.Created(t, "p1", "ann", "hello", readtest.Base)
	unknown := good
	unknown.Type = "post.exploded"
	future := good
	future.Schema = 99
	bad := good
	bad.Data = json.RawMessage(`{"author": 5}`)
	for name, ev := range map[string]write.Event{"unknown type": unknown, "future schema": future, "malformed data": bad} {
		_, err := e.proj.Apply(tctx(t), []write.Event{good, ev})
		var pe *projector.PoisonError
		if !errors.Is(err, projector.ErrPoison) || !errors.As(err, &pe) || pe.Event.ID != ev.ID {
			t.Errorf("%s: %v, want a PoisonError naming the event", name, err)
		}
	}
	if _, ok, _ := e.model.Post(tctx(t), "p1"); ok {
		t.Fatalf("a batch with a poison event was partly applied")
	}
}

func TestVerifyCatchesTampering(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	var ids []string
	for i := range 5 {
		p, err := e.h.CreatePost(ctx, "ann", fmt.Sprintf("post %d", i), "")
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		ids = append(ids, p.ID)
		if _, err := e.h.LikePost(ctx, "bob", p.ID); err != nil {
			t.Fatalf("like: %v", err)
		}
		if _, _, err := e.h.AddComment(ctx, "cid", p.ID, "hi"); err != nil {
			t.Fatalf("comment: %v", err)
		}
	}
	if err := e.h.DeletePost(ctx, "ann", ids[4]); err != nil {
		t.Fatalf("delete: %v", err)
	}
	e.project(t, 0)
	e.noDiffs(t)

	db, err := sql.Open("sqlite", "file:"+e.readDB+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatalf("open raw: %v", err)
	}
	defer db.Close()
	for _, q := range []string{
		"UPDATE posts SET likes = 99 WHERE id = '" + ids[0] + "'",
		"UPDATE posts SET message = 'tampered' WHERE id = '" + ids[1] + "'",
		"DELETE FROM comments WHERE post_id = '" + ids[2] + "'",
		"UPDATE likes SET liked = 0 WHERE post_id = '" + ids[3] + "'",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	diffs, err := projector.Verify(ctx, e.store, e.model)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	var got []string
	for _, d := range diffs {
		got = append(got, d.String())
	}
	report := strings.Join(got, "\n")
	for _, want := range []string{
		"post " + ids[0] + ": likes: want 1, got 99",
		"post " + ids[1] + `: message: want "post 1", got "tampered"`,
		"post " + ids[2] + ": comment ",
		"post " + ids[3] + ": like by bob: want present, got absent",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if len(diffs) != 4 {
		t.Errorf("%d diffs, want 4:\n%s", len(diffs), report)
	}
}

func TestRebuildUnderConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	// Some history first, projected as the live projector would.
	for i := range 150 {
		if _, err := e.h.CreatePost(ctx, "ann", fmt.Sprintf("old %d", i), ""); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	pos := e.project(t, 0)
	// Tamper with the live generation: a rebuild must not carry this over.
	db, err := sql.Open("sqlite", "file:"+e.readDB+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatalf("open raw: %v", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "UPDATE posts SET likes = 42"); err != nil {
		t.Fatalf("tamper: %v", err)
	}

	var writers sync.WaitGroup
	var stopLive atomic.Bool
	errs := make(chan error, 16)
	for w := range 3 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			user := fmt.Sprintf("user%d", w)
			for i := range 25 {
				p, err := e.h.CreatePost(ctx, user, fmt.Sprintf("new %d", i), "")
				if err != nil {
					errs <- err
					return
				}
				if _, err := e.h.LikePost(ctx, "fan", p.ID); err != nil {
					errs <- err
					return
				}
				if _, _, err := e.h.AddComment(ctx, user, p.ID, "c"); err != nil {
					errs <- err
					return
				}
				if i%5 == 0 {
					if err := e.h.DeletePost(ctx, user, p.ID); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	// The live projector has its own connections to the read model, as serve in another process
	// would: the switch must reach it through the database, not through shared memory.
	live, err := rsqlite.Open(ctx, e.readDB)
	if err != nil {
		t.Fatalf("open second read model: %v", err)
	}
	defer live.Close()
	liveProj := projector.New(live, e.store)
	liveDone := make(chan int64)
	go func() { // the live projector, following the store like the Kafka consumer would
		p := pos
		for !stopLive.Load() {
			evs, err := e.store.ReadAll(ctx, p, 50)
			if err != nil {
				errs <- err
				break
			}
			if len(evs) == 0 {
				time.Sleep(time.Millisecond) // polling pace, not synchronisation
				continue
			}
			if _, err := liveProj.Apply(ctx, evs); err != nil {
				errs <- err
				break
			}
			p = evs[len(evs)-1].Position
		}
		liveDone <- p
	}()

	// Start the rebuild only once the writers are under way, so the two really overlap.
	deadline := time.Now().Add(30 * time.Second)
	for {
		head, err := e.store.Head(ctx)
		if err != nil {
			t.Fatalf("head: %v", err)
		}
		if head >= pos+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writers made no progress")
		}
		time.Sleep(time.Millisecond)
	}
	var calls atomic.Int64
	st, err := projector.Rebuild(ctx, e.store, e.model, func(done, total int64) {
		calls.Add(1)
		if done > total {
			t.Errorf("progress %d of %d", done, total)
		}
	})
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	writers.Wait()
	stopLive.Store(true)
	last := <-liveDone
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent work: %v", err)
	}
	e.project(t, last) // the live projector drains what the writers appended last
	e.noDiffs(t)
	if calls.Load() == 0 {
		t.Errorf("progress was never reported")
	}
	if gen, _ := e.model.ActiveGeneration(ctx); gen != st.Generation || st.Replaced == gen {
		t.Fatalf("active generation %d, rebuild stats %+v", gen, st)
	}
	for _, table := range []string{"posts", "comments", "likes"} {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+table+" WHERE gen <> ?", st.Generation).Scan(&n); err != nil {
			t.Fatalf("count old rows: %v", err)
		}
		if n != 0 {
			t.Errorf("%d rows of old generations left in %s", n, table)
		}
	}
}

// unreadableStore fails every Load, as an event store that is down does.
type unreadableStore struct{ write.EventStore }

func (unreadableStore) Load(context.Context, string, int64) ([]write.Event, error) {
	return nil, errors.New("connection refused")
}

// TestAGapTheStoreCannotBeReadForIsNotTheEventsFault: the consumer parks events that are at fault;
// a gap fill failing because the store is down must say so, so the event is retried instead.
func TestAGapTheStoreCannotBeReadForIsNotTheEventsFault(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, _ := e.h.CreatePost(ctx, "ann", "v1", "")
	if _, err := e.h.LikePost(ctx, "bob", p.ID); err != nil {
		t.Fatal(err)
	}
	all := e.events(t)
	proj := projector.New(e.model, unreadableStore{e.store})
	_, err := proj.Apply(ctx, all[1:]) // the like, before its post
	if !errors.Is(err, projector.ErrStoreUnavailable) || errors.Is(err, projector.ErrPoison) {
		t.Fatalf("apply with the store down: %v, want ErrStoreUnavailable", err)
	}
}

// TestVerifyReportsAnUnfoldableEventAsADifference: an event this binary cannot decode is listed,
// and the rest of the store is still compared.
func TestVerifyReportsAnUnfoldableEventAsADifference(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, _ := e.h.CreatePost(ctx, "ann", "fine", "")
	if _, err := e.h.LikePost(ctx, "bob", p.ID); err != nil {
		t.Fatal(err)
	}
	future := write.Event{ID: "from-the-future", Type: write.TypePostLiked, Schema: 99, PostID: p.ID,
		Actor: "cid", At: time.Now().UTC(), Data: []byte(`{"user":"cid"}`)}
	if _, err := e.store.Append(ctx, write.LikeStream(p.ID, "cid"), 0, []write.Event{future}); err != nil {
		t.Fatal(err)
	}
	// Project what can be projected, as the live projector would (it parks the unknown event).
	evs := e.events(t)
	if _, err := e.proj.Apply(ctx, evs[:len(evs)-1]); err != nil {
		t.Fatal(err)
	}
	diffs, err := projector.Verify(ctx, e.store, e.model)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(diffs) != 1 || !strings.Contains(diffs[0].Field, "from-the-future") {
		t.Fatalf("diffs %v, want exactly the unfoldable event", diffs)
	}
}

// TestRebuildSkipsWhatItCannotDecode: an event from a newer binary does not stop a rebuild; it is
// left out with the rest of its post, and everything else is rebuilt.
func TestRebuildSkipsWhatItCannotDecode(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	good, _ := e.h.CreatePost(ctx, "ann", "fine", "")
	future := write.Event{ID: "future-create", Type: write.TypePostCreated, Schema: 99, PostID: "p-future",
		Actor: "zed", At: time.Now().UTC(), Data: []byte(`{"author":"zed"}`)}
	if _, err := e.store.Append(ctx, write.PostStream("p-future"), 0, []write.Event{future}); err != nil {
		t.Fatal(err)
	}
	like, _ := write.NewEvent("like-of-future", "p-future", "bob", time.Now(), write.PostLiked{User: "bob"})
	if _, err := e.store.Append(ctx, write.LikeStream("p-future", "bob"), 0, []write.Event{like}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.LikePost(ctx, "bob", good.ID); err != nil {
		t.Fatal(err)
	}
	st, err := projector.Rebuild(ctx, e.store, e.model, nil)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if len(st.Skipped) != 2 || st.Skipped[0].ID != "future-create" || st.Skipped[1].ID != "like-of-future" {
		t.Fatalf("skipped %+v, want the undecodable creation and the like of its post", st.Skipped)
	}
	if p, ok, _ := e.model.Post(ctx, good.ID); !ok || p.Likes != 1 {
		t.Fatalf("the healthy post after rebuild: %+v %v", p, ok)
	}
}

// TestRebuildAndVerifyAgreeWithTheProjectorOnALaterBadEvent: an undecodable event after a post's
// creation stops only its own stream; the post's likes are still applied by the live projector,
// by rebuild, and expected by verify.
func TestRebuildAndVerifyAgreeWithTheProjectorOnALaterBadEvent(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, _ := e.h.CreatePost(ctx, "ann", "v1", "")
	bad := write.Event{ID: "future-edit", Type: write.TypePostEdited, Schema: 99, PostID: p.ID,
		Actor: "ann", At: time.Now().UTC(), Data: []byte(`{}`)}
	if _, err := e.store.Append(ctx, write.PostStream(p.ID), 1, []write.Event{bad}); err != nil {
		t.Fatal(err)
	}
	if _, err := write.NewHandler(e.store).LikePost(ctx, "bob", p.ID); err == nil {
		t.Fatal("the write side folded an undecodable event") // the post cannot be loaded either
	}
	like, _ := write.NewEvent("like", p.ID, "bob", time.Now(), write.PostLiked{User: "bob"})
	if _, err := e.store.Append(ctx, write.LikeStream(p.ID, "bob"), 0, []write.Event{like}); err != nil {
		t.Fatal(err)
	}
	st, err := projector.Rebuild(ctx, e.store, e.model, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Skipped) != 1 || st.Skipped[0].ID != "future-edit" {
		t.Fatalf("skipped %+v, want only the undecodable edit", st.Skipped)
	}
	if got, _, _ := e.model.Post(ctx, p.ID); got.Likes != 1 {
		t.Fatalf("post after rebuild: %+v, want bob's like", got)
	}
	diffs, err := projector.Verify(ctx, e.store, e.model)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || !strings.Contains(diffs[0].Field, "future-edit") {
		t.Fatalf("diffs %v, want only the undecodable edit", diffs)
	}
}

// TestVerifyExpectsNothingOfAPostWhoseCreationIsUndecodable: such a post and its likes never
// reach the read model; verify lists the one event and nothing else.
func TestVerifyExpectsNothingOfAPostWhoseCreationIsUndecodable(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	bad := write.Event{ID: "future-create", Type: write.TypePostCreated, Schema: 99, PostID: "pf",
		Actor: "zed", At: time.Now().UTC(), Data: []byte(`{}`)}
	if _, err := e.store.Append(ctx, write.PostStream("pf"), 0, []write.Event{bad}); err != nil {
		t.Fatal(err)
	}
	like, _ := write.NewEvent("like", "pf", "bob", time.Now(), write.PostLiked{User: "bob"})
	if _, err := e.store.Append(ctx, write.LikeStream("pf", "bob"), 0, []write.Event{like}); err != nil {
		t.Fatal(err)
	}
	diffs, err := projector.Verify(ctx, e.store, e.model)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || !strings.Contains(diffs[0].Field, "future-create") {
		t.Fatalf("diffs %v, want only the undecodable creation", diffs)
	}
}
