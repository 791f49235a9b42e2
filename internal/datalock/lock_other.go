//go:build !unix

package datalock

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("would block")

// tryLock does nothing where there is no flock: the data directory is then not protected.
func tryLock(*os.File) error { return nil }

func unlock(*os.File) error { return nil }
