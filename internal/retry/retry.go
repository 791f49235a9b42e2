// Package retry holds the backoff that postgate's reconnecting loops share (relay, publisher,
// consumer, change follower).
package retry

import (
	"context"
	"time"
)

// Backoff doubles a wait from 50 ms up to a cap. The zero value is not usable; call NewBackoff.
type Backoff struct {
	cur, max time.Duration
}

// NewBackoff returns a Backoff whose waits never exceed max.
func NewBackoff(max time.Duration) *Backoff { return &Backoff{max: max} }

// Next returns the next wait: 50 ms first, then twice the previous, at most the cap.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = min(50*time.Millisecond, b.max)
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

// Reset starts the waits over after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d or until ctx ends; it reports whether ctx is still alive.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
