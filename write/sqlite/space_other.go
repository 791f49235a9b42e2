//go:build !linux

package sqlite

// checkSpace measures nothing where statfs(2) differs from Linux's: CheckWrite then relies on its
// probe write alone.
func checkSpace(dir string, minFree int64) error { return nil }
