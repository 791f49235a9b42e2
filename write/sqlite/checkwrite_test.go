package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postgate/postgate/internal/disktest"
	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/sqlite"
)

// openIn opens a store in dir and closes it when the test ends (before dir is unmounted).
func openIn(t *testing.T, dir string) *sqlite.EventStore {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var seq int

func appendOne(s write.EventStore) error {
	seq++
	e, err := write.NewEvent(fmt.Sprintf("e%d", seq), "p", "alice", time.Now(), write.PostEdited{Message: "a message"})
	if err != nil {
		return err
	}
	_, err = s.Append(context.Background(), write.PostStream(fmt.Sprintf("p%d", seq)), 0, []write.Event{e})
	return err
}

// TestCheckWriteOnAFullDisk: a full file system fails the check, and freeing space makes it pass
// again, without reopening the store. The probe write alone passes on a full disk (measured: the
// write-ahead log, reset after a checkpoint, is rewritten in blocks it already has, while appends
// already fail), so the free space of the file system is what tells here.
func TestCheckWriteOnAFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := disktest.Mount(t, 8<<20)
	s := openIn(t, dir)
	for range 50 {
		if err := appendOne(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CheckWrite(ctx); err != nil {
		t.Fatalf("check write with space left: %v", err)
	}

	free := disktest.Fill(t, dir)
	err := s.CheckWrite(ctx)
	if !errors.Is(err, write.ErrDiskFull) {
		t.Fatalf("check write on a full disk: %v, want write.ErrDiskFull", err)
	}
	if got := write.WriteProblem(err); got != "disk full" {
		t.Errorf("reason %q, want %q", got, "disk full")
	}
	// What the check stands for: appends fail too (at the latest once the log must grow).
	var appendErr error
	for range 1000 {
		if appendErr = appendOne(s); appendErr != nil {
			break
		}
	}
	if appendErr == nil {
		t.Fatal("1,000 appends succeeded on a full disk")
	}

	free()
	if err := s.CheckWrite(ctx); err != nil {
		t.Fatalf("check write once the space is free again: %v", err)
	}
	if err := appendOne(s); err != nil {
		t.Fatalf("append once the space is free again: %v", err)
	}
}

// TestCheckWriteBelowTheFreeSpaceThreshold: a disk not yet full but below the threshold fails
// the check, so that readiness turns before appends start failing.
func TestCheckWriteBelowTheFreeSpaceThreshold(t *testing.T) {
	dir := disktest.Mount(t, 8<<20)
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db"), sqlite.WithMinFree(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CheckWrite(context.Background()); !errors.Is(err, write.ErrDiskFull) {
		t.Fatalf("check write with less free than the 64 MiB asked for: %v, want write.ErrDiskFull", err)
	}
}

// TestCheckWriteOnAReadOnlyFileSystem: a file system that the kernel turns read-only under the
// open store (as ext4 does on a disk error with errors=remount-ro) fails the check with
// write.ErrReadOnly, as do appends.
func TestCheckWriteOnAReadOnlyFileSystem(t *testing.T) {
	ctx := context.Background()
	dir, fail := disktest.MountExt4(t, 16<<20)
	s := openIn(t, dir)
	if err := appendOne(s); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWrite(ctx); err != nil {
		t.Fatalf("check write on a writable file system: %v", err)
	}
	fail()
	err := s.CheckWrite(ctx)
	if !errors.Is(err, write.ErrReadOnly) {
		t.Fatalf("check write on a read-only file system: %v, want write.ErrReadOnly", err)
	}
	if got := write.WriteProblem(err); got != "read-only file system" {
		t.Errorf("reason %q, want %q", got, "read-only file system")
	}
	if err := appendOne(s); err == nil {
		t.Fatal("an append succeeded on a read-only file system")
	}
}

// TestCheckWriteAfterARemount: a tmpfs remounted read-only (which the kernel only allows while
// no file on it is open for writing, so the store is closed meanwhile) and back to writable: the
// store opened on it again passes the check.
func TestCheckWriteAfterARemount(t *testing.T) {
	dir := disktest.Mount(t, 8<<20)
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := appendOne(s); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	disktest.Remount(t, dir, true)
	if _, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db")); err == nil {
		t.Fatal("opened a store on a read-only file system")
	}
	disktest.Remount(t, dir, false)
	s = openIn(t, dir)
	if err := s.CheckWrite(context.Background()); err != nil {
		t.Fatalf("check write after the remount: %v", err)
	}
}
