package write_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/sqlite"
)

// rawInserts times n single-row, autocommitted inserts into a table shaped like the event store's,
// through the same driver and settings: the baseline for what a like could cost at best.
func rawInserts(b *testing.B, n int) time.Duration {
	b.Helper()
	db, err := sql.Open("sqlite", sqlite.DSN(filepath.Join(b.TempDir(), "raw.db")))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE events (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
		stream TEXT NOT NULL, version INTEGER NOT NULL, post_id TEXT NOT NULL, type TEXT NOT NULL,
		schema INTEGER NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL, data BLOB NOT NULL, UNIQUE (stream, version))`); err != nil {
		b.Fatal(err)
	}
	at := time.Now().UTC().Format(time.RFC3339Nano)
	start := time.Now()
	for i := range n {
		if _, err := db.Exec(`INSERT INTO events (id, stream, version, post_id, type, schema, actor, at, data)
			VALUES (?, ?, 1, 'p', 'post.liked', 1, ?, ?, ?)`,
			fmt.Sprintf("e%d", i), fmt.Sprintf("post/p/likes/u%d", i), fmt.Sprintf("u%d", i), at, []byte(`{"user":"u"}`)); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// likes times n likes by distinct users through the command handler, from the given number of
// goroutines.
func likes(b *testing.B, h *write.Handler, postID string, n, workers int, prefix string) time.Duration {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if _, err := h.LikePost(context.Background(), fmt.Sprintf("%s%d", prefix, i), postID); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkLikeVsRawInsert reports likes per second through the handler on the SQLite store beside
// raw single-row inserts in the same run. Serial likes pay three reads per command; concurrent
// likes share commits through the store's group commit.
//
//	go test -run '^$' -bench LikeVsRawInsert -benchtime 3000x ./write/
func BenchmarkLikeVsRawInsert(b *testing.B) {
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := openStore(b)
			h := write.NewHandler(s)
			p, err := h.CreatePost(context.Background(), "alice", "bench", "")
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			raw := rawInserts(b, b.N)
			liked := likes(b, h, p.ID, b.N, workers, "u")
			b.StopTimer()
			rawRate := float64(b.N) / raw.Seconds()
			likeRate := float64(b.N) / liked.Seconds()
			b.ReportMetric(rawRate, "raw-inserts/s")
			b.ReportMetric(likeRate, "likes/s")
			b.ReportMetric(likeRate/rawRate, "x-raw")
		})
	}
}

// BenchmarkLikeHotPost compares a like on a post that already has 100,000 likes with a like on a
// fresh post, in the same run.
//
//	go test -run '^$' -bench LikeHotPost -benchtime 2000x ./write/
func BenchmarkLikeHotPost(b *testing.B) {
	ctx := context.Background()
	s := openStore(b)
	h := write.NewHandler(s)
	hot, _ := h.CreatePost(ctx, "alice", "hot", "")
	fresh, _ := h.CreatePost(ctx, "alice", "fresh", "")
	// Seed 100,000 likes straight through the store (concurrently, so group commit makes it quick).
	const seeded = 100_000
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > seeded {
					return
				}
				user := fmt.Sprintf("seed%d", i)
				e, _ := write.NewEvent(fmt.Sprintf("seed-%d", i), hot.ID, user, time.Now(), write.PostLiked{User: user})
				if _, err := s.Append(ctx, write.LikeStream(hot.ID, user), 0, []write.Event{e}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ResetTimer()
	onFresh := likes(b, h, fresh.ID, b.N, 1, "f")
	onHot := likes(b, h, hot.ID, b.N, 1, "h")
	b.StopTimer()
	b.ReportMetric(float64(onFresh.Microseconds())/float64(b.N), "µs/like-fresh")
	b.ReportMetric(float64(onHot.Microseconds())/float64(b.N), "µs/like-100k")
	b.ReportMetric(onHot.Seconds()/onFresh.Seconds(), "x-fresh")
}
