package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/sqlite"
	"github.com/postgate/postgate/write/storetest"
)

func newStore(t *testing.T) write.EventStore {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) { storetest.Run(t, newStore) }
