package graph

import (
	"context"
	"testing"
	"time"
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
