package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postgate/postgate/projector"
	"github.com/postgate/postgate/write"
)

// appendLikes stores n likes of distinct users spread over posts and returns the stored events.
func appendLikes(tb testing.TB, e *env, posts []string, n, round int) []write.Event {
	tb.Helper()
	ctx := context.Background()
	before, err := e.store.Head(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for j := range n {
		if _, err := e.h.LikePost(ctx, fmt.Sprintf("u%d-%d", round, j), posts[j%len(posts)]); err != nil {
			tb.Fatal(err)
		}
	}
	evs, err := e.store.ReadAll(ctx, before, n)
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

// BenchmarkApplyWithHealingVsWithout measures the cost of catch-up and anti-entropy on honest
// traffic: batches of 500 likes applied as the Kafka consumer applies them, alone (off) and
// followed by a catch-up round over the same events and an anti-entropy step of 500 events (on),
// in one run on two identical read models. It reports both rates and their ratio.
//
//	go test -run '^$' -bench ApplyWithHealingVsWithout -benchtime 20x ./projector/
func BenchmarkApplyWithHealingVsWithout(b *testing.B) {
	const batch = 500
	ctx := context.Background()
	off, on := newEnv(b), newEnv(b)
	var postsOff, postsOn []string
	for i := range 20 {
		p, err := off.h.CreatePost(ctx, "ann", fmt.Sprintf("post %d", i), "")
		if err != nil {
			b.Fatal(err)
		}
		postsOff = append(postsOff, p.ID)
		if p, err = on.h.CreatePost(ctx, "ann", fmt.Sprintf("post %d", i), ""); err != nil {
			b.Fatal(err)
		}
		postsOn = append(postsOn, p.ID)
	}
	for _, e := range []*env{off, on} {
		if _, err := e.proj.Apply(ctx, e.events(b)); err != nil {
			b.Fatal(err)
		}
	}
	catchUp, err := projector.NewCatchUp(on.proj, on.store, on.model, projector.WithDelay(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	ae, err := projector.NewAntiEntropy(on.proj, on.store, on.model, projector.WithSettle(0))
	if err != nil {
		b.Fatal(err)
	}
	var offTime, onTime, cuTime, aeTime time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		evOff := appendLikes(b, off, postsOff, batch, i)
		evOn := appendLikes(b, on, postsOn, batch, i)
		b.StartTimer()
		start := time.Now()
		if _, err := off.proj.Apply(ctx, evOff); err != nil {
			b.Fatal(err)
		}
		offTime += time.Since(start)
		start = time.Now()
		if _, err := on.proj.Apply(ctx, evOn); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := catchUp.Round(ctx); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := ae.Step(ctx, batch); err != nil {
			b.Fatal(err)
		}
		onTime += time.Since(start)
		cuTime += t2.Sub(t1)
		aeTime += time.Since(t2)
	}
	n := float64(b.N * batch)
	b.ReportMetric(n/offTime.Seconds(), "events/s-off")
	b.ReportMetric(n/onTime.Seconds(), "events/s-on")
	b.ReportMetric(offTime.Seconds()/onTime.Seconds(), "on/off")
	// The parts, per event: catch-up's check of what Kafka applied, and anti-entropy's (which runs
	// at its fixed rate whatever the traffic: at 1,000 events/s it costs 1,000 times this per second).
	b.ReportMetric(float64(cuTime.Nanoseconds())/n, "catchup-ns/event")
	b.ReportMetric(float64(aeTime.Nanoseconds())/n, "antientropy-ns/event")
}

// BenchmarkCatchUpConvergence measures how long the read model takes to converge from the store
// after the broker's data is lost: N events stored, none applied, one catch-up round.
//
//	go test -run '^$' -bench CatchUpConvergence -benchtime 1x ./projector/
func BenchmarkCatchUpConvergence(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ctx := context.Background()
			var total time.Duration
			for range b.N {
				b.StopTimer()
				e := newEnv(b)
				var posts []string
				for i := range 100 {
					p, err := e.h.CreatePost(ctx, "ann", fmt.Sprintf("post %d", i), "")
					if err != nil {
						b.Fatal(err)
					}
					posts = append(posts, p.ID)
				}
				appendLikes(b, e, posts, n-100, 0)
				c, err := projector.NewCatchUp(e.proj, e.store, e.model, projector.WithDelay(0))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if applied, err := c.Round(ctx); err != nil || applied != n {
					b.Fatalf("round: %d applied, %v; want %d", applied, err, n)
				}
				total += time.Since(start)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-converge")
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
		})
	}
}
