// Package datalock keeps two processes from using the same part of a data directory at once: an
// OS-level advisory lock (flock) on a file in the directory, which the kernel releases when the
// holder exits, however it exits, so a SIGKILLed holder never leaves a stale lock behind. The
// holder writes its pid into the file, so that a refused process can name it.
package datalock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrHeld matches the error of Acquire when another process holds the lock.
var ErrHeld = errors.New("held by another process")

// HeldError tells who holds a lock that Acquire could not take.
type HeldError struct {
	Dir  string // the data directory
	Name string // the lock file's name within it
	PID  int    // the holder's pid as it wrote it; 0 when unknown
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by %s (lock %s); stop it first, or give this one its own --data",
		e.Dir, who, filepath.Join(e.Dir, e.Name))
}

// Unwrap returns ErrHeld.
func (e *HeldError) Unwrap() error { return ErrHeld }

// Lock is a held lock. Release it with Release; the kernel releases it anyway when the process ends.
type Lock struct {
	f *os.File
}

// Acquire takes the exclusive lock named name (a file created in dir) without waiting, and writes
// the pid of this process into it. Errors: a *HeldError (matching ErrHeld) when another process,
// or another Acquire in this one, holds it; otherwise the file system's error. On a system
// without flock, Acquire always succeeds (see lock_other.go).
func Acquire(dir, name string) (*Lock, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		pid := 0
		if b, rerr := os.ReadFile(path); rerr == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, &HeldError{Dir: dir, Name: name, PID: pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The pid is only a hint for the message: the lock itself is the flock, so a stale pid left by
	// a killed holder misleads nobody (the next holder overwrites it).
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release gives the lock up. It is safe on a nil Lock and idempotent.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unlock(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}
