package kafka

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postgate/postgate/read"
)

// BenchmarkAppendToReadModel measures, at a steady 1,000 likes/s, the time from the start of a
// like command (load, append to SQLite, fast-path publish) until the projector reports the like
// committed in the SQLite read model, through kfake and the consumer group. Run it with a fixed
// count so that the rate holds: go test -run '^$' -bench AppendToReadModel -benchtime 5000x ./projector/kafka
func BenchmarkAppendToReadModel(b *testing.B) {
	const workers, postsPerWorker, rate = 4, 10, 1000
	s := newStack(b)

	var mu sync.Mutex
	pending := map[string]map[int64]time.Time{} // post -> like version -> start of the command
	var latencies, commands []time.Duration
	c := s.consumer(b, WithBatch(500, 2*time.Millisecond), WithOnChanges(func(cs []read.Change) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range cs {
			for v, t0 := range pending[ch.PostID] {
				if v <= ch.LikeVersion {
					latencies = append(latencies, now.Sub(t0))
					delete(pending[ch.PostID], v)
				}
			}
		}
	}))
	run(b, c.Run)
	posts := s.createPosts(b, s.h, workers*postsPerWorker)
	s.waitConsistent(b, 30*time.Second) // the consumer has joined and caught up

	jobs := make([]chan int, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		jobs[w] = make(chan int, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			likes := map[string]int64{}
			for i := range jobs[w] {
				// Each worker owns its posts, so a post's like versions are predicted exactly.
				post := posts[w+workers*((i/workers)%postsPerWorker)]
				likes[post]++
				mu.Lock()
				if pending[post] == nil {
					pending[post] = map[int64]time.Time{}
				}
				pending[post][likes[post]] = time.Now()
				mu.Unlock()
				t0 := time.Now()
				if _, err := s.h.LikePost(context.Background(), fmt.Sprintf("bench-user-%d", i), post); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				commands = append(commands, time.Since(t0))
				mu.Unlock()
			}
		}()
	}

	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		// Pace against the schedule rather than a ticker, which drops ticks on a busy machine.
		if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		jobs[i%workers] <- i
	}
	for _, ch := range jobs {
		close(ch)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	sent := time.Since(start)
	waitUntil(b, 60*time.Second, "every like to reach the read model", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(latencies) >= b.N
	})
	b.StopTimer()

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latencies)
	slices.Sort(commands)
	pct := func(ds []time.Duration, p float64) float64 {
		return float64(ds[min(int(p*float64(len(ds))), len(ds)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(latencies, 0.50), "p50-ms")
	b.ReportMetric(pct(latencies, 0.99), "p99-ms")
	b.ReportMetric(pct(latencies, 1), "max-ms")
	// The command's own share (load, append, fast-path publish), to tell where the time goes.
	b.ReportMetric(pct(commands, 0.99), "command-p99-ms")
	b.ReportMetric(float64(b.N)/sent.Seconds(), "events/s")
}
