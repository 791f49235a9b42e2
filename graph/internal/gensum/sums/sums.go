// Package sums computes the checksums that tie graph's generated code to its inputs.
package sums

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// File is the name of the checksum file in the graph directory.
const File = "generated.sum"

// Inputs are the files gqlgen reads and writes, relative to the graph directory.
var Inputs = []string{"../gqlgen.yml", "schema.graphqls", "generated.go", "models_gen.go"}

// Compute returns the content of File for the graph directory dir. Errors: an unreadable input.
func Compute(dir string) (string, error) {
	var b strings.Builder
	for _, name := range Inputs {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", name, err)
		}
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(data), name)
	}
	return b.String(), nil
}
