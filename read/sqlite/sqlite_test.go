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
