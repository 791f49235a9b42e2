//go:build !unix

package main

// descriptorLimit is unknown off unix.
func descriptorLimit() (int, bool) { return 0, false }
