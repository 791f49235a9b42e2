package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postgate/postgate/projector"
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
	ae, err := projector.NewAntiEntropy(e.proj, e.store, e.model, projector.WithSettle(0))
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
}
