package projector_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postgate/postgate/read/readtest"
	"github.com/postgate/postgate/write"
)

// BenchmarkApplyLikesVsRawUpserts measures the projector applying batches of 500 like events
// across 200 posts (idempotency check, like rows, post counters, applied versions, all in one
// transaction) beside the floor of the same work in SQLite: 500 single-row
// INSERT ... ON CONFLICT DO UPDATE statements in one transaction, on the same kind of file. It
// reports both rates and their ratio (target: at least 0.5).
//
//	go test -run '^$' -bench ApplyLikesVsRawUpserts -benchtime 200x ./projector/
func BenchmarkApplyLikesVsRawUpserts(b *testing.B) {
	const posts, batchSize = 200, 500
	e := newEnv(b)
	ctx := context.Background()
	var created []write.Event
	for p := range posts {
		created = append(created, readtest.Created(b, fmt.Sprintf("p%03d", p), "ann", "hello", readtest.Base))
	}
	if _, err := e.proj.Apply(ctx, created); err != nil {
		b.Fatalf("create posts: %v", err)
	}
	batches := make([][]write.Event, b.N)
	for i := range batches {
		for j := range batchSize {
			post, user := fmt.Sprintf("p%03d", j%posts), fmt.Sprintf("u%d-%d", i, j/posts)
			batches[i] = append(batches[i], readtest.Like(b, post, user, 1, true, readtest.Base))
		}
	}
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "raw.db")+
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		b.Fatalf("open raw: %v", err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	if _, err := raw.Exec("CREATE TABLE counts (post_id TEXT NOT NULL, user_id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (post_id, user_id)) WITHOUT ROWID"); err != nil {
		b.Fatalf("create raw table: %v", err)
	}
	rawBatch := func(i int) {
		tx, err := raw.Begin()
		if err != nil {
			b.Fatalf("begin: %v", err)
		}
		stmt, err := tx.Prepare("INSERT INTO counts (post_id, user_id, n) VALUES (?, ?, 1) ON CONFLICT (post_id, user_id) DO UPDATE SET n = n + 1")
		if err != nil {
			b.Fatalf("prepare: %v", err)
		}
		for j := range batchSize {
			if _, err := stmt.Exec(fmt.Sprintf("p%03d", j%posts), fmt.Sprintf("u%d-%d", i, j/posts)); err != nil {
				b.Fatalf("upsert: %v", err)
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			b.Fatalf("commit: %v", err)
		}
	}
	var projTime, rawTime time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := e.proj.Apply(ctx, batches[i]); err != nil {
			b.Fatalf("apply: %v", err)
		}
		projTime += time.Since(start)
		start = time.Now()
		rawBatch(i)
		rawTime += time.Since(start)
	}
	b.StopTimer()
	events := float64(b.N * batchSize)
	projRate, rawRate := events/projTime.Seconds(), events/rawTime.Seconds()
	b.ReportMetric(projRate, "projected-events/s")
	b.ReportMetric(rawRate, "raw-upserts/s")
	b.ReportMetric(projRate/rawRate, "ratio")
	if p, ok, err := e.model.Post(ctx, "p000"); err != nil || !ok || p.Likes != int64(b.N*((batchSize+posts-1)/posts)) {
		b.Fatalf("p000 = %+v (%v), want %d likes", p, err, b.N*((batchSize+posts-1)/posts))
	}
}
