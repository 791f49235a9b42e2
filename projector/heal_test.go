package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/postgate/postgate/projector"
	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// verifyClean fails tb unless the read model equals the fold of the store.
func (e *env) verifyClean(tb testing.TB) {
	tb.Helper()
	diffs, err := projector.Verify(context.Background(), e.store, e.model)
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range diffs {
		tb.Errorf("verify: %s", d)
	}
}

// TestCatchUpAppliesWhatKafkaNeverDelivered: events stored but never applied (no Kafka at all
// here) are applied from the store once they are older than the delay, in store order, and the
// applied position moves past them; younger ones are left to Kafka.
func TestCatchUpAppliesWhatKafkaNeverDelivered(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, err := e.h.CreatePost(ctx, "ann", "hello", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "cid", "dan"} {
		if _, err := e.h.LikePost(ctx, u, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := e.h.AddComment(ctx, "bob", p.ID, "nice"); err != nil {
		t.Fatal(err)
	}
	young, err := projector.NewCatchUp(e.proj, e.store, e.model, projector.WithDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := young.Round(ctx); err != nil || n != 0 {
		t.Fatalf("round with an hour's delay: %d applied, %v; want none", n, err)
	}
	c, err := projector.NewCatchUp(e.proj, e.store, e.model, projector.WithDelay(0), projector.WithPage(2))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Round(ctx); err != nil || n != 5 {
		t.Fatalf("round: %d applied, %v; want 5", n, err)
	}
	e.verifyClean(t)
	head, _ := e.store.Head(ctx)
	if c.Position() != head {
		t.Errorf("applied position %d, want the head %d", c.Position(), head)
	}
	if n, err := c.Round(ctx); err != nil || n != 0 {
		t.Fatalf("second round: %d applied, %v; want none", n, err)
	}
}

// TestAntiEntropyRepairsTamperedPosts: rows changed behind the projector (a like count, a
// deleted comment, a deleted like row) are found in one cycle and repaired; an untouched post is
// not rewritten.
func TestAntiEntropyRepairsTamperedPosts(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	var ids []string
	for i := range 3 {
		p, err := e.h.CreatePost(ctx, "ann", fmt.Sprintf("post %d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
		for _, u := range []string{"bob", "cid"} {
			if _, err := e.h.LikePost(ctx, u, p.ID); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := e.h.AddComment(ctx, "bob", p.ID, "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.proj.Apply(ctx, e.events(t)); err != nil {
		t.Fatal(err)
	}
	e.verifyClean(t)
	db := e.model.Writer()
	for _, q := range []struct {
		sql string
		id  string
	}{
		{"UPDATE posts SET likes = 9 WHERE id = ?", ids[0]},
		{"DELETE FROM comments WHERE post_id = ?", ids[1]},
		{"DELETE FROM likes WHERE post_id = ? AND user_id = 'cid'", ids[1]},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.id); err != nil {
			t.Fatal(err)
		}
	}
	var announced []read.Change
	ae, err := projector.NewAntiEntropy(e.proj, e.store, e.model, projector.WithSettle(0),
		projector.WithRepairs(func(cs []read.Change) { announced = append(announced, cs...) }))
	if err != nil {
		t.Fatal(err)
	}
	repaired := 0
	for range 10 {
		n, err := ae.Step(ctx, 4)
		if err != nil {
			t.Fatal(err)
		}
		repaired += n
	}
	if repaired != 2 {
		t.Errorf("repaired %d posts, want 2", repaired)
	}
	e.verifyClean(t)
	// Subscribers hear each repaired post's state now: not a creation, not its like history.
	if len(announced) != 2 {
		t.Fatalf("announced %d changes, want one per repaired post: %+v", len(announced), announced)
	}
	for _, c := range announced {
		if c.Created || len(c.LikeSteps) != 1 || c.Likes != 2 || c.LikeVersion != 2 {
			t.Errorf("announced %+v, want the post's state now (2 likes at like version 2, not created)", c)
		}
	}
}

// appendAt stores one event of p by hand, with the time at, as a writer whose clock is off would.
func appendAt(tb testing.TB, e *env, stream string, expected int64, postID string, at time.Time, p write.Payload) write.Event {
	tb.Helper()
	ev, err := write.NewEvent(uuid.NewString(), postID, "ann", at, p)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := e.store.Append(context.Background(), stream, expected, []write.Event{ev})
	if err != nil {
		tb.Fatal(err)
	}
	return out[0]
}

// TestCatchUpNeverSettlesPastAnEventInFlight: a missing event that is not yet due holds the
// applied position back, even when older missing events lie behind it: they are applied only
// once it is settled, so a position is never saved past an event that Kafka may still deliver
// (or that a concurrent writer committed later, PITFALLS 2).
func TestCatchUpNeverSettlesPastAnEventInFlight(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	old := time.Now().Add(-time.Hour)
	id := uuid.NewString()
	a := appendAt(t, e, write.PostStream(id), 0, id, old, write.PostCreated{Author: "ann", Message: "a"})
	appendAt(t, e, write.LikeStream(id, "bob"), 0, id, time.Now(), write.PostLiked{User: "bob"})
	appendAt(t, e, write.LikeStream(id, "cid"), 0, id, old, write.PostLiked{User: "cid"})
	c, err := projector.NewCatchUp(e.proj, e.store, e.model, projector.WithDelay(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Round(ctx); err != nil || n != 1 {
		t.Fatalf("round: %d applied, %v; want the post's creation only", n, err)
	}
	if c.Position() != a.Position {
		t.Errorf("applied position %d, want %d (not past bob's like, still in flight)", c.Position(), a.Position)
	}
}

// TestCatchUpCountsTheDelayFromWhenItFirstSawAnEvent: an event stamped by a clock an hour ahead
// is applied once it has been missing for the delay, not an hour later.
func TestCatchUpCountsTheDelayFromWhenItFirstSawAnEvent(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	id := uuid.NewString()
	appendAt(t, e, write.PostStream(id), 0, id, time.Now().Add(time.Hour), write.PostCreated{Author: "ann", Message: "from the future"})
	c, err := projector.NewCatchUp(e.proj, e.store, e.model, projector.WithDelay(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Round(ctx); err != nil || n != 0 {
		t.Fatalf("first round: %d applied, %v; want none yet", n, err)
	}
	time.Sleep(60 * time.Millisecond)
	if n, err := c.Round(ctx); err != nil || n != 1 {
		t.Fatalf("round after the delay: %d applied, %v; want 1", n, err)
	}
	e.verifyClean(t)
}

// TestReplacePostKeepsWhatTheRowsHold: the repair's load is given every stream the post's rows
// hold under the apply lock, so a like the projector applied after anti-entropy looked (a stream
// it did not know of) is rewritten, not lost.
func TestReplacePostKeepsWhatTheRowsHold(t *testing.T) {
	e := newEnv(t)
	ctx := tctx(t)
	p, err := e.h.CreatePost(ctx, "ann", "hello", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.LikePost(ctx, "eve", p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.proj.Apply(ctx, e.events(t)); err != nil {
		t.Fatal(err)
	}
	var got []string
	_, err = e.model.ReplacePost(ctx, p.ID, func(ctx context.Context, streams []string) ([]write.Event, error) {
		got = streams
		var out []write.Event
		for _, s := range streams {
			evs, err := e.store.Load(ctx, s, 0)
			if err != nil {
				return nil, err
			}
			out = append(out, evs...)
		}
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{write.PostStream(p.ID), write.LikeStream(p.ID, "eve")}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("load was given %v, want %v", got, want)
	}
	e.verifyClean(t)
}
