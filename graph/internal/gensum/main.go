// Command gensum records the SHA-256 of the gqlgen inputs (schema, configuration) and outputs
// (generated.go, models_gen.go) in generated.sum. It runs after gqlgen in `go generate`; the test
// TestGeneratedCodeIsFresh recomputes the sums, so a schema edited without regenerating, or
// generated code edited by hand, fails the build's tests.
package main

import (
	"fmt"
	"log"
	"os"

	"github.com/postgate/postgate/graph/internal/gensum/sums"
)

func main() {
	out, err := sums.Compute(".")
	if err != nil {
		log.Fatalf("gensum: %v", err)
	}
	if err := os.WriteFile(sums.File, []byte(out), 0o644); err != nil {
		log.Fatalf("gensum: %v", err)
	}
	fmt.Fprintln(os.Stderr, "gensum: wrote", sums.File)
}
