package sqlite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/postgate/postgate/write"
)

// checkFileSystem fails with write.ErrReadOnly when the file system holding the database file
// refuses writes and with write.ErrDiskFull when fewer than minFree bytes are available on it.
//
// Available means what an unprivileged process may use: the blocks a file system keeps back for
// root are out of reach of a process without CAP_SYS_RESOURCE, as in most containers, even one
// running as root.
//
// A file system that the kernel turned read-only after an error (ext4's errors=remount-ro) keeps
// its mount flags, so statfs says nothing, and a write into it reaches SQLite only as "disk I/O
// error" (SQLITE_IOERR_WRITE: SQLite keeps errno to itself). Opening the database file for
// writing, which writes nothing, asks the file system itself and gets EROFS.
func checkFileSystem(path string, minFree int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		return fmt.Errorf("measure free space: %w", err)
	}
	if st.Flags&stRdonly != 0 {
		return fmt.Errorf("%w: mounted read-only", write.ErrReadOnly)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w: %w", write.ErrReadOnly, err)
	}
	if err == nil {
		f.Close()
	}
	// Other errors (the file gone, no permission) are left to the probe write, which says what
	// they mean for writes.
	if free := int64(st.Bavail) * st.Bsize; free < minFree {
		return fmt.Errorf("%w: %d bytes available, below %d", write.ErrDiskFull, free, minFree)
	}
	return nil
}

// stRdonly is ST_RDONLY of statfs(2)'s f_flags.
const stRdonly = 0x1
