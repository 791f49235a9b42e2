package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/readtest"
	"github.com/postgate/postgate/read/sqlite"
	"github.com/postgate/postgate/write"
)

// open returns a migrated model in a fresh file under t.TempDir.
func open(tb testing.TB) *sqlite.Model {
	tb.Helper()
	m, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "read.db"))
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	if err := m.Migrate(context.Background()); err != nil {
		m.Close()
		tb.Fatalf("migrate: %v", err)
	}
	return m
}

func TestSuite(t *testing.T) {
	readtest.Run(t, func(t *testing.T) read.Model { return open(t) })
}

// TestMigrateTwiceAndConcurrently pins that serve and `postgate migrate` may both migrate the same
// file, at once or one after the other.
func TestMigrateTwiceAndConcurrently(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "read.db")
	var models []*sqlite.Model
	for range 3 {
		m, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer m.Close()
		models = append(models, m)
	}
	errs := make(chan error, len(models))
	for _, m := range models {
		go func() { errs <- m.Migrate(ctx) }()
	}
	for range models {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent migrate: %v", err)
		}
	}
	if err := models[0].Migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	readtest.Apply(t, models[1], readtest.Created(t, "p1", "ann", "hello", readtest.Base))
	if _, ok, err := models[2].Post(ctx, "p1"); !ok || err != nil {
		t.Fatalf("post written through one model is not seen through another: ok=%v err=%v", ok, err)
	}
}

// TestDroppingALargeGenerationRemovesAllOfIt: generations are dropped in chunks; every chunk
// must go, in every table.
func TestDroppingALargeGenerationRemovesAllOfIt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "read.db")
	m, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	gen, err := m.NewGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const posts = 6000 // more than one chunk
	for i := 0; i < posts; i += 500 {
		var batch []write.Event
		for j := i; j < i+500; j++ {
			id := fmt.Sprintf("p%05d", j)
			batch = append(batch, readtest.Created(t, id, "alice", "hi", at),
				readtest.Like(t, id, "bob", 1, true, at))
		}
		if _, err := m.ApplyTo(ctx, gen, batch); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(table string) int {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM "+table+" WHERE gen = ?", gen).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if count("posts") != posts || count("likes") != posts {
		t.Fatalf("generation %d holds %d posts and %d likes, want %d each", gen, count("posts"), count("likes"), posts)
	}
	if err := m.DropGeneration(ctx, gen); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"posts", "comments", "likes"} {
		if n := count(table); n != 0 {
			t.Errorf("%d rows of the dropped generation left in %s", n, table)
		}
	}
}
