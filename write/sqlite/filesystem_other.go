//go:build !linux

package sqlite

// checkFileSystem checks nothing where statfs(2) differs from Linux's: CheckWrite then relies on
// its probe write alone.
func checkFileSystem(path string, minFree int64) error { return nil }
