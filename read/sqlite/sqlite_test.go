package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/readtest"
	"github.com/postgate/postgate/read/sqlite"
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
