package graph

import (
	"context"
	"testing"
	"time"

	"github.com/postgate/postgate/read"
)

func TestHubCloseEndsEverySubscription(t *testing.T) {
	h := NewHub(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	likes := h.SubscribeLikes(ctx, "p1")
	updates := h.SubscribeUpdates(ctx, "p1")
	created := h.SubscribeCreated(ctx, "")
	h.Close()
	deadline := time.After(5 * time.Second)
	for name, done := range map[string]func() bool{
		"likeCount":   func() bool { _, ok := <-likes; return !ok },
		"postUpdated": func() bool { _, ok := <-updates; return !ok },
		"postCreated": func() bool { _, ok := <-created; return !ok },
		"a new one":   func() bool { _, ok := <-h.SubscribeLikes(ctx, "p2"); return !ok },
	} {
		res := make(chan bool, 1)
		go func() { res <- done() }()
		select {
		case ended := <-res:
			if !ended {
				t.Errorf("%s subscription delivered a message instead of ending", name)
			}
		case <-deadline:
			t.Fatalf("%s subscription still open after Close", name)
		}
	}
	cancel() // ending the contexts afterwards must not close anything twice
}

// TestHubReconcileDeliversMissedChanges: a change whose notification was lost (the projector died
// between its commit and its announcement) still reaches subscribers within one interval, once.
func TestHubReconcileDeliversMissedChanges(t *testing.T) {
	e := newEnv(t, func(_ *ServerConfig, h *[]HubOption) { *h = append(*h, WithReconcile(20*time.Millisecond)) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := e.commands.CreatePost(ctx, "alice", "hi", "")
	if err != nil {
		t.Fatal(err)
	}
	e.project()
	likes := e.hub.SubscribeLikes(ctx, p.ID)
	updates := e.hub.SubscribeUpdates(ctx, p.ID)
	go e.hub.Run(ctx)

	// Apply a like to the read model without telling the Hub.
	if _, err := e.commands.LikePost(ctx, "bob", p.ID); err != nil {
		t.Fatal(err)
	}
	evs, _ := e.store.ReadAll(ctx, 1, 10)
	if _, err := e.model.Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	select {
	case lc := <-likes:
		if lc.Likes != 1 || lc.Version != 1 {
			t.Fatalf("likeCount %+v, want 1 like at version 1", lc)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the missed like count never arrived")
	}
	select {
	case up := <-updates:
		if up.Likes != 1 {
			t.Fatalf("postUpdated %+v", up)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the missed post update never arrived")
	}
	// Later reconciles of an unchanged post send nothing more.
	waitReconciles(t, e.hub, 3)
	select {
	case lc := <-likes:
		t.Fatalf("duplicate likeCount %+v", lc)
	case up := <-updates:
		t.Fatalf("duplicate postUpdated %+v", up)
	default:
	}
}

// waitReconciles waits until the Hub has finished n more reconcile rounds.
func waitReconciles(tb testing.TB, h *Hub, n int64) {
	tb.Helper()
	target := h.reconciled.Load() + n
	deadline := time.Now().Add(10 * time.Second)
	for h.reconciled.Load() < target {
		if time.Now().After(deadline) {
			tb.Fatalf("%d reconcile rounds did not happen within 10 s", n)
		}
		time.Sleep(time.Millisecond) // polling a counter, bounded by the deadline
	}
}

func TestHubSendsEveryLikeStepInOrder(t *testing.T) {
	h := NewHub(nil, WithBuffer(64))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	likes := h.SubscribeLikes(ctx, "p1")
	steps := []read.LikeStep{{Likes: 1, LikeVersion: 1}, {Likes: 2, LikeVersion: 2}, {Likes: 1, LikeVersion: 3}}
	h.Publish([]read.Change{{PostID: "p1", Likes: 1, LikeVersion: 3, LikesChange: true, LikeSteps: steps}})
	// A redelivery of the same batch, then the next one.
	h.Publish([]read.Change{{PostID: "p1", Likes: 1, LikeVersion: 3, LikesChange: true, LikeSteps: steps}})
	h.Publish([]read.Change{{PostID: "p1", Likes: 2, LikeVersion: 4, LikesChange: true, LikeSteps: []read.LikeStep{{Likes: 2, LikeVersion: 4}}}})
	want := []LikeCount{{"p1", 1, 1}, {"p1", 2, 2}, {"p1", 1, 3}, {"p1", 2, 4}}
	for i, w := range want {
		select {
		case got := <-likes:
			if *got != w {
				t.Fatalf("message %d: %+v, want %+v", i, *got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d never arrived", i)
		}
	}
	select {
	case extra := <-likes:
		t.Fatalf("extra message %+v", *extra)
	default:
	}
}

func TestHubCoalescesABurstInsteadOfDroppingTheSubscriber(t *testing.T) {
	h := NewHub(nil, WithBuffer(8))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	likes := h.SubscribeLikes(ctx, "p1")
	var steps []read.LikeStep
	for i := int64(1); i <= 100; i++ {
		steps = append(steps, read.LikeStep{Likes: i, LikeVersion: i})
	}
	h.Publish([]read.Change{{PostID: "p1", Likes: 100, LikeVersion: 100, LikesChange: true, LikeSteps: steps}})
	// Publish has returned, so everything it sent is buffered: drain without waiting.
	var got []*LikeCount
	for drained := false; !drained; {
		select {
		case lc, ok := <-likes:
			if !ok {
				t.Fatal("the subscriber was dropped")
			}
			got = append(got, lc)
		default:
			drained = true
		}
	}
	if len(got) == 0 || len(got) > 8 || got[len(got)-1].Likes != 100 {
		t.Fatalf("after a burst: %d messages; want 1 to 8 ending at 100", len(got))
	}
}

// TestSubscribingToAPostNotProjectedYet: a client that creates a post and subscribes at once races
// the projector; the subscription must start (the write side knows the post) and survive the
// Hub's reconcile until the post is projected.
func TestSubscribingToAPostNotProjectedYet(t *testing.T) {
	e := newEnv(t, func(_ *ServerConfig, h *[]HubOption) { *h = append(*h, WithReconcile(10*time.Millisecond)) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.hub.Run(ctx)
	p, err := e.commands.CreatePost(ctx, "alice", "fresh", "")
	if err != nil {
		t.Fatal(err)
	}
	r := &subscriptionResolver{&Resolver{Commands: e.commands, Reads: e.reads, Changes: e.hub}}
	updates, err := r.PostUpdated(ctx, p.ID, nil)
	if err != nil {
		t.Fatalf("postUpdated of a post not projected yet: %v", err)
	}
	if _, err := r.PostUpdated(ctx, "no-such-post", nil); err == nil {
		t.Fatal("postUpdated of an unknown post succeeded")
	}
	// Several reconciles pass while the post is absent from the read model; none may end the stream.
	waitReconciles(t, e.hub, 3)
	select {
	case _, ok := <-updates:
		if !ok {
			t.Fatal("the subscription ended before the post was projected")
		}
	default:
	}
	e.project()
	if _, err := e.commands.LikePost(ctx, "bob", p.ID); err != nil {
		t.Fatal(err)
	}
	e.project()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case up, ok := <-updates:
			if !ok {
				t.Fatal("the subscription ended")
			}
			if up.Likes == 1 {
				return
			}
		case <-timeout:
			t.Fatal("the like never arrived")
		}
	}
}

// TestADeletionWhoseNoticeWasLostEndsPostUpdated: a subscription that started on a projected post
// ends when a reconcile finds the post gone, even if no reconcile saw the post before.
func TestADeletionWhoseNoticeWasLostEndsPostUpdated(t *testing.T) {
	e := newEnv(t, func(_ *ServerConfig, h *[]HubOption) { *h = append(*h, WithReconcile(10*time.Millisecond)) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := e.commands.CreatePost(ctx, "alice", "soon gone", "")
	if err != nil {
		t.Fatal(err)
	}
	e.project()
	r := &subscriptionResolver{&Resolver{Commands: e.commands, Reads: e.reads, Changes: e.hub}}
	updates, err := r.PostUpdated(ctx, p.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.commands.DeletePost(ctx, "alice", p.ID); err != nil {
		t.Fatal(err)
	}
	evs, _ := e.store.ReadAll(ctx, 1, 10)
	if _, err := e.model.Apply(ctx, evs); err != nil { // projected, but the Hub is not told
		t.Fatal(err)
	}
	go e.hub.Run(ctx)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-updates:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("postUpdated of a deleted post never ended")
		}
	}
}

// TestSubscribersGetChangesNotTheStateTheySubscribedTo: a subscription sends nothing until
// something changes (a reconcile of an unchanged post is not a change), and likeCount ends, like
// postUpdated, when the post is deleted.
func TestSubscribersGetChangesNotTheStateTheySubscribedTo(t *testing.T) {
	e := newEnv(t, func(_ *ServerConfig, h *[]HubOption) { *h = append(*h, WithReconcile(10*time.Millisecond)) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _ := e.commands.CreatePost(ctx, "alice", "liked already", "")
	if _, err := e.commands.LikePost(ctx, "bob", p.ID); err != nil {
		t.Fatal(err)
	}
	e.project()
	r := &subscriptionResolver{&Resolver{Commands: e.commands, Reads: e.reads, Changes: e.hub}}
	likes, err := r.LikeCount(ctx, p.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	updates, err := r.PostUpdated(ctx, p.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	go e.hub.Run(ctx)
	waitReconciles(t, e.hub, 3)
	select {
	case lc := <-likes:
		t.Fatalf("likeCount sent %+v without a change", lc)
	case up := <-updates:
		t.Fatalf("postUpdated sent %+v without a change", up)
	default:
	}
	if err := e.commands.DeletePost(ctx, "alice", p.ID); err != nil {
		t.Fatal(err)
	}
	e.project()
	for name, ended := range map[string]func() bool{
		"likeCount":   func() bool { _, ok := <-likes; return !ok },
		"postUpdated": func() bool { _, ok := <-updates; return !ok },
	} {
		res := make(chan bool, 1)
		go func() { res <- ended() }()
		select {
		case ok := <-res:
			if !ok {
				t.Errorf("%s sent a message on deletion instead of ending", name)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s did not end after the post was deleted", name)
		}
	}
}
