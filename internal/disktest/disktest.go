// Package disktest gives tests a real file system they may fill up or make read-only: a small
// tmpfs mounted on a temporary directory. Mounting needs root or CAP_SYS_ADMIN (as on the CI
// machine); without them the test fails and says so, rather than skipping what it is there to pin.
//
// It is for tests only: only _test.go files import it.
package disktest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new temporary directory and returns the directory. The
// file system is unmounted when the test ends, after the cleanups registered later (those that
// close what the test opened in it) have run.
func Mount(tb testing.TB, size int64) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		tb.Fatalf("mount a %d-byte tmpfs on %s: %v\n"+
			"This test fills a real file system and makes it read-only, so it mounts a small tmpfs: run it "+
			"as root or with CAP_SYS_ADMIN (docker run --cap-add SYS_ADMIN, or --privileged).", size, dir, err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			// Something still holds a file open: detach the mount anyway so that none is left behind.
			tb.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// Fill writes zeros into a new file in dir until its file system has no byte left, and returns a
// function that deletes the file again (it is also deleted when the test ends).
func Fill(tb testing.TB, dir string) (free func()) {
	tb.Helper()
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		tb.Fatalf("create the filler: %v", err)
	}
	name := f.Name()
	free = func() {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("remove the filler: %v", err)
		}
	}
	tb.Cleanup(free)
	// Large blocks first, then ever smaller ones, so that not even a partial page stays free.
	zeros := make([]byte, 1<<20)
	for n := len(zeros); n > 0; n /= 2 {
		for {
			if _, err := f.Write(zeros[:n]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					f.Close()
					tb.Fatalf("fill %s: %v", dir, err)
				}
				break
			}
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		tb.Fatalf("close the filler: %v", err)
	}
	return free
}

// Remount makes the file system mounted on dir (by Mount) read-only, or writable again. The kernel
// refuses to make it read-only (EBUSY) while any file on it is open for writing.
func Remount(tb testing.TB, dir string, readOnly bool) {
	tb.Helper()
	flags := uintptr(syscall.MS_REMOUNT)
	if readOnly {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, ""); err != nil {
		tb.Fatalf("remount %s (read-only %v): %v", dir, readOnly, err)
	}
	if readOnly {
		tb.Cleanup(func() { _ = syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "") })
	}
}

// MountExt4 makes an ext4 file system of size bytes in an image file, mounts it through a loop
// device on a new temporary directory with errors=remount-ro, and returns the directory and a
// function that makes the file system fail as a failing disk does: the kernel then turns it
// read-only at once, also under files open for writing (which a plain remount refuses), and every
// later write gets EROFS. Unlike a tmpfs remount it cannot be made writable again: ext4 wants a
// file system check first. It needs mkfs.ext4, mount and loop devices besides root.
func MountExt4(tb testing.TB, size int64) (dir string, fail func()) {
	tb.Helper()
	base := tb.TempDir()
	img, dir := filepath.Join(base, "ext4.img"), filepath.Join(base, "ext4")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		tb.Fatalf("mkfs.ext4: %v: %s\nThis test needs mkfs.ext4 (e2fsprogs) to make a file system that can fail.", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", img, dir).CombinedOutput(); err != nil {
		tb.Fatalf("mount %s on a loop device: %v: %s\n"+
			"This test makes a real file system turn read-only under an open store: run it as root (or with "+
			"CAP_SYS_ADMIN) where loop devices exist (docker run --privileged).", img, err, out)
	}
	tb.Cleanup(func() {
		// The loop device was set up with autoclear: it goes with the mount.
		if err := syscall.Unmount(dir, 0); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", dir).Output()
	if err != nil {
		tb.Fatalf("findmnt %s: %v", dir, err)
	}
	trigger := filepath.Join("/sys/fs/ext4", filepath.Base(strings.TrimSpace(string(out))), "trigger_fs_error")
	fail = func() {
		tb.Helper()
		if err := os.WriteFile(trigger, []byte("postgate test: simulated disk error\n"), 0o200); err != nil {
			tb.Fatalf("make %s fail through %s: %v", dir, trigger, err)
		}
	}
	return dir, fail
}
