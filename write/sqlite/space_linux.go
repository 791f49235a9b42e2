package sqlite

import (
	"fmt"
	"syscall"

	"github.com/postgate/postgate/write"
)

// checkSpace fails with write.ErrReadOnly when the file system holding dir is mounted read-only
// and with write.ErrDiskFull when fewer than minFree bytes are available on it. Available means
// what an unprivileged process may use: the blocks a file system keeps back for root are out of
// reach of a process without CAP_SYS_RESOURCE, as in most containers, even one running as root.
func checkSpace(dir string, minFree int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("measure free space: %w", err)
	}
	if st.Flags&stRdonly != 0 {
		return fmt.Errorf("%w: mounted read-only", write.ErrReadOnly)
	}
	if free := int64(st.Bavail) * st.Bsize; free < minFree {
		return fmt.Errorf("%w: %d bytes available, below %d", write.ErrDiskFull, free, minFree)
	}
	return nil
}

// stRdonly is ST_RDONLY of statfs(2)'s f_flags.
const stRdonly = 0x1
