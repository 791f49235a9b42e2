package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// TestTwoStoresOnOneFileNeverBothWin: processes sharing the embedded store (the scale-out setup)
// each have their own writer; the database, not the Go check, must keep them from both winning.
func TestTwoStoresOnOneFileNeverBothWin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	stores := make([]*sqlite.EventStore, 2)
	for i := range stores {
		s, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	for round := range 20 {
		stream := write.PostStream(fmt.Sprintf("p%d", round))
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e, _ := write.NewEvent(fmt.Sprintf("r%d-%d", round, i), "p", "alice", time.Now(), write.PostEdited{Message: "x"})
				_, err := stores[i%2].Append(context.Background(), stream, 0, []write.Event{e})
				if err == nil {
					wins.Add(1)
				} else if !errors.Is(err, write.ErrConflict) {
					t.Errorf("append: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d appends won, want 1", round, wins.Load())
		}
	}
}

// TestTheSchemaRejectsADuplicateVersion pins the unique key itself: whatever checks the code makes
// first, a second event at a stream's version cannot be stored.
func TestTheSchemaRejectsADuplicateVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, _ := write.NewEvent("first", "p", "alice", time.Now(), write.PostEdited{Message: "x"})
	if _, err := s.Append(context.Background(), write.PostStream("p"), 0, []write.Event{e}); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", sqlite.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Exec(`INSERT INTO events (id, stream, version, post_id, type, schema, actor, at, data)
		VALUES ('second', ?, 1, 'p', 'post.edited', 1, 'mallory', '2026-01-01T00:00:00Z', '{}')`, write.PostStream("p"))
	if err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("a second event at version 1: %v, want a UNIQUE constraint error", err)
	}
}
